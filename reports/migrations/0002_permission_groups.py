"""The staff roles, as permission groups.

- Collections agent: works cases and the work queue; sees campaigns and templates but cannot edit them.
- Collections manager: everything in collections, campaigns and templates; reports and exports.
- Auditor: reads everything, reports and CSV exports; changes nothing.

Re-running the migration resets each group to exactly this list.
"""

from django.db import migrations

PROJECT_APPS = ["customers", "billing", "notifications", "dunning"]

AGENT = [
    "dunning.change_dunningcase",
    "dunning.add_workitem", "dunning.change_workitem",
    "dunning.add_workitemcomment", "dunning.view_workitemcomment",
    "customers.change_customer",
]
MANAGER_MODELS = {
    "dunning": None,  # every model of the app
    "notifications": ["messagetemplate"],
    "customers": None,
}
MANAGER_EXTRA = ["billing.change_invoice", "reports.view_reports", "reports.export_reports"]
AUDITOR_EXTRA = ["reports.view_reports", "reports.export_reports"]


def create_groups(apps, schema_editor):
    from django.contrib.auth.management import create_permissions

    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = None

    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")

    def named(codes):
        found = []
        for code in codes:
            app_label, codename = code.split(".")
            found.extend(Permission.objects.filter(content_type__app_label=app_label, codename=codename))
        return found

    views = list(Permission.objects.filter(content_type__app_label__in=PROJECT_APPS, codename__startswith="view_"))
    manage = list(views)
    for app_label, models in MANAGER_MODELS.items():
        qs = Permission.objects.filter(content_type__app_label=app_label)
        if models is not None:
            qs = qs.filter(content_type__model__in=models)
        manage.extend(qs)

    roles = {
        "Collections agent": views + named(AGENT),
        "Collections manager": manage + named(MANAGER_EXTRA),
        "Auditor": views + named(AUDITOR_EXTRA),
    }
    for name, perms in roles.items():
        group, _created = Group.objects.get_or_create(name=name)
        group.permissions.set({p.pk for p in perms})


def remove_groups(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(
        name__in=["Collections agent", "Collections manager", "Auditor"]
    ).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("reports", "0001_report_permissions"),
        ("dunning", "0005_case_currency_recovered_amount"),
        ("billing", "0002_exclude_and_indexes"),
        ("customers", "0002_exclude_from_dunning"),
        ("notifications", "0001_initial"),
    ]

    operations = [migrations.RunPython(create_groups, remove_groups)]
