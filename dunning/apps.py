from django.apps import AppConfig
from django.db.models.signals import post_migrate


class DunningConfig(AppConfig):
    name = "dunning"
    verbose_name = "Dunning"

    def ready(self) -> None:
        from dunning import receivers  # noqa: F401
        from dunning.schedules import ensure_schedules

        post_migrate.connect(ensure_schedules, sender=self, dispatch_uid="dunning.ensure_schedules")
