from django.apps import AppConfig
from django.db.backends.signals import connection_created
from django.db.models.signals import post_migrate


class DunningConfig(AppConfig):
    name = "dunning"
    verbose_name = "Dunning"

    def ready(self) -> None:
        from config import lookups, pg_arrays  # noqa: F401 (lookups: registers field__any)
        from dunning import receivers  # noqa: F401
        from dunning.schedules import ensure_schedules

        # Django's UNNEST bulk inserts (bulk_create) send JSON columns as array literals: escape them quickly
        # (the engine's own inserts send one JSON document instead, config.bulk).
        connection_created.connect(pg_arrays.register, dispatch_uid="config.pg_arrays")

        post_migrate.connect(ensure_schedules, sender=self, dispatch_uid="dunning.ensure_schedules")
