"""The outbox: queue messages with a dedupe key, send them later outside any lock."""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache

from django.conf import settings
from django.core.mail import get_connection
from django.db import connection, transaction
from django.dispatch import Signal
from django.utils import timezone
from django.utils.module_loading import import_string

from core import bulk
from customers.models import Customer
from notifications import policy
from notifications.channels import DeliveryError, deliver, is_idempotent
from notifications.models import Channel, MessageTemplate, Notification
from notifications.rendering import TemplateRenderError, render_parts

logger = logging.getLogger(__name__)

# Sent after a message changes state (failed, deferred, unknown, delivered, bounced...), so the
# part that caused it (a dunning case) can note it on its own timeline.
# kwargs: notification, kind (str), detail (str), at (when it happened: the sender's clock)
notification_event = Signal()
# Sent once per batch of messages marked sent (kwargs: notifications, a list), so a listener can
# record them with one query: a sent message is announced here only, not by notification_event.
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
    """An unsaved outbox row as plain values (``build`` makes one, ``queue`` writes many in one insert)."""

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


def build(
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
    """An unsaved outbox row (write it with ``queue``), or None when the customer has no address for
    the channel. It may be sent from ``send_after`` (default: now), or when that falls in the
    customer's quiet hours, from their end (``policy_note`` says so). Runs no query.

    ``recipient``/``locale`` address someone else of the customer (a billing contact, see
    notifications.recipients) instead of the customer's own address and language.
    """
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


def queue(rows: Iterable[OutboxRow], now: datetime | None = None) -> None:
    """Write outbox rows with one insert (core.bulk); a row whose dedupe key exists already is kept
    as it was. ``now`` is when they were queued (the caller's clock, as the rest of its batch), by
    default the current time."""
    values = [row.values() for row in rows]
    if values:
        queued_at = now or timezone.now()
        bulk.insert_rows(Notification, (*OutboxRow.COLUMNS, "created_at"), [(*v, queued_at) for v in values],
                         ignore_conflicts=True)


def cancel_queued(reference: str, *, reason: str = "") -> int:
    """Cancel messages of this reference that have not gone out yet."""
    return Notification.objects.filter(reference=reference, status=Notification.Status.QUEUED).update(
        status=Notification.Status.CANCELLED, last_error=reason, updated_at=timezone.now()
    )


# --- The sender ---------------------------------------------------------------------------------
#
# A batch is the unit of work: claimed and put through the respect rules in one transaction, then
# each row is handed to its provider in turn, and the batch is recorded as sent at its end. The
# only per-message write is the one that makes a crash cost at most one message: a row's attempt
# (``attempted_at``, committed before its provider call), which also records the previous row's
# answer (``sent_at``, provider id, rendered text).

def _lease(now: datetime) -> datetime:
    return now + timedelta(seconds=settings.NOTIFY_SEND_LEASE_SECONDS)


def worker_id() -> str:
    """Names the sender holding a row (claimed_by): host, process and a per-run nonce."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def claim_queued(now: datetime, limit: int, *, worker: str) -> list[Notification]:
    """Lease up to ``limit`` due rows to ``worker`` after the respect rules, in one transaction: rows
    cleared to go now become 'sending' (no attempt yet) and are returned in id order, with their
    customers; the others are deferred, merged, rerouted or skipped (``_hold``)."""
    with transaction.atomic():
        rows = list(
            Notification.objects.queued()
            .filter(send_after__lte=now)
            .order_by("send_after", "id")
            .select_related("customer")
            .select_for_update(skip_locked=True, of=("self",))[:limit]
        )
        rows.sort(key=lambda row: row.pk)
        gate = policy.SendGate.for_rows(rows, now)
        cleared: list[Notification] = []
        held: list[tuple[Notification, policy.Decision]] = []
        for row in rows:
            decision = gate.check(row)
            if decision.action == "send":
                cleared.append(row)
            else:
                held.append((row, decision))
        if cleared:
            changes = {"status": Notification.Status.SENDING, "claimed_by": worker, "lease_until": _lease(now),
                       "attempted_at": None, "updated_at": now}
            Notification.objects.filter(pk__in=[row.pk for row in cleared]).update(**changes)
            for row in cleared:
                for name, value in changes.items():
                    setattr(row, name, value)
        _hold(held, now)
    return cleared


def send_queued(now: datetime | None = None, limit: int = 200) -> int:
    """Send due messages; returns how many were sent.

    The batch is claimed under the respect rules (``claim_queued``), then each row in turn records
    its attempt (``attempted_at``, committed, with the previous row's answer) and is handed to the
    provider outside any lock; at the end the batch is marked sent (``_mark_sent``). A sender killed
    mid-batch leaves at most one row whose fate is unknown; its rows not yet attempted go back to the
    queue and those the provider took are marked sent when the lease ends (``release_stuck``).
    """
    now = now or timezone.now()
    worker = worker_id()
    rows = claim_queued(now, limit, worker=worker)
    if not rows:
        return 0
    templates: dict[tuple[str, str, str], MessageTemplate | None] = {}
    handed: list[Notification] = []  # rows the provider took
    answered: Notification | None = None  # the last of them, its answer not written yet
    sent = 0
    mail_connection = get_connection()
    mail_connection.open()
    try:
        for row in rows:
            started = _write_attempt(worker, now, attempt=row, answered=answered)
            answered = None
            if started and _send_one(row, now, worker, templates, mail_connection):
                handed.append(row)
                answered = row
    finally:
        mail_connection.close()
        with transaction.atomic():
            _write_attempt(worker, now, attempt=None, answered=answered)
            sent = _mark_sent(handed)
            # Rows this run did not get to (an error stopped it): back to the queue now, not at lease end.
            _unclaimed(worker).update(status=Notification.Status.QUEUED, claimed_by="", lease_until=None)
    return sent


def _unclaimed(worker: str):
    return Notification.objects.filter(claimed_by=worker, status=Notification.Status.SENDING,
                                       attempted_at__isnull=True)


# What the provider's answer writes on a row it took; the row stays 'sending' until its batch is marked sent.
ANSWER_FIELDS = ("sent_at", "provider_message_id", "subject", "body_text", "last_error", "updated_at")


def _write_attempt(worker: str, now: datetime, *, attempt: Notification | None,
                   answered: Notification | None) -> bool:
    """Record the attempt of a leased row before its provider call (``attempted_at``, ``attempts`` + 1,
    only if this worker still holds it unattempted) and the answer for the row handed over before it:
    one statement, so outside a transaction one round trip and one commit per message. Returns
    whether the attempt was recorded (False: the lease was lost to another sender)."""
    if attempt is None and answered is None:
        return False
    field = Notification._meta.get_field
    attempt_id = attempt.pk if attempt else None
    answered_id = answered.pk if answered else None
    params = [attempt_id, field("attempted_at").get_db_prep_value(now, connection), attempt_id]
    for name in ANSWER_FIELDS:
        value = getattr(answered, name) if answered else None
        params += [answered_id, field(name).get_db_prep_value(value, connection)]
    params += [worker, answered_id, attempt_id, Notification.Status.SENDING]
    with connection.cursor() as cursor:
        cursor.execute(_attempt_statement(connection.vendor), params)
        # Whoever made the call knows the message went out: the answer also corrects a row that a
        # lease expiry marked 'unknown' while the provider was slow to answer.
        started = attempt is not None and any(pk == attempt_id for (pk,) in cursor.fetchall())
    if started:
        attempt.attempted_at = now
        attempt.attempts += 1
    return started


@lru_cache(maxsize=4)
def _attempt_statement(vendor: str) -> str:
    meta, quote = Notification._meta, connection.ops.quote_name
    column = {f.name: quote(f.column) for f in meta.concrete_fields}
    pk = column["id"]
    answers = ", ".join(f"{column[name]} = CASE WHEN {pk} = %s THEN %s ELSE {column[name]} END"
                        for name in ANSWER_FIELDS)
    return (
        f"UPDATE {quote(meta.db_table)} SET "  # noqa: S608 - names from the model, values as parameters
        f"{column['attempted_at']} = CASE WHEN {pk} = %s THEN %s ELSE {column['attempted_at']} END, "
        f"{column['attempts']} = {column['attempts']} + CASE WHEN {pk} = %s THEN 1 ELSE 0 END, {answers} "
        f"WHERE {column['claimed_by']} = %s AND ({pk} = %s OR ({pk} = %s AND {column['status']} = %s "
        f"AND {column['attempted_at']} IS NULL)) RETURNING {pk}"
    )


def _mark_sent(rows: list[Notification]) -> int:
    """Mark rows the provider took (their answer written) as sent, once each, and tell the listeners
    (``notifications_sent``), inside the caller's transaction. Returns how many it marked."""
    if not rows:
        return 0
    pending = (Notification.objects.select_for_update()
               .filter(pk__in=[row.pk for row in rows], sent_at__isnull=False,
                       status__in=[Notification.Status.SENDING, Notification.Status.UNKNOWN]))
    ids = set(pending.values_list("pk", flat=True))
    rows = [row for row in rows if row.pk in ids]
    if rows:
        Notification.objects.filter(pk__in=ids).update(status=Notification.Status.SENT, lease_until=None)
        for row in rows:
            row.status, row.lease_until = Notification.Status.SENT, None
        notifications_sent.send(Notification, notifications=rows)
    return len(rows)


HOLD_KINDS = {"defer": "deferred", "merge": "merged", "switch": "rerouted", "drop": "skipped"}


def _hold(held: list[tuple[Notification, policy.Decision]], now: datetime) -> None:
    """Apply the respect-rule decisions to claimed rows that are not sent now (inside the claim's
    transaction, the rows still 'queued' and locked): deferred rows wait, the others are cancelled;
    a row that switches channel is queued again on the new one."""
    if not held:
        return
    replacements = []
    for row, decision in held:
        row.last_error, row.updated_at = decision.reason[:2000], now
        if decision.action == "defer":
            row.send_after = decision.until
        else:  # merged into a newer message, or the channel cannot be used any more
            row.status = Notification.Status.CANCELLED
        if decision.action == "switch":
            replacements.append(build(row.customer, channel=decision.channel, template_code=row.template_code,
                                      context=row.context, dedupe_key=_rerouted_key(row, decision.channel),
                                      reference=row.reference, send_after=now))
    Notification.objects.bulk_update([row for row, _decision in held],
                                     ["status", "send_after", "last_error", "updated_at"])
    queue(row for row in replacements if row is not None)
    for row, decision in held:
        notification_event.send(Notification, notification=row, kind=HOLD_KINDS[decision.action],
                                detail=decision.reason, at=now)


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


def _send_one(row: Notification, now: datetime, worker: str, templates: dict, mail_connection) -> bool:
    """Render and hand the row to the provider. True when the provider took it (its answer is set on
    the row, for the caller to write); a failure is recorded at once."""
    key = (row.template_code, row.channel, row.locale)
    if key not in templates:
        templates[key] = MessageTemplate.objects.find(*key)
    template = templates[key]
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
        return False
    row.sent_at = now
    row.provider_message_id = provider_id or ""
    row.last_error = ""
    row.updated_at = timezone.now()
    return True


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
    queue. Taken by the provider (its answer written): sent. Attempted with no answer: the provider
    may have taken the message, so it becomes 'unknown' (on the timeline, for staff to resend),
    unless the channel deduplicates by idempotency key, in which case it is simply sent again.
    Returns how many rows it released."""
    now = now or timezone.now()
    expired = Notification.objects.filter(status=Notification.Status.SENDING, lease_until__lt=now)
    released = expired.filter(attempted_at__isnull=True).update(
        status=Notification.Status.QUEUED, claimed_by="", lease_until=None, updated_at=now
    )
    with transaction.atomic():
        rows = list(expired.filter(attempted_at__isnull=False).select_for_update(skip_locked=True))
        released += _mark_sent([row for row in rows if row.sent_at is not None])
        for row in rows:
            if row.sent_at is not None:
                continue
            row.lease_until = None
            row.updated_at = now
            if is_idempotent(row):
                row.status, row.claimed_by, row.attempted_at = Notification.Status.QUEUED, "", None
                row.send_after, row.last_error = now, RETRIED_NOTE
            else:
                row.status, row.last_error = Notification.Status.UNKNOWN, UNKNOWN_NOTE
            row.save(update_fields=["status", "claimed_by", "attempted_at", "send_after", "last_error",
                                    "lease_until", "updated_at"])
            released += 1
            if row.status == Notification.Status.UNKNOWN:
                notification_event.send(Notification, notification=row, kind="unknown", detail=UNKNOWN_NOTE, at=now)
    return released


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
