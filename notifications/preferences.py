"""Contact preferences and deliverability: one place that flips a customer's channel flags and
tells the rest of the system (the dunning timeline listens to ``contact_preference_changed``)."""

from __future__ import annotations

from django.db import transaction
from django.dispatch import Signal
from django.utils import timezone

from customers.models import Customer
from notifications.models import Channel

# kwargs: customer, field (e.g. "opt_out_sms"), value (bool), source (e.g. "sms:STOP", "portal")
contact_preference_changed = Signal()

OPT_OUT_FIELDS = {
    Channel.EMAIL: "opt_out_email",
    Channel.SMS: "opt_out_sms",
    Channel.INAPP: "opt_out_inapp",
}


def set_flag(customer_ids: list[int], field: str, value: bool, *, source: str) -> list[Customer]:
    """Set one preference flag for these customers; returns the customers whose flag changed."""
    with transaction.atomic():
        changed = list(
            Customer.objects.select_for_update().filter(pk__in=customer_ids).exclude(**{field: value})
        )
        if changed:
            Customer.objects.filter(pk__in=[c.pk for c in changed]).update(
                **{field: value, "updated_at": timezone.now()}
            )
    for customer in changed:
        setattr(customer, field, value)
        contact_preference_changed.send(Customer, customer=customer, field=field, value=value, source=source)
    return changed


def set_opt_out(customer: Customer, channel: str, opted_out: bool, *, source: str) -> bool:
    return bool(set_flag([customer.pk], OPT_OUT_FIELDS[channel], opted_out, source=source))


def mark_email_undeliverable(customer: Customer, *, source: str) -> bool:
    return bool(set_flag([customer.pk], "email_undeliverable", True, source=source))
