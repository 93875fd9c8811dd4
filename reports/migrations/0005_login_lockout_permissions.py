"""Staff roles for the sign-in lock-out (django-axes, issue 13): managers see failed sign-ins and unlock
an account by deleting its access attempts; auditors can read them."""

from django.db import migrations

MANAGER = [
    "axes.view_accessattempt", "axes.delete_accessattempt",
    "axes.view_accessfailurelog", "axes.view_accesslog",
]
AUDITOR = ["axes.view_accessattempt", "axes.view_accessfailurelog", "axes.view_accesslog"]


def grant(apps, schema_editor):
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

    for name, codes in (("Collections manager", MANAGER), ("Auditor", AUDITOR)):
        group = Group.objects.filter(name=name).first()
        if group is not None:
            group.permissions.add(*named(codes))


def revoke(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    perms = Permission.objects.filter(content_type__app_label="axes")
    for group in Group.objects.filter(name__in=["Collections manager", "Auditor"]):
        group.permissions.remove(*perms)


class Migration(migrations.Migration):
    dependencies = [
        ("reports", "0004_portal_link_permission"),
        ("axes", "0010_accessattemptexpiration"),
    ]

    operations = [migrations.RunPython(grant, revoke)]
