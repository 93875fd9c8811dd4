from django.apps import AppConfig
from django.db.models.signals import post_migrate


class IntegrationsConfig(AppConfig):
    name = "integrations"
    verbose_name = "Integrations (import, API)"

    def ready(self) -> None:
        from integrations.schedules import ensure_schedules

        post_migrate.connect(ensure_schedules, sender=self, dispatch_uid="integrations.ensure_schedules")
