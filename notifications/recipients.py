"""Who a message goes to: the customer's billing contacts, chosen per campaign step.

``audience`` is "primary" (the primary contact, else the first one) or "all"; ``extra_roles`` adds
the contacts of those roles (escalation, e.g. to the account owner). A customer without contacts, or
whose chosen contacts have no address on the channel, is addressed at their own address.
"""

from __future__ import annotations

from dataclasses import dataclass

from customers.models import BillingContact, Customer
from notifications.models import Channel
from notifications.services import recipient_for

PRIMARY = "primary"
ALL = "all"


@dataclass(frozen=True)
class Recipient:
    address: str
    locale: str
    name: str = ""
    contact_id: int | None = None


def _address(contact: BillingContact, channel: str) -> str:
    if channel == Channel.EMAIL:
        return contact.email or ""
    if channel == Channel.SMS:
        return str(contact.phone) if contact.phone else ""
    return ""


def resolve(
    customer: Customer,
    channel: str,
    *,
    audience: str = PRIMARY,
    extra_roles: frozenset[str] | set[str] = frozenset(),
    contacts: list[BillingContact] | None = None,
) -> list[Recipient]:
    """The recipients for one message; ``contacts`` may be passed pre-loaded (ordered primary first)."""
    own = recipient_for(customer, channel)
    fallback = [Recipient(own, customer.locale, customer.name)] if own else []
    if channel not in (Channel.EMAIL, Channel.SMS):
        return fallback
    if contacts is None:
        contacts = list(customer.billing_contacts.order_by("-is_primary", "id"))
    if not contacts:
        return fallback
    if audience == ALL:
        chosen = list(contacts)
    else:
        primary = next((c for c in contacts if c.is_primary), contacts[0])
        chosen = [primary]
    chosen += [c for c in contacts if c.role in extra_roles and c not in chosen]
    found: list[Recipient] = []
    seen: set[str] = set()
    for contact in chosen:
        address = _address(contact, channel)
        if not address or address.lower() in seen:
            continue
        seen.add(address.lower())
        found.append(Recipient(address, contact.language or customer.locale, contact.name, contact.pk))
    return found or fallback
