"""Respect rules for customer messages: channel choice (opt-outs, bounces, fallback), quiet hours
in the customer's time zone and a contact cap across channels.

The rules are applied in two places, both batch-friendly:

* when a message is built (``plan_channels`` and ``first_allowed_at``): pure functions of the
  customer row the caller already loaded, so the engine's batch loop runs no extra query;
* when the sender claims a batch of rows (``SendGate``, in the claim's transaction: a few queries per
  batch): send, wait, merge into a newer message, or switch channel. For messages the contact cap
  may hold back, the claim locks their customers, counts their contacts and leases the rows it
  clears before it commits, so two senders never both take the last slot (notifications.services).

The legal-notice rule (docs/notifications.md): template codes in NOTIFY_LEGAL_NOTICE_CODES (by
default the final notice and the suspension notice) must reach the customer, so they are sent
despite an email or in-app opt-out and are never held back by the contact cap (they still count
towards it). They are never sent to an address that bounced or complained, never by SMS to a number
that replied STOP (a revoked consent is binding), and they wait for the end of quiet hours like
every other message.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from functools import lru_cache

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db.models import Q
from django.db.models.functions import Coalesce

from customers.models import Customer
from notifications.models import Channel, Notification

# Channels that interrupt the customer: quiet hours apply to them. An in-app message waits in the
# portal until the customer looks, so it is shown at once.
INTRUSIVE_CHANNELS = (Channel.EMAIL, Channel.SMS)
CUSTOMER_CHANNELS = (Channel.EMAIL, Channel.SMS, Channel.INAPP)


def is_legal_notice(template_code: str) -> bool:
    return template_code in settings.NOTIFY_LEGAL_NOTICE_CODES


def is_transactional(template_code: str) -> bool:
    """A message the customer asked for or expects at once (a receipt, a new portal link, a support
    acknowledgement): sent at any hour, never capped nor counted, not stopped by an opt-out of
    reminders (a bounced address or an SMS STOP still is)."""
    return template_code in settings.NOTIFY_TRANSACTIONAL_CODES



# --- Channel choice -----------------------------------------------------------------------------

def unusable_reason(customer: Customer, channel: str, template_code: str) -> str:
    """Why this channel cannot carry this message to this customer ('' when it can)."""
    return _unusable(customer, channel, is_legal_notice(template_code) or is_transactional(template_code))


def _unusable(customer: Customer, channel: str, legal: bool) -> str:
    if channel == Channel.EMAIL:
        if not customer.email:
            return "no email address on file"
        if customer.email_undeliverable:
            return "the email address bounced or complained"
        if customer.opt_out_email and not legal:
            return "the customer opted out of email"
    elif channel == Channel.SMS:
        if not customer.phone:
            return "no mobile number on file"
        if customer.opt_out_sms:
            return "the customer opted out of SMS (STOP)"
    elif channel == Channel.INAPP:
        if customer.opt_out_inapp and not legal:
            return "the customer opted out of in-app messages"
    elif channel not in CUSTOMER_CHANNELS:
        return f"{channel} is not a customer channel"
    return ""


@dataclass(frozen=True)
class ChannelChoice:
    requested: str
    channel: str | None  # None: no usable channel at all
    note: str = ""  # why the requested channel was not used


def plan_channels(customer: Customer, requested: list[str], template_code: str) -> list[ChannelChoice]:
    """The channels a step's message goes through: each requested channel, or when it cannot be
    used, the first usable channel of NOTIFY_FALLBACK_ORDER not already carrying the message."""
    choices: list[ChannelChoice] = []
    used: set[str] = set()
    legal = is_legal_notice(template_code) or is_transactional(template_code)
    unusable = {ch: _unusable(customer, ch, legal) for ch in CUSTOMER_CHANNELS}
    for channel in requested:
        reason = unusable.get(channel, f"{channel} is not a customer channel")
        if not reason:
            if channel not in used:
                used.add(channel)
                choices.append(ChannelChoice(channel, channel))
            continue
        fallback = next(
            (ch for ch in settings.NOTIFY_FALLBACK_ORDER if ch in unusable and not unusable[ch] and ch != channel),
            None,
        )
        if fallback is None:
            choices.append(ChannelChoice(channel, None, f"{reason}; no other channel available"))
        elif fallback in used or fallback in requested:
            # The message already goes through that channel: nothing to add.
            choices.append(ChannelChoice(channel, None, f"{reason}; already sent by {fallback}"))
        else:
            used.add(fallback)
            choices.append(ChannelChoice(channel, fallback, f"{reason}; sent by {fallback} instead"))
    return choices


# --- Quiet hours --------------------------------------------------------------------------------

@lru_cache(maxsize=8)
def _parse_quiet_hours(value: str) -> tuple[datetime.time, datetime.time] | None:
    if not value.strip():
        return None
    try:
        start, end = (datetime.time.fromisoformat(part.strip()) for part in value.split("-"))
    except ValueError:
        raise ImproperlyConfigured(f"NOTIFY_QUIET_HOURS={value!r}: use HH:MM-HH:MM, e.g. 21:00-08:00") from None
    return (start, end) if start != end else None


def quiet_hours() -> tuple[datetime.time, datetime.time] | None:
    return _parse_quiet_hours(settings.NOTIFY_QUIET_HOURS)


def first_allowed_at(customer: Customer, channel: str, moment: datetime.datetime,
                     template_code: str = "") -> datetime.datetime:
    """``moment`` itself, or when it falls in the customer's quiet hours, the end of them.

    Computed on the customer's wall clock, so the morning is 08:00 local time on either side of a
    daylight-saving change.
    """
    hours = quiet_hours()
    if hours is None or channel not in INTRUSIVE_CHANNELS or is_transactional(template_code):
        return moment
    start, end = hours
    tz = customer.tz
    local = moment.astimezone(tz)
    now_t = local.time().replace(tzinfo=None)
    if start > end:  # wraps midnight, e.g. 21:00-08:00
        if now_t >= start:
            day = local.date() + datetime.timedelta(days=1)
        elif now_t < end:
            day = local.date()
        else:
            return moment
    elif start <= now_t < end:
        day = local.date()
    else:
        return moment
    resume = datetime.datetime.combine(day, end, tzinfo=tz)
    return resume.astimezone(datetime.UTC)


# --- The sender's gate --------------------------------------------------------------------------

@dataclass
class Decision:
    action: str  # "send" | "defer" | "merge" | "switch" | "drop"
    reason: str = ""
    until: datetime.datetime | None = None
    channel: str | None = None  # for "switch": the channel to use instead
    into: Notification | None = None  # for "merge": the newer message that covers this one


def _contact_key(row: Notification) -> tuple[str, str, str]:
    # An email and an SMS about the same step (written together) are one contact, not two; the same
    # template for the same cause on another day (a consolidated message) is another contact.
    return (row.reference or f"n:{row.pk}", row.template_code, row.created_at.date().isoformat())


def cap_can_hold(row: Notification) -> bool:
    """Whether the contact cap may hold this message back (not a transactional message nor a legal
    notice). The sender serializes the cap decisions of such messages per customer."""
    return (bool(settings.NOTIFY_CONTACT_CAP) and row.channel in CUSTOMER_CHANNELS
            and not (is_transactional(row.template_code) or is_legal_notice(row.template_code)))


def _counts_as_contact(row: Notification) -> bool:
    return row.channel in CUSTOMER_CHANNELS and not is_transactional(row.template_code)


# Messages that may have reached the customer, or are about to: sent, of unknown fate, or 'sending'
# (a sender cleared them through this gate and holds them). The cap counts them all, from the moment
# of the attempt, else of the clearance (a cleared row's last update).
MAYBE_SENT = Q(status__in=[Notification.Status.SENT, Notification.Status.UNKNOWN, Notification.Status.SENDING])


@dataclass
class SendGate:
    """Decisions for a claimed batch of outbox rows, made in the claim's transaction: one query for
    newer messages of the same cause and, for rows the cap may hold, one that locks their customers
    (reading their current preferences) and one that counts their contacts. A second sender's batch
    waits for those locks, then counts the rows this batch cleared: two senders never both take the
    last slot."""

    now: datetime.datetime
    # customer id -> the customer as read under its lock
    customers: dict[int, Customer] = field(default_factory=dict)
    # customer id -> {contact key: first contact} within the cap window
    contacts: dict[int, dict[tuple[str, str, str], datetime.datetime]] = field(default_factory=dict)
    # (customer, channel, reference) -> newer messages (queued or sent) of the same cause
    newer: dict[tuple[int, str, str], list[Notification]] = field(default_factory=dict)

    @classmethod
    def for_rows(cls, rows: list[Notification], now: datetime.datetime) -> SendGate:
        gate = cls(now=now)
        references = {r.reference for r in rows if r.reference}
        if references:
            later = Notification.objects.filter(
                reference__in=references,
                status__in=[Notification.Status.QUEUED, Notification.Status.SENT, Notification.Status.SENDING,
                            Notification.Status.UNKNOWN],
            ).only("id", "customer_id", "channel", "reference", "template_code", "created_at", "status").order_by()
            for row in later:
                gate.newer.setdefault((row.customer_id, row.channel, row.reference), []).append(row)
        capped = sorted({r.customer_id for r in rows if cap_can_hold(r)})
        if capped:
            # In id order, so that two senders locking overlapping customers never deadlock. NO KEY:
            # rows referencing a customer (a message being queued for them) are not held up.
            gate.customers = {c.pk: c for c in
                              Customer.objects.select_for_update(no_key=True).filter(pk__in=capped).order_by("pk")}
            gate._count_contacts(capped)
        return gate

    def _count_contacts(self, customer_ids: list[int]) -> None:
        """Read the customers' contacts in the cap window (after their locks: a statement of its own,
        so that it sees what the sender that held them committed)."""
        since = self.now - datetime.timedelta(days=settings.NOTIFY_CONTACT_CAP_DAYS)
        sent = (
            Notification.objects.filter(MAYBE_SENT, customer_id__in=customer_ids, channel__in=CUSTOMER_CHANNELS)
            .exclude(template_code__in=settings.NOTIFY_TRANSACTIONAL_CODES)
            .annotate(contacted_at=Coalesce("sent_at", "attempted_at", "updated_at"))
            .filter(contacted_at__gt=since)
            .only("id", "customer_id", "reference", "template_code", "created_at")
            .order_by()
        )
        for customer_id in customer_ids:
            self.contacts[customer_id] = {}
        for row in sent:
            keys = self.contacts[row.customer_id]
            key = _contact_key(row)
            keys[key] = min(keys.get(key, row.contacted_at), row.contacted_at)

    def check(self, row: Notification) -> Decision:
        """What to do with this row now. A row cleared to send counts as a contact of its customer for
        the rest of the batch."""
        customer = row.customer = self.customers.get(row.customer_id, row.customer)
        decision = self._decide(row, customer)
        if decision.action == "send" and _counts_as_contact(row):
            keys = self.contacts.setdefault(row.customer_id, {})
            key = _contact_key(row)
            keys[key] = min(keys.get(key, self.now), self.now)
        return decision

    def _decide(self, row: Notification, customer: Customer) -> Decision:
        if row.channel not in CUSTOMER_CHANNELS:
            return Decision("send")
        reason = unusable_reason(customer, row.channel, row.template_code)
        if reason:
            others = {ch: unusable_reason(customer, ch, row.template_code) for ch in CUSTOMER_CHANNELS}
            fallback = next(
                (ch for ch in settings.NOTIFY_FALLBACK_ORDER if ch in others and not others[ch] and ch != row.channel),
                None,
            )
            if fallback:
                return Decision("switch", f"{reason}; sent by {fallback} instead", channel=fallback)
            return Decision("drop", f"{reason}; no other channel available")
        merged_into = self._newer_message(row)
        if merged_into is not None:
            return Decision("merge", f"merged into the newer {merged_into.template_code} message", into=merged_into)
        until = first_allowed_at(customer, row.channel, self.now, row.template_code)
        if until > self.now:
            local = until.astimezone(customer.tz)
            return Decision("defer", f"quiet hours in {customer.timezone}; sending at {local:%Y-%m-%d %H:%M} local "
                            "time", until=until)
        if not (is_transactional(row.template_code) or is_legal_notice(row.template_code)):
            cap_until = self._cap_until(row)
            if cap_until is not None:
                until = first_allowed_at(customer, row.channel, cap_until, row.template_code)
                cap, days = settings.NOTIFY_CONTACT_CAP, settings.NOTIFY_CONTACT_CAP_DAYS
                local = until.astimezone(customer.tz)
                return Decision("defer", f"contact cap reached ({cap} per {days} days); deferred to "
                                f"{local:%Y-%m-%d %H:%M} local time", until=until)
        return Decision("send")

    def _newer_message(self, row: Notification) -> Notification | None:
        # Only dunning messages merge: a receipt or a support acknowledgement covers no reminder.
        if not row.reference or is_transactional(row.template_code):
            return None
        # A legal notice (the final notice before suspension) is never replaced by a plain reminder:
        # only a newer legal notice covers it.
        legal = is_legal_notice(row.template_code)
        candidates = [
            other for other in self.newer.get((row.customer_id, row.channel, row.reference), [])
            if other.pk != row.pk and other.template_code != row.template_code
            and not is_transactional(other.template_code)
            and (not legal or is_legal_notice(other.template_code))
            and (other.created_at, other.pk) > (row.created_at, row.pk)
        ]
        return max(candidates, key=lambda r: (r.created_at, r.pk), default=None)

    def _cap_until(self, row: Notification) -> datetime.datetime | None:
        cap = settings.NOTIFY_CONTACT_CAP
        if not cap:
            return None
        contacts = self.contacts.get(row.customer_id, {})
        if _contact_key(row) in contacts or len(contacts) < cap:
            return None
        # A slot frees when the oldest counted contact leaves the rolling window.
        window = datetime.timedelta(days=settings.NOTIFY_CONTACT_CAP_DAYS)
        oldest = sorted(contacts.values())[len(contacts) - cap]
        return max(oldest + window, self.now + datetime.timedelta(minutes=1))
