"""Background tasks run by django-q2. Each is idempotent: it claims rows before acting, so two
workers on two machines (or a re-delivered task) never do the same work twice."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.db import transaction
from django_q.tasks import async_task

from billing import attempts
from billing.models import PaymentAttempt
from customers.models import PaymentMethod
from dunning import engine, fees, payments, predunning
from notifications import retention
from notifications import services as outbox


def run_due_steps() -> int:
    """Every minute: run due campaign steps, then hand the effects to their own tasks."""
    done = engine.run_due_steps()
    if done:
        transaction.on_commit(lambda: async_task("dunning.tasks.process_payment_attempts"))
        transaction.on_commit(lambda: async_task("dunning.tasks.send_notifications"))
    return done


def process_payment_attempts() -> int:
    return attempts.process_pending(payments.SETTLEMENT)


def send_notifications() -> int:
    outbox.release_stuck()
    total = 0
    while sent := outbox.send_queued():
        total += sent
    return total


def send_predunning_reminders() -> int:
    """Hourly: "your card expires soon" and "invoice due soon" reminders, each once (dunning.predunning)."""
    queued = predunning.send_reminders()
    if queued:
        transaction.on_commit(lambda: async_task("dunning.tasks.send_notifications"))
    return queued


def retry_after_method_update(payment_method_id: int, actor: str | None = None,
                              source: str = PaymentAttempt.Source.PORTAL, staff_id: int | None = None) -> list[dict]:
    """The card-update retry: charge every open invoice of the method's customer once with the new or
    updated method (dunning.payments.retry_after_method_update). Queued after the commit that saved
    the method, by the portal and by every inbound event alike (queue_retry_after_method_update,
    integrations.inbound); each charge is keyed by method and invoice, so a re-delivered task never
    charges twice. ``staff_id``: the staff member acting through a staff-minted portal link (else
    ``actor``, a label). Returns each attempt's outcome."""
    method = PaymentMethod.objects.select_related("customer").get(pk=payment_method_id)
    if staff_id is not None:
        actor = get_user_model().objects.get(pk=staff_id)
    charged = payments.retry_after_method_update(method.customer, method, actor=actor, source=source)
    return [{"attempt": a.pk, "invoice": a.invoice.external_id, "outcome": a.outcome} for a in charged]


def queue_retry_after_method_update(method: PaymentMethod, *, actor=None,
                                    source: str = PaymentAttempt.Source.PORTAL) -> None:
    """Run retry_after_method_update in a worker once the current transaction commits (gateway calls
    never run inside it). ``actor``: a label, a staff user or None."""
    label = actor if actor is None or isinstance(actor, str) else None
    staff_id = None if actor is None or isinstance(actor, str) else actor.pk
    transaction.on_commit(lambda: async_task("dunning.tasks.retry_after_method_update", method.pk, label, source,
                                             staff_id))


def apply_fees() -> int:
    return fees.apply_fees()


def purge_old_messages() -> int:
    return retention.purge_old_messages()
