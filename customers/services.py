"""The one writer of saved payment methods and of which one is the customer's default.

The portal (a card the customer entered), the REST API (payment_method_updated) and every gateway
event (a new card, an updated expiry, a changed default) save through these functions. Only what
PCI DSS allows is kept: the gateway's token, the kind, brand, last 4 digits and expiry. What follows
a new method (retrying the open invoices) is dunning's, called by the caller.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from customers.models import Customer, PaymentMethod

DETAIL_FIELDS = ("kind", "brand", "last4", "exp_month", "exp_year")


class MethodOfAnotherCustomer(ValidationError):
    """The gateway token is saved for another customer: nothing is written."""

    def __init__(self) -> None:
        super().__init__({"payment_method": ["This token belongs to another customer."]})


@dataclass(frozen=True)
class SavedMethod:
    method: PaymentMethod
    created: bool
    # The brand, last 4 digits or expiry differ from what was saved before (always True when created).
    details_changed: bool
    # It was not the customer's usable default before this call.
    became_default: bool


def _lock(customer_id: int) -> Customer:
    """The customer row, locked: two writers of one customer's methods take turns, so at most one
    default ever exists (the constraint one_default_payment_method would refuse the second)."""
    return Customer.objects.select_for_update().get(pk=customer_id)


def _details(values: dict) -> dict:
    """The given card details, without the empty ones (an update names only what it knows)."""
    return {name: values[name] for name in DETAIL_FIELDS if values.get(name) not in (None, "")}


def _set_default(customer: Customer, method: PaymentMethod) -> bool:
    """Make ``method`` the default (the caller holds the customer's lock); False if it already was."""
    if method.is_default and method.detached_at is None:
        return False
    now = timezone.now()
    customer.payment_methods.filter(is_default=True).exclude(pk=method.pk).update(is_default=False, updated_at=now)
    method.is_default, method.detached_at = True, None
    return True


def save_method(customer: Customer, *, gateway: str, token: str, **details) -> SavedMethod:
    """Save the gateway's method for the customer (new, or the one with this token refreshed) and
    make it the default. ``details``: kind, brand, last4, exp_month, exp_year (empty ones are left as
    they are). Raises ValidationError for details the model refuses, MethodOfAnotherCustomer when the
    token is another customer's; either way nothing is written."""
    with transaction.atomic():
        customer = _lock(customer.pk)
        method = PaymentMethod.objects.filter(gateway=gateway, token=token).first()
        created = method is None
        if created:
            method = PaymentMethod(customer=customer, gateway=gateway, token=token)
        elif method.customer_id != customer.pk:
            raise MethodOfAnotherCustomer
        changed = _assign(method, details) or created
        method.full_clean(validate_unique=False, validate_constraints=False)
        became_default = _set_default(customer, method)
        method.save()
    return SavedMethod(method, created, changed, became_default)


def update_details(method: PaymentMethod, **details) -> bool:
    """The gateway says a saved card changed (a new expiry, a reissued card): copy brand, last 4 and
    expiry. Returns whether anything changed (then it is worth charging again)."""
    with transaction.atomic():
        _lock(method.customer_id)
        if not _assign(method, details):
            return False
        method.full_clean(validate_unique=False, validate_constraints=False)
        method.save(update_fields=[*DETAIL_FIELDS, "updated_at"])
    return True


def make_default(method: PaymentMethod) -> bool:
    """Make a saved, attached method the customer's default; returns False if it already was."""
    with transaction.atomic():
        customer = _lock(method.customer_id)
        if method.detached_at is not None or not _set_default(customer, method):
            return False
        method.save(update_fields=["is_default", "detached_at", "updated_at"])
    return True


def _assign(method: PaymentMethod, details: dict) -> bool:
    changed = False
    for name, value in _details(details).items():
        if getattr(method, name) != value:
            setattr(method, name, value)
            changed = True
    return changed


def update_contact(customer: Customer, **fields) -> list[str]:
    """The billing system or the gateway reports a new email address or name; returns the fields changed."""
    changed = [name for name in ("email", "name") if fields.get(name) and getattr(customer, name) != fields[name]]
    if changed:
        for name in changed:
            setattr(customer, name, fields[name])
        customer.save(update_fields=[*changed, "updated_at"])
    return changed
