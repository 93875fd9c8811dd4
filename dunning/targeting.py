"""Which campaign (and which A/B variant) a failed invoice gets.

Order of precedence: an excluded invoice or customer gets none; a pin (invoice first, then
customer) wins over the rules; otherwise the first active campaign by priority whose rules match.
The customer's payment method type is fetched once, and only if some campaign has a rule on it.
"""

from __future__ import annotations

import hashlib
from datetime import datetime

from django.db.models import Q
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


class Targeting:
    """What campaign selection needs for a set of invoices, loaded with a fixed number of queries
    (pins, active campaigns, and default payment method types only if a campaign has a rule on them),
    so that opening many cases at once costs the same few queries as opening one."""

    def __init__(self, invoices: list[Invoice]):
        invoice_ids = {i.pk for i in invoices}
        customer_ids = {i.customer_id for i in invoices}
        self.invoice_pins: dict[int, Campaign] = {}
        self.customer_pins: dict[int, Campaign] = {}
        pins = CampaignPin.objects.filter(Q(invoice_id__in=invoice_ids) | Q(customer_id__in=customer_ids))
        for pin in pins.select_related("campaign"):
            if pin.invoice_id is not None:
                self.invoice_pins[pin.invoice_id] = pin.campaign
            else:
                self.customer_pins[pin.customer_id] = pin.campaign
        self.campaigns = list(Campaign.objects.active().order_by("priority", "id"))
        self.method_kinds: dict[int, str] | None = None
        if any(c.payment_method_kinds for c in self.campaigns):
            self.method_kinds = {}
            methods = (PaymentMethod.objects.filter(customer_id__in=customer_ids, is_default=True,
                                                    detached_at__isnull=True)
                       .values_list("customer_id", "kind"))
            for customer_id, kind in methods:  # at most one usable default per customer (a constraint)
                self.method_kinds[customer_id] = kind or "none"

    def select(self, invoice: Invoice) -> Campaign:
        from dunning.services import DunningExcluded, NoMatchingCampaign

        customer = invoice.customer
        if invoice.exclude_from_dunning or customer.exclude_from_dunning:
            who = "invoice" if invoice.exclude_from_dunning else "customer"
            raise DunningExcluded(f"Invoice {invoice.number}: the {who} is excluded from dunning")
        pinned = self.invoice_pins.get(invoice.pk) or self.customer_pins.get(customer.pk)
        if pinned is not None:
            return pinned
        method_kind = None if self.method_kinds is None else self.method_kinds.get(customer.pk, "none")
        for campaign in self.campaigns:
            if campaign.matches(invoice, method_kind=method_kind):
                return campaign
        raise NoMatchingCampaign(
            f"No active campaign matches invoice {invoice.number} ({invoice.currency} {invoice.amount_remaining})"
        )


def select_campaign(invoice: Invoice) -> Campaign:
    return Targeting([invoice]).select(invoice)


def bucket(campaign_id: int, invoice_id: int, total_weight: int) -> int:
    """A stable number in [0, total_weight) for this invoice in this experiment."""
    digest = hashlib.sha256(f"ab:{campaign_id}:{invoice_id}".encode()).hexdigest()
    return int(digest[:12], 16) % total_weight


def load_variants(campaign_ids) -> dict[int, list[CampaignVariant]]:
    """The A/B variants of these campaigns (one query), in the order assign_variant() walks them."""
    variants: dict[int, list[CampaignVariant]] = {}
    for variant in (CampaignVariant.objects.filter(experiment_id__in=set(campaign_ids))
                    .select_related("steps_from").order_by("id")):
        variants.setdefault(variant.experiment_id, []).append(variant)
    return variants


def assign_variant(campaign: Campaign, invoice: Invoice,
                   variants: list[CampaignVariant] | None = None) -> tuple[Campaign, CampaignVariant | None]:
    """The campaign whose steps the case runs and its variant (None without an experiment).
    ``variants`` are the campaign's variants when the caller loaded them (see load_variants)."""
    if variants is None:
        variants = load_variants([campaign.pk]).get(campaign.pk, [])
    if not variants:
        return campaign, None
    point = bucket(campaign.pk, invoice.pk, sum(v.weight for v in variants))
    for variant in variants:
        if point < variant.weight:
            return variant.steps_from, variant
        point -= variant.weight
    return variants[-1].steps_from, variants[-1]  # unreachable: the weights add up to the total
