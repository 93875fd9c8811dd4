from django.apps import AppConfig


class IntegrationsConfig(AppConfig):
    name = "integrations"
    verbose_name = "Integrations (import, API)"
    # Recurring jobs (core.schedules): name -> (function, minutes).
    schedules = {
        "Purge expired API idempotency records": ("integrations.tasks.purge_idempotency_records", 60),
        # Safety net: events are normally applied within seconds, woken by their request.
        "Apply pending payment events": ("integrations.tasks.drain_payment_events", 1),
    }
