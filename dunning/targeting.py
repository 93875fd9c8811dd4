"""Which campaign (and which A/B variant) a failed invoice gets.

Order of precedence: an excluded invoice or customer gets none; a pin (invoice first, then
customer) wins over the rules; otherwise the first active campaign by priority whose rules match.
The customer's payment method type is fetched once, and only if some campaign has a rule on it.
"""

from __future__ import annotations

import hashlib
from datetime import datetime

from django.utils import timezone

from billing.models import Invoice
from customers.models import PaymentMethod
from dunning.models import Campaign, CampaignPin, CampaignVariant

METHOD_KINDS = {*PaymentMethod.Kind.values, "none"}


def split_codes(value: str, *, upper: bool = True) -> list[str]:
    parts = [p.strip() for p in (value or "").split(",") if p.strip()]
    return [p.upper() if upper else p.lower() for p in parts]


def customer_method_kind(customer_id: int) -> str:
    kind = (
        PaymentMethod.objects.filter(customer_id=customer_id, is_default=True, detached_at__isnull=True)
        .values_list("kind", flat=True)
        .first()
    )
    return kind or "none"


def tenure_days(invoice: Invoice, now: datetime | None = None) -> int:
    return max(((now or timezone.now()) - invoice.customer.created_at).days, 0)


def matches_customer_rules(campaign: Campaign, invoice: Invoice, method_kind: str | None = None) -> bool:
    """The rules beyond currency/amount/segment: country, tenure and payment method type."""
    customer = invoice.customer
    if campaign.countries and customer.country.upper() not in split_codes(campaign.countries):
        return False
    if campaign.min_tenure_days is not None or campaign.max_tenure_days is not None:
        days = tenure_days(invoice)
        if campaign.min_tenure_days is not None and days < campaign.min_tenure_days:
            return False
        if campaign.max_tenure_days is not None and days > campaign.max_tenure_days:
            return False
    if campaign.payment_method_kinds:
        kind = method_kind if method_kind is not None else customer_method_kind(customer.pk)
        if kind not in split_codes(campaign.payment_method_kinds, upper=False):
            return False
    return True


def select_campaign(invoice: Invoice) -> Campaign:
    from dunning.services import DunningExcluded, NoMatchingCampaign

    customer = invoice.customer
    if invoice.exclude_from_dunning or customer.exclude_from_dunning:
        who = "invoice" if invoice.exclude_from_dunning else "customer"
        raise DunningExcluded(f"Invoice {invoice.number}: the {who} is excluded from dunning")
    pin = (
        CampaignPin.objects.filter(invoice_id=invoice.pk).select_related("campaign").first()
        or CampaignPin.objects.filter(customer_id=customer.pk).select_related("campaign").first()
    )
    if pin is not None:
        return pin.campaign
    campaigns = list(Campaign.objects.active().order_by("priority", "id"))
    method_kind = customer_method_kind(customer.pk) if any(c.payment_method_kinds for c in campaigns) else None
    for campaign in campaigns:
        if campaign.matches(invoice, method_kind=method_kind):
            return campaign
    raise NoMatchingCampaign(
        f"No active campaign matches invoice {invoice.number} ({invoice.currency} {invoice.amount_remaining})"
    )


def bucket(campaign_id: int, invoice_id: int, total_weight: int) -> int:
    """A stable number in [0, total_weight) for this invoice in this experiment."""
    digest = hashlib.sha256(f"ab:{campaign_id}:{invoice_id}".encode()).hexdigest()
    return int(digest[:12], 16) % total_weight


def assign_variant(campaign: Campaign, invoice: Invoice) -> tuple[Campaign, CampaignVariant | None]:
    """The campaign whose steps the case runs and its variant (None without an experiment)."""
    variants = list(CampaignVariant.objects.filter(experiment=campaign).select_related("steps_from").order_by("id"))
    if not variants:
        return campaign, None
    point = bucket(campaign.pk, invoice.pk, sum(v.weight for v in variants))
    for variant in variants:
        if point < variant.weight:
            return variant.steps_from, variant
        point -= variant.weight
    return variants[-1].steps_from, variants[-1]  # unreachable: the weights add up to the total
