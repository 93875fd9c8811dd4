"""The outbox: queue messages with a dedupe key, send them later outside any lock."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache

from django.conf import settings
from django.core.mail import get_connection
from django.db import connection, transaction
from django.db.models import F
from django.dispatch import Signal
from django.utils import timezone
from django.utils.module_loading import import_string

from config import bulk
from customers.models import Customer
from notifications import policy
from notifications.channels import DeliveryError, deliver
from notifications.models import Channel, Notification
from notifications.rendering import TemplateRenderError, find_template, render_parts

logger = logging.getLogger(__name__)

# Sent after a message changes state (sent, failed, cancelled, delivered, bounced...), so the
# part that caused it (a dunning case) can note it on its own timeline.
# kwargs: notification, kind (str), detail (str), at (when it happened: the sender's clock)
notification_event = Signal()
# Sent once per group of messages marked sent (kwargs: notifications, a list), so a listener can
# record them with one query; notification_event(kind="sent") still follows for each message.
notifications_sent = Signal()

MAX_ATTEMPTS = 6


def recipient_for(customer: Customer, channel: str) -> str:
    if channel == Channel.EMAIL:
        return customer.email or ""
    if channel == Channel.SMS:
        return str(customer.phone) if customer.phone else ""
    if channel == Channel.INAPP:
        return f"customer:{customer.pk}"
    return ""


@dataclass(slots=True)
class OutboxRow:
    """An unsaved outbox row as plain values (the engine writes many of them with config.bulk)."""

    customer_id: int
    channel: str
    recipient: str
    template_code: str
    locale: str
    context: dict
    dedupe_key: str
    reference: str
    send_after: datetime
    policy_note: str = ""

    COLUMNS = ("customer_id", "channel", "recipient", "template_code", "locale", "context", "dedupe_key",
               "reference", "send_after")

    def values(self) -> tuple:
        return (self.customer_id, self.channel, self.recipient, self.template_code, self.locale, self.context,
                self.dedupe_key, self.reference, self.send_after)


def build_row(
    customer: Customer,
    *,
    channel: str,
    template_code: str,
    context: dict,
    dedupe_key: str,
    reference: str = "",
    send_after: datetime | None = None,
    recipient: str | None = None,
    locale: str | None = None,
) -> OutboxRow | None:
    """What ``build`` returns, as an OutboxRow (no model instance): the recipient (the customer's own
    address for the channel unless given), and the time it may be sent (quiet hours)."""
    recipient = recipient or recipient_for(customer, channel)
    if not recipient:
        return None
    due = send_after or timezone.now()
    # Quiet hours: a message due at night waits for the morning in the customer's time zone.
    allowed = policy.first_allowed_at(customer, channel, due, template_code)
    note = (
        f"quiet hours: waits until {allowed.astimezone(customer.tz):%Y-%m-%d %H:%M} ({customer.timezone})"
        if allowed > due else ""
    )
    return OutboxRow(customer.pk, channel, recipient, template_code, locale or customer.locale, context, dedupe_key,
                     reference, allowed, note)


def build(customer: Customer, **options) -> Notification | None:
    """An unsaved outbox row, or None when the customer has no address for the channel. ``options``
    are build_row's: ``channel``, ``template_code``, ``context``, ``dedupe_key`` and optionally
    ``reference``, ``send_after``, ``recipient`` and ``locale``.

    ``recipient``/``locale`` address someone else of the customer (a billing contact, see
    notifications.recipients) instead of the customer's own address and language.
    """
    row = build_row(customer, **options)
    if row is None:
        return None
    notification = Notification(**dict(zip(OutboxRow.COLUMNS, row.values(), strict=True)))
    notification.customer = customer
    notification.policy_note = row.policy_note
    return notification


def plan(
    customer: Customer,
    channels: list[str],
    *,
    template_code: str,
    context: dict,
    dedupe_prefix: str,
    reference: str = "",
    send_after: datetime | None = None,
) -> list[tuple[policy.ChannelChoice, Notification | None]]:
    """Unsaved outbox rows for one message on the requested channels, after the respect rules:
    an opted-out, bounced or missing channel falls back to another (see notifications.policy).
    Runs no query. Each pair is (choice, row); row is None when nothing could carry the message."""
    planned = []
    for choice in policy.plan_channels(customer, channels, template_code):
        row = None
        if choice.channel:
            row = build(customer, channel=choice.channel, template_code=template_code, context=context,
                        dedupe_key=f"{dedupe_prefix}:{choice.channel}", reference=reference, send_after=send_after)
        planned.append((choice, row))
    return planned


def queue_many(rows: list[Notification]) -> None:
    """Write outbox rows; a row whose dedupe key exists already is silently kept as it was."""
    if rows:
        Notification.objects.bulk_create(rows, ignore_conflicts=True)


def queue_rows(rows: list[OutboxRow | Notification], now: datetime | None = None) -> None:
    """``queue_many`` for OutboxRows (unsaved Notifications are accepted too): one insert of column
    tuples (config.bulk), a row whose dedupe key exists already is skipped. ``now`` is when they
    were queued (the caller's clock, as the rest of its batch), by default the current time."""
    if rows:
        columns = (*OutboxRow.COLUMNS, "created_at")
        queued_at = now or timezone.now()
        values = [(*row.values(), queued_at) if isinstance(row, OutboxRow)
                  else (*(getattr(row, c) for c in OutboxRow.COLUMNS), queued_at)
                  for row in rows]
        bulk.insert_rows(Notification, columns, values, ignore_conflicts=True)


def cancel_queued(reference: str, *, reason: str = "") -> int:
    """Cancel messages of this reference that have not gone out yet."""
    return Notification.objects.filter(reference=reference, status=Notification.Status.QUEUED).update(
        status=Notification.Status.CANCELLED, last_error=reason, updated_at=timezone.now()
    )


def claim_queued(now: datetime, limit: int) -> list[int]:
    with transaction.atomic():
        ids = list(
            Notification.objects.queued()
            .filter(send_after__lte=now)
            .order_by("send_after", "id")
            .select_for_update(skip_locked=True)
            .values_list("pk", flat=True)[:limit]
        )
        if ids:
            Notification.objects.filter(pk__in=ids).update(
                status=Notification.Status.SENDING, attempts=F("attempts") + 1, updated_at=now
            )
    return ids


def send_queued(now: datetime | None = None, limit: int = 200) -> int:
    """Send due messages. Each row is claimed (queued -> sending) before the provider is called, so
    two senders never send the same row; returns how many were sent."""
    now = now or timezone.now()
    ids = claim_queued(now, limit)
    if not ids:
        return 0
    rows = list(Notification.objects.filter(pk__in=ids).select_related("customer").order_by("pk"))
    template_cache: dict = {}
    sent: list[Notification] = []
    total = 0
    gate = policy.SendGate.for_rows(rows, now)
    connection = get_connection()
    connection.open()
    try:
        for row in rows:
            decision = gate.check(row, row.customer)
            if decision.action != "send":
                _hold(row, now, decision)
                continue
            if _send_one(row, now, template_cache, connection):
                gate.record_sent(row)
                sent.append(row)
            if len(sent) >= SENT_FLUSH_EVERY:
                total += _mark_sent(sent)
    finally:
        connection.close()
        total += _mark_sent(sent)
    return total


# Sent rows are marked in small groups, one transaction each: a commit per message would make the
# database's fsync the bottleneck. A worker dying before a group is marked leaves those rows
# 'sending', and release_stuck marks them failed rather than sending them twice.
SENT_FLUSH_EVERY = 100
SENT_FIELDS = ["status", "sent_at", "provider_message_id", "subject", "body_text", "last_error",
               "updated_at"]


def _update_sent_rows(rows: list[Notification]) -> None:
    """Write the sent rows with one statement (PostgreSQL: UPDATE ... FROM VALUES), else executemany."""
    fields = [Notification._meta.get_field(name) for name in SENT_FIELDS]
    ops = connection.ops
    table = ops.quote_name(Notification._meta.db_table)
    params = [[f.get_db_prep_save(getattr(row, f.attname), connection) for f in fields] + [row.pk] for row in rows]
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            casts = ", ".join(f"%s::{f.db_type(connection)}" for f in fields) + ", %s::bigint"
            values = ", ".join(f"({casts})" for _row in rows)
            names = ", ".join(ops.quote_name(f.column) for f in fields)
            assignments = ", ".join(f"{ops.quote_name(f.column)} = v.{ops.quote_name(f.column)}" for f in fields)
            sql = (f"UPDATE {table} SET {assignments} FROM (VALUES {values}) AS v({names}, id) "  # noqa: S608
                   f"WHERE {table}.id = v.id")
            cursor.execute(sql, [value for row_params in params for value in row_params])
        else:
            assignments = ", ".join(f"{ops.quote_name(f.column)} = %s" for f in fields)
            cursor.executemany(f"UPDATE {table} SET {assignments} WHERE id = %s", params)  # noqa: S608


def _mark_sent(rows: list[Notification]) -> int:
    if not rows:
        return 0
    count = len(rows)
    with transaction.atomic():
        _update_sent_rows(rows)
        notifications_sent.send(Notification, notifications=list(rows))
        for row in rows:
            notification_event.send(Notification, notification=row, kind="sent", detail="", at=row.sent_at)
    rows.clear()
    return count


def _hold(row: Notification, now: datetime, decision: policy.Decision) -> None:
    """Apply a respect-rule decision to a claimed row that is not sent now."""
    fields = ["status", "last_error", "updated_at"]
    row.last_error = decision.reason[:2000]
    if decision.action == "defer":
        row.status = Notification.Status.QUEUED
        row.send_after = decision.until
        row.attempts = max(row.attempts - 1, 0)  # waiting is not a failed attempt
        fields += ["send_after", "attempts"]
        kind = "deferred"
    elif decision.action == "merge":
        row.status = Notification.Status.CANCELLED
        kind = "merged"
    else:  # "switch" or "drop": the channel cannot be used any more
        row.status = Notification.Status.CANCELLED
        kind = "rerouted" if decision.action == "switch" else "skipped"
    with transaction.atomic():
        row.save(update_fields=fields)
        if decision.action == "switch":
            replacement = build(row.customer, channel=decision.channel, template_code=row.template_code,
                                context=row.context, dedupe_key=_rerouted_key(row, decision.channel),
                                reference=row.reference, send_after=now)
            queue_many([replacement] if replacement else [])
    notification_event.send(Notification, notification=row, kind=kind, detail=decision.reason, at=now)


def _rerouted_key(row: Notification, channel: str) -> str:
    # "case:1:step:2:email" -> "case:1:step:2:sms": the same key a planned SMS would have had, so
    # a message already going by SMS is not sent twice.
    suffix = f":{row.channel}"
    base = row.dedupe_key[: -len(suffix)] if row.dedupe_key.endswith(suffix) else f"{row.dedupe_key}:via"
    return f"{base}:{channel}"


@lru_cache(maxsize=4)
def _link_builder(path: str):
    return import_string(path) if path else (lambda customer: {})


def merge_data(row: Notification) -> dict:
    """The stored merge data plus links minted now (a link's expiry counts from sending)."""
    return {**row.context, **_link_builder(settings.NOTIFICATION_LINK_BUILDER)(row.customer)}


def _send_one(row: Notification, now: datetime, template_cache: dict, connection) -> int:
    template = find_template(row.template_code, row.channel, row.locale, template_cache)
    try:
        if template is None:
            raise DeliveryError(f"No template {row.template_code!r} for channel {row.channel}", permanent=True)
        try:
            row.merged_context = merge_data(row)  # the email channel reads the links from it
            row.subject, row.body_text, row.body_html = render_parts(template, row.merged_context, row.locale)
        except TemplateRenderError as exc:
            raise DeliveryError(str(exc), permanent=True) from None
        provider_id = deliver(row, connection)
    except DeliveryError as exc:
        _record_failure(row, now, str(exc), permanent=exc.permanent)
        return 0
    row.status = Notification.Status.SENT
    row.sent_at = now
    row.updated_at = timezone.now()
    row.provider_message_id = provider_id or ""
    row.last_error = ""
    return 1


def _record_failure(row: Notification, now: datetime, error: str, *, permanent: bool) -> None:
    logger.warning("notification %s failed (%s): %s", row.pk, "permanent" if permanent else "transient", error)
    if permanent or row.attempts >= MAX_ATTEMPTS:
        row.status = Notification.Status.FAILED
        row.last_error = error[:2000]
        row.save(update_fields=["status", "last_error", "updated_at"])
        notification_event.send(Notification, notification=row, kind="failed", detail=error, at=now)
        return
    # Transient: back to the queue with exponential backoff (1, 2, 4, 8... minutes).
    row.status = Notification.Status.QUEUED
    row.send_after = now + timedelta(minutes=2 ** (row.attempts - 1))
    row.last_error = error[:2000]
    row.save(update_fields=["status", "send_after", "last_error", "updated_at"])


def release_stuck(now: datetime | None = None, after: timedelta = timedelta(minutes=15)) -> int:
    """Rows left in 'sending' by a worker that died mid-send. The provider may have taken them, so
    they are marked failed (and shown on the timeline) rather than sent a second time."""
    now = now or timezone.now()
    stuck = list(Notification.objects.filter(status=Notification.Status.SENDING, updated_at__lt=now - after))
    for row in stuck:
        row.status = Notification.Status.FAILED
        row.last_error = "The worker stopped while sending; not sent again to avoid a duplicate."
        row.save(update_fields=["status", "last_error", "updated_at"])
        notification_event.send(Notification, notification=row, kind="failed", detail=row.last_error, at=now)
    return len(stuck)
