"""The bottom layer: a toolkit every app may use (database helpers, admin helpers, env readers, log
filters, exports) that imports no app of the project, and the mechanisms every app shares."""

from django.apps import AppConfig
from django.contrib.admin import apps as admin_apps
from django.db.models.signals import post_migrate
from django.utils.module_loading import autodiscover_modules

from core import lookups, schedules


class CoreConfig(AppConfig):
    default = True  # "core" in INSTALLED_APPS (this module also holds AdminConfig)
    name = "core"
    verbose_name = "Core"

    def ready(self) -> None:
        lookups.register()  # field__any
        # Each app's recurring jobs (its AppConfig's ``schedules``), created or corrected after migrate.
        post_migrate.connect(schedules.ensure_schedules, dispatch_uid="core.ensure_schedules")
        # Each app's signal receivers live in its ``receivers`` module, imported here once every model
        # is loaded, as the admin imports each app's ``admin`` module.
        autodiscover_modules("receivers")


class AdminConfig(admin_apps.AdminConfig):
    """django.contrib.admin with the back office's site (headed with the merchant's name)."""

    default = False  # named in INSTALLED_APPS as core.apps.AdminConfig
    default_site = "core.admin_site.AdminSite"
