"""Privacy: export everything held about a customer, and erase their personal data.

``export_customer(customer) -> dict`` is plain JSON data (the admin downloads it; the API can return
it as is). ``erase_customer(customer, actor, close_active_cases=False)`` anonymises the person
everywhere while invoice numbers, amounts and dates stay for tax retention (GDPR Art. 17(3)(b)).

Erasure has two parts. The known fields are cleared explicitly (names, addresses, phones, message
texts and merge data, work item texts, payment-method details, contacts). Then a sweep walks every
model of the project that is related to the customer (through foreign keys, a few hops deep), and
replaces any remaining occurrence of the person's values in text and JSON columns (timeline notes,
error texts, rows added by other modules) and clears IP addresses. New models holding personal data
are covered by the sweep as long as they point (directly or through an invoice, case or message) to
the customer.
"""

from __future__ import annotations

import datetime
import decimal
import json
import logging
import uuid
from collections import deque

from django.apps import apps
from django.db import models, transaction
from django.utils import timezone

from billing.models import CustomerCredit, Invoice, InvoiceFee, PaymentAllocation, PaymentAttempt, SandboxCharge
from customers.models import BillingContact, Customer, PaymentMethod
from dunning.cases import cancel_case
from dunning.errors import DunningError
from dunning.models import CaseEvent, DunningCase, WorkItem
from dunning.timeline import EventKind, log
from notifications.models import Notification

logger = logging.getLogger(__name__)

EXPORT_FORMAT = "dunning-customer-export/1"
ERASED = "[erased]"
# Never exported: credentials or references that would let someone act on the account.
SECRET_FIELDS = {"token", "password", "secret", "key_hash", "api_key", "session_key"}
# Kept through erasure for tax retention.
KEEP = {(Invoice, "number"), (Invoice, "external_id"), (Invoice, "currency")}
TEXT_FIELDS = (models.CharField, models.TextField, models.JSONField)


class PrivacyError(DunningError):
    pass


# --- Export ----------------------------------------------------------------------------------------

def _plain(value):
    if isinstance(value, datetime.datetime | datetime.date):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    if value is None or isinstance(value, str | int | float | bool | list | dict):
        return value
    return str(value)


def _row(obj: models.Model, exclude: set[str] = frozenset()) -> dict:
    data = {}
    for f in obj._meta.concrete_fields:
        if f.name in exclude or f.name in SECRET_FIELDS:
            continue
        data[f.attname if f.is_relation else f.name] = _plain(getattr(obj, f.attname))
    return data


def export_customer(customer: Customer) -> dict:
    """Everything held about a customer, as JSON-ready data (no payment-method tokens)."""
    customer = Customer.objects.get(pk=customer.pk)  # what is stored, not a caller's stale copy
    invoices = list(Invoice.objects.filter(customer=customer).order_by("issued_at", "id"))
    invoice_ids = [i.pk for i in invoices]
    cases = list(DunningCase.objects.filter(customer=customer).order_by("failed_at", "id"))
    events: dict[int, list] = {}
    for ev in CaseEvent.objects.filter(case__customer=customer).order_by("at", "id"):
        events.setdefault(ev.case_id, []).append(
            {"at": _plain(ev.at), "kind": ev.kind, "message": ev.message, "actor": ev.actor_label,
             "payload": ev.payload})
    attempts: dict[int, list] = {}
    for a in PaymentAttempt.objects.filter(invoice_id__in=invoice_ids).order_by("created_at", "id"):
        attempts.setdefault(a.invoice_id, []).append(_row(a, {"idempotency_key", "lease_until"}))
    fees: dict[int, list] = {}
    for fee in InvoiceFee.objects.filter(invoice_id__in=invoice_ids):
        fees.setdefault(fee.invoice_id, []).append(_row(fee, {"key"}))
    payments: dict[int, list] = {}
    for p in PaymentAllocation.objects.filter(invoice_id__in=invoice_ids):
        payments.setdefault(p.invoice_id, []).append(_row(p))
    data = {
        "format": EXPORT_FORMAT,
        "exported_at": _plain(timezone.now()),
        "customer": _row(customer, {"portal_token_version"}),
        "billing_contacts": [_row(c) for c in BillingContact.objects.filter(customer=customer)],
        "payment_methods": [_row(m) for m in PaymentMethod.objects.filter(customer=customer)],
        "invoices": [
            {**_row(inv), "fees": fees.get(inv.pk, []), "payments": payments.get(inv.pk, []),
             "attempts": attempts.get(inv.pk, [])}
            for inv in invoices
        ],
        "credits": [_row(c) for c in CustomerCredit.objects.filter(customer=customer)],
        "messages": [_row(n) for n in Notification.objects.filter(customer=customer).order_by("created_at", "id")],
        "cases": [{**_row(c), "timeline": events.get(c.pk, [])} for c in cases],
        "work_items": [_row(w) for w in WorkItem.objects.filter(customer=customer)],
    }
    handled = {BillingContact, PaymentMethod, Invoice, DunningCase, Notification, WorkItem, CustomerCredit}
    other = {}
    for model in apps.get_models():
        if model in handled:
            continue
        for f in model._meta.concrete_fields:
            if isinstance(f, models.ForeignKey) and f.related_model is Customer:
                rows = [_row(o) for o in model.objects.filter(**{f.name: customer})]
                if rows:
                    other.setdefault(model._meta.label_lower, []).extend(rows)
    data["other"] = other
    json.dumps(data)  # fail here, not in the view, if something is not serialisable
    return data


# --- Erasure -----------------------------------------------------------------------------------------

def personal_values(customer: Customer) -> set[str]:
    """The person's values to hunt down everywhere (at least 3 characters, to stay meaningful)."""
    values = {customer.name, customer.email, str(customer.phone) if customer.phone else ""}
    for contact in BillingContact.objects.filter(customer=customer):
        values |= {contact.name, contact.email, str(contact.phone) if contact.phone else ""}
    values |= set(Notification.objects.filter(customer=customer).values_list("recipient", flat=True))
    values = {v.strip() for v in values if v and len(v.strip()) >= 3 and not v.startswith("customer:")}
    # Phone numbers also appear without the leading +.
    values |= {v[1:] for v in values if v.startswith("+") and v[1:].isdigit()}
    return values


def _paths_to_customer(max_depth: int = 3) -> dict[type[models.Model], list[str]]:
    """For each model, the ORM lookups (e.g. 'case__invoice__customer') that lead to a Customer."""
    paths: dict[type[models.Model], list[str]] = {Customer: ["pk"]}
    queue = deque([(Customer, "", 0)])
    while queue:
        target, prefix, depth = queue.popleft()
        if depth >= max_depth:
            continue
        for model in apps.get_models():
            for f in model._meta.concrete_fields:
                if isinstance(f, models.ForeignKey) and f.related_model is target:
                    path = f.name + (f"__{prefix}" if prefix else "")
                    found = paths.setdefault(model, [])
                    if path not in found and model is not Customer:
                        found.append(path)
                        queue.append((model, path, depth + 1))
    return paths


def _scrub(value, needles: list[str]):
    if isinstance(value, str):
        lowered = value.lower()
        if not any(n in lowered for n in needles):
            return value
        out = value
        for needle in needles:
            start = out.lower().find(needle)
            while start != -1:
                out = out[:start] + ERASED + out[start + len(needle):]
                start = out.lower().find(needle, start + len(ERASED))
        return out
    if isinstance(value, list):
        return [_scrub(v, needles) for v in value]
    if isinstance(value, dict):
        return {k: _scrub(v, needles) for k, v in value.items()}
    return value


def _sweep(customer: Customer, values: set[str]) -> int:
    """Replace remaining personal values in every related row; clear IP addresses. Returns rows changed."""
    needles = sorted({v.lower() for v in values}, key=len, reverse=True)
    changed = 0
    for model, lookups in _paths_to_customer().items():
        text = [f for f in model._meta.concrete_fields
                if isinstance(f, TEXT_FIELDS) and (model, f.name) not in KEEP and not f.primary_key]
        ips = [f for f in model._meta.concrete_fields if isinstance(f, models.GenericIPAddressField)]
        if not (text or ips):
            continue
        # One indexed query per path (an OR across several joins would scan whole tables).
        pks: set = set()
        for lookup in lookups:
            pks.update(model._default_manager.filter(**{lookup: customer.pk if lookup == "pk" else customer})
                       .order_by().values_list("pk", flat=True))
        if not pks:
            continue
        names = [f.attname for f in text + ips]
        ordered = sorted(pks)
        rows = (row for start in range(0, len(ordered), 1000)
                for row in model._default_manager.filter(pk__in=ordered[start:start + 1000]).order_by()
                .values("pk", *names))
        pending: dict[tuple[str, ...], list[models.Model]] = {}
        for row in rows:
            update = {}
            for f in text:
                current = row[f.attname]
                if current is not None and not isinstance(current, str | list | dict):
                    current = str(current)  # e.g. a PhoneNumber
                new = _scrub(current, needles) if needles else current
                if new != current:
                    update[f.attname] = f"erased:{model._meta.model_name}:{row['pk']}" if f.unique else new
            for f in ips:
                if row[f.attname]:
                    update[f.attname] = None if f.null else "0.0.0.0"  # noqa: S104 (an address, not a bind)
            if update:
                pending.setdefault(tuple(sorted(update)), []).append(model(pk=row["pk"], **update))
                changed += 1
        for fields, objs in pending.items():
            # A bulk update, not save(): it also reaches append-only rows (the timeline) on purpose.
            model._default_manager.bulk_update(objs, list(fields), batch_size=500)
    # The admin's own history names the objects it changed.
    LogEntry = apps.get_model("admin", "LogEntry") if apps.is_installed("django.contrib.admin") else None
    if LogEntry is not None and needles:
        query = models.Q()
        for needle in needles:
            query |= models.Q(object_repr__icontains=needle) | models.Q(change_message__icontains=needle)
        for entry in LogEntry.objects.filter(query).only("pk", "object_repr", "change_message").iterator():
            repr_, message = _scrub(entry.object_repr, needles), _scrub(entry.change_message, needles)
            if (repr_, message) != (entry.object_repr, entry.change_message):
                LogEntry.objects.filter(pk=entry.pk).update(object_repr=repr_, change_message=message)
                changed += 1
    return changed


def erase_customer(customer: Customer, actor=None, close_active_cases: bool = False) -> dict:
    """Anonymise a customer everywhere; invoices, amounts and dates stay. Returns counts.

    Refused (PrivacyError) while a case is open unless ``close_active_cases``: the cases are then
    cancelled first. The timeline records the erasure without the erased data.
    """
    now = timezone.now()
    with transaction.atomic():
        customer = Customer.objects.select_for_update().get(pk=customer.pk)
        open_cases = list(DunningCase.objects.open().filter(customer=customer))
        if open_cases and not close_active_cases:
            raise PrivacyError(
                f"Customer #{customer.pk} has {len(open_cases)} open dunning case(s); confirm closing them to erase"
            )
        for case in open_cases:
            cancel_case(case, actor=actor, reason="Closed to erase the customer's personal data")
        values = personal_values(customer)
        tokens = list(PaymentMethod.objects.filter(customer=customer).values_list("token", flat=True))
        counts = {
            "contacts": BillingContact.objects.filter(customer=customer).delete()[0],
            "messages": Notification.objects.filter(customer=customer).update(
                recipient="", subject="", body_text="", body_html="", context={}, last_error="", updated_at=now),
            "work_items": WorkItem.objects.filter(customer=customer).update(title=ERASED, body="", updated_at=now),
        }
        Notification.objects.filter(customer=customer, status=Notification.Status.QUEUED).update(
            status=Notification.Status.CANCELLED)
        for method in PaymentMethod.objects.filter(customer=customer):
            PaymentMethod.objects.filter(pk=method.pk).update(
                token=f"erased:{method.pk}", last4="", exp_month=None, exp_year=None, is_default=False,
                detached_at=method.detached_at or now, updated_at=now)
        counts["payment_methods"] = len(tokens)
        if tokens:
            SandboxCharge.objects.filter(token__in=tokens).update(token=ERASED)
        Customer.objects.filter(pk=customer.pk).update(
            name=f"Erased customer #{customer.pk}", email="", phone="", erased_at=now,
            opt_out_email=True, opt_out_sms=True, opt_out_inapp=True,
            portal_token_version=customer.portal_token_version + 1, updated_at=now)
        counts["swept_rows"] = _sweep(customer, values)
        for case in DunningCase.objects.filter(customer=customer):
            log(case, EventKind.CUSTOMER_ERASED, "Personal data erased", actor=actor, at=now,
                payload={"counts": counts})
    logger.info("customer %s erased (%s)", customer.pk, counts)
    return counts
