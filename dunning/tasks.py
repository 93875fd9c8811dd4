"""Background tasks run by django-q2. Each is idempotent: it claims rows before acting, so two
workers on two machines (or a re-delivered task) never do the same work twice."""

from __future__ import annotations

from django.db import transaction
from django_q.tasks import async_task

from billing import attempts
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


def retry_after_method_update(payment_method_id: int) -> int:
    """Charge every open invoice of the method's customer once with the updated method."""
    method = PaymentMethod.objects.select_related("customer").get(pk=payment_method_id)
    return len(payments.retry_after_method_update(method.customer, method))


def apply_fees() -> int:
    return fees.apply_fees()


def purge_old_messages() -> int:
    return retention.purge_old_messages()
