"""The recurring jobs, created (or corrected) idempotently after every ``migrate``."""

from __future__ import annotations

SCHEDULES = {
    # name: (function, minutes)
    "Run due dunning steps": ("dunning.tasks.run_due_steps", 1),
    "Process pending payment attempts": ("dunning.tasks.process_payment_attempts", 1),
    "Send queued notifications": ("dunning.tasks.send_notifications", 1),
    "Send pre-dunning reminders": ("dunning.tasks.send_predunning_reminders", 60),
    "Charge due payment plan instalments": ("dunning.plans.charge_due_instalments", 15),
    # Idempotent (unique fee keys, interest recomputed): hourly so interest follows local midnight.
    "Apply late fees and interest": ("dunning.tasks.apply_fees", 60),
    "Remove old message bodies and tracking data": ("dunning.tasks.purge_old_messages", 1440),
    "Deliver outbound webhooks": ("notifications.tasks.deliver_webhooks", 1),
}


def ensure_schedules(**kwargs) -> None:
    from django_q.models import Schedule

    for name, (func, minutes) in SCHEDULES.items():
        Schedule.objects.update_or_create(
            name=name,
            defaults={"func": func, "schedule_type": Schedule.MINUTES, "minutes": minutes, "repeats": -1},
        )
