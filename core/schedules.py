"""Recurring jobs (django-q schedules), declared by each app on its AppConfig::

    class DunningConfig(AppConfig):
        schedules = {"Run due dunning steps": ("dunning.tasks.run_due_steps", 1)}  # name: (function, minutes)

and created (or corrected) idempotently after every ``migrate``.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.apps import AppConfig, apps


def declared_schedules(app_configs: Iterable[AppConfig] | None = None) -> dict[str, tuple[str, int]]:
    """name -> (dotted function, minutes) of these apps (by default every installed app)."""
    declared: dict[str, tuple[str, int]] = {}
    for config in apps.get_app_configs() if app_configs is None else app_configs:
        declared.update(getattr(config, "schedules", {}))
    return declared


def ensure_schedules(app_config: AppConfig | None = None, **kwargs) -> None:
    """post_migrate receiver (sent once per migrated app): that app's schedules; called without an
    app, every app's."""
    # The real model (its constants), looked up once the registry is ready: this module is imported
    # by core.apps, before any model.
    schedule = apps.get_model("django_q", "Schedule")
    for name, (func, minutes) in declared_schedules(None if app_config is None else [app_config]).items():
        schedule.objects.update_or_create(
            name=name,
            defaults={"func": func, "schedule_type": schedule.MINUTES, "minutes": minutes, "repeats": -1},
        )
