"""The outbox: queue messages with a dedupe key, send them later outside any lock."""

from __future__ import annotations

import logging
import os
import socket
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache

from django.conf import settings
from django.core.mail import get_connection
from django.db import transaction
from django.db.models import F
from django.dispatch import Signal
from django.utils import timezone
from django.utils.module_loading import import_string

from core import bulk
from customers.models import Customer
from notifications import policy
from notifications.channels import DeliveryError, deliver, is_idempotent
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
    """An unsaved outbox row as plain values (the engine writes many of them with core.bulk)."""

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
    tuples (core.bulk), a row whose dedupe key exists already is skipped. ``now`` is when they
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


def _lease() -> timedelta:
    return timedelta(seconds=settings.NOTIFY_SEND_LEASE_SECONDS)


def worker_id() -> str:
    """Names the sender holding a row (claimed_by): host, process and a per-run nonce."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def claim_queued(now: datetime, limit: int, *, worker: str) -> list[int]:
    """Lease up to ``limit`` due rows to ``worker`` (queued -> sending, no attempt yet)."""
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
                status=Notification.Status.SENDING, claimed_by=worker, lease_until=now + _lease(),
                attempted_at=None, updated_at=now,
            )
    return ids


def send_queued(now: datetime | None = None, limit: int = 200) -> int:
    """Send due messages; returns how many were sent.

    The batch is leased to this run, then each row in turn: the respect rules decide (under the
    customer's row lock when the contact cap may hold the message back) and the row records its
    attempt (``attempted_at``) in the same transaction; the provider is called outside any lock; the
    row is recorded as sent with the next row's attempt. A sender killed mid-batch leaves at most one
    row whose fate is unknown; its rows not yet attempted go back to the queue when the lease ends
    (``release_stuck``).
    """
    now = now or timezone.now()
    worker = worker_id()
    ids = claim_queued(now, limit, worker=worker)
    if not ids:
        return 0
    rows = list(Notification.objects.filter(pk__in=ids).select_related("customer").order_by("pk"))
    template_cache: dict = {}
    # Rows the provider took, recorded as sent in the same transaction as the next row's attempt:
    # one commit per message, and a kill leaves at most one row of unknown fate.
    done: list[Notification] = []
    sent = 0
    mail_connection = get_connection()
    mail_connection.open()
    try:
        gate = policy.SendGate.for_rows(rows, now)
        for row in rows:
            started = _start_attempt(row, now, worker, gate, done)
            sent += len(done)
            done.clear()
            if started:
                _send_one(row, now, worker, template_cache, mail_connection, done)
    finally:
        mail_connection.close()
        with transaction.atomic():
            sent += _record_sent(done, worker)
            # Rows this run did not get to (an error stopped it): back to the queue now, not at lease end.
            _unclaimed(worker).update(status=Notification.Status.QUEUED, claimed_by="", lease_until=None)
    return sent


def _unclaimed(worker: str):
    return Notification.objects.filter(claimed_by=worker, status=Notification.Status.SENDING,
                                       attempted_at__isnull=True)


def _start_attempt(row: Notification, now: datetime, worker: str, gate: policy.SendGate,
                   done: list[Notification]) -> bool:
    """Record the rows in ``done`` as sent, apply the respect rules to a leased row and, if it is to go
    now, record the attempt, all in one transaction. False when the row is held back (deferred,
    merged, rerouted, skipped) or its lease was lost."""
    with transaction.atomic():
        _record_sent(done, worker)
        if policy.cap_can_hold(row):
            # The cap check and the attempt that fills the slot are serialized per customer: a second
            # sender waits here, then counts this attempt. The lock also reads the customer's current
            # preferences.
            customer = Customer.objects.select_for_update().filter(pk=row.customer_id).first()
            if customer is None:
                return False
            row.customer = customer
            gate.count_contacts(row.customer_id)
        decision = gate.check(row, row.customer)
        if decision.action != "send":
            _hold(row, now, decision, worker)
            return False
        started = _unclaimed(worker).filter(pk=row.pk).update(
            attempted_at=now, attempts=F("attempts") + 1, lease_until=now + _lease(), updated_at=now
        )
    if started != 1:
        return False  # the lease ran out and another sender took the row
    row.attempted_at = now
    row.attempts += 1
    return True


def _record_sent(rows: list[Notification], worker: str) -> int:
    """Mark rows the provider took as sent (inside the caller's transaction), with their signals."""
    for row in rows:
        # Whoever made the call knows it went out: this also corrects a row that a lease expiry marked
        # 'unknown' while the provider was slow to answer.
        Notification.objects.filter(pk=row.pk, claimed_by=worker).update(
            **{name: getattr(row, name) for name in SENT_FIELDS}
        )
    if rows:
        notifications_sent.send(Notification, notifications=list(rows))
        for row in rows:
            notification_event.send(Notification, notification=row, kind="sent", detail="", at=row.sent_at)
    return len(rows)


SENT_FIELDS = ["status", "sent_at", "provider_message_id", "subject", "body_text", "last_error", "lease_until",
               "updated_at"]


def _hold(row: Notification, now: datetime, decision: policy.Decision, worker: str) -> None:
    """Apply a respect-rule decision to a leased row that is not sent now (inside the caller's
    transaction)."""
    changes = {"last_error": decision.reason[:2000], "claimed_by": "", "lease_until": None, "updated_at": now}
    if decision.action == "defer":
        changes.update(status=Notification.Status.QUEUED, send_after=decision.until)
        kind = "deferred"
    elif decision.action == "merge":
        changes["status"] = Notification.Status.CANCELLED
        kind = "merged"
    else:  # "switch" or "drop": the channel cannot be used any more
        changes["status"] = Notification.Status.CANCELLED
        kind = "rerouted" if decision.action == "switch" else "skipped"
    if not _unclaimed(worker).filter(pk=row.pk).update(**changes):
        return
    for name, value in changes.items():
        setattr(row, name, value)
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


def _send_one(row: Notification, now: datetime, worker: str, template_cache: dict, mail_connection,
              done: list[Notification]) -> None:
    """Render and hand the row to the provider; a sent row is appended to ``done`` (recorded by the
    caller), a failure is recorded at once."""
    template = find_template(row.template_code, row.channel, row.locale, template_cache)
    try:
        if template is None:
            raise DeliveryError(f"No template {row.template_code!r} for channel {row.channel}", permanent=True)
        try:
            row.merged_context = merge_data(row)  # the email channel reads the links from it
            row.subject, row.body_text, row.body_html = render_parts(template, row.merged_context, row.locale)
        except TemplateRenderError as exc:
            raise DeliveryError(str(exc), permanent=True) from None
        provider_id = deliver(row, mail_connection)
    except DeliveryError as exc:
        _record_failure(row, now, worker, str(exc), permanent=exc.permanent)
        return
    row.status = Notification.Status.SENT
    row.sent_at = now
    row.provider_message_id = provider_id or ""
    row.last_error = ""
    row.lease_until = None
    row.updated_at = timezone.now()
    done.append(row)


def _record_failure(row: Notification, now: datetime, worker: str, error: str, *, permanent: bool) -> None:
    logger.warning("notification %s failed (%s): %s", row.pk, "permanent" if permanent else "transient", error)
    changes = {"last_error": error[:2000], "lease_until": None, "updated_at": timezone.now()}
    if permanent or row.attempts >= MAX_ATTEMPTS:
        changes["status"] = Notification.Status.FAILED
    else:
        # Transient: the provider said no, so the message did not go out; back to the queue with
        # exponential backoff (1, 2, 4, 8... minutes).
        changes.update(status=Notification.Status.QUEUED, send_after=now + timedelta(minutes=2 ** (row.attempts - 1)),
                       attempted_at=None, claimed_by="")
    with transaction.atomic():
        if not Notification.objects.filter(pk=row.pk, claimed_by=worker).update(**changes):
            return
        for name, value in changes.items():
            setattr(row, name, value)
        if row.status == Notification.Status.FAILED:
            notification_event.send(Notification, notification=row, kind="failed", detail=error, at=now)


UNKNOWN_NOTE = ("The sender stopped while the provider had this message: it may or may not have reached the "
                "customer, so it is not sent again automatically. Resend it from the outbox if needed.")
RETRIED_NOTE = "The sender stopped during the provider call; sent again with the same idempotency key."


def release_stuck(now: datetime | None = None) -> int:
    """Rows whose sender stopped (the lease ran out while 'sending'). Not attempted yet: back to the
    queue. Attempted: the provider may have taken the message, so it becomes 'unknown' (on the
    timeline, for staff to resend), unless the channel deduplicates by idempotency key, in which case
    it is simply sent again. Returns how many rows it released."""
    now = now or timezone.now()
    expired = Notification.objects.filter(status=Notification.Status.SENDING, lease_until__lt=now)
    released = expired.filter(attempted_at__isnull=True).update(
        status=Notification.Status.QUEUED, claimed_by="", lease_until=None, updated_at=now
    )
    with transaction.atomic():
        rows = list(expired.filter(attempted_at__isnull=False).select_for_update(skip_locked=True))
        for row in rows:
            row.lease_until = None
            row.updated_at = now
            if is_idempotent(row):
                row.status, row.claimed_by, row.attempted_at = Notification.Status.QUEUED, "", None
                row.send_after, row.last_error = now, RETRIED_NOTE
            else:
                row.status, row.last_error = Notification.Status.UNKNOWN, UNKNOWN_NOTE
            row.save(update_fields=["status", "claimed_by", "attempted_at", "send_after", "last_error",
                                    "lease_until", "updated_at"])
            if row.status == Notification.Status.UNKNOWN:
                notification_event.send(Notification, notification=row, kind="unknown", detail=UNKNOWN_NOTE, at=now)
    return released + len(rows)


def resend(notification: Notification, *, actor=None) -> Notification | None:
    """Staff: queue a fresh copy of a message whose fate is unknown. It goes through the respect rules
    like any message. Returns the copy, or None when the message is not 'unknown' or was resent
    already. Logged on the timeline with the actor (``notification_event`` kind ``resent``)."""
    with transaction.atomic():
        row = Notification.objects.select_for_update().filter(
            pk=notification.pk, status=Notification.Status.UNKNOWN
        ).first()
        dedupe_key = f"resend:{notification.pk}"
        if row is None or Notification.objects.filter(dedupe_key=dedupe_key).exists():
            return None
        now = timezone.now()
        copy = Notification.objects.create(
            customer_id=row.customer_id, channel=row.channel, recipient=row.recipient,
            template_code=row.template_code, locale=row.locale, context=row.context, reference=row.reference,
            dedupe_key=dedupe_key, send_after=now,
        )
        who = actor if isinstance(actor, str) else getattr(actor, "get_username", lambda: "system")()
        row.last_error = f"{row.last_error} Resent as message {copy.pk} by {who}.".strip()[:2000]
        row.updated_at = now
        row.save(update_fields=["last_error", "updated_at"])
        notification_event.send(Notification, notification=row, kind="resent",
                                detail=f"queued again as message {copy.pk}", actor=actor, at=now)
    return copy
