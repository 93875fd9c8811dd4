"""Recurring jobs of the integrations app, created (or corrected) idempotently after every ``migrate``."""

from __future__ import annotations

SCHEDULES = {
    # name: (function, minutes)
    "Purge expired API idempotency records": ("integrations.tasks.purge_idempotency_records", 60),
    # Safety net: events are normally applied within seconds, woken by their request.
    "Apply pending payment events": ("integrations.tasks.drain_payment_events", 1),
}


def ensure_schedules(**kwargs) -> None:
    from django_q.models import Schedule

    for name, (func, minutes) in SCHEDULES.items():
        Schedule.objects.update_or_create(
            name=name,
            defaults={"func": func, "schedule_type": Schedule.MINUTES, "minutes": minutes, "repeats": -1},
        )
