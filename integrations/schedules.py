"""Recurring jobs of the integrations app, created (or corrected) idempotently after every ``migrate``."""

from __future__ import annotations

SCHEDULES = {
    # name: (function, minutes)
    "Purge expired API idempotency records": ("integrations.tasks.purge_idempotency_records", 60),
}


def ensure_schedules(**kwargs) -> None:
    from django_q.models import Schedule

    for name, (func, minutes) in SCHEDULES.items():
        Schedule.objects.update_or_create(
            name=name,
            defaults={"func": func, "schedule_type": Schedule.MINUTES, "minutes": minutes, "repeats": -1},
        )
