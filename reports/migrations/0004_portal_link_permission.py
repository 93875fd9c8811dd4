"""Staff roles for portal links (issue 13): a link shown in the admin is a working credential only for
staff who may send portal links. Agents and managers may; auditors read everything but see
placeholders, so they can never act as a customer."""

from django.db import migrations

SEND = ["customers.send_portal_link"]
GROUPS = ("Collections agent", "Collections manager")


def _named(apps, codes):
    Permission = apps.get_model("auth", "Permission")
    found = []
    for code in codes:
        app_label, codename = code.split(".")
        found.extend(Permission.objects.filter(content_type__app_label=app_label, codename=codename))
    return found


def grant(apps, schema_editor):
    from django.contrib.auth.management import create_permissions

    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = None
    Group = apps.get_model("auth", "Group")
    for group in Group.objects.filter(name__in=GROUPS):
        group.permissions.add(*_named(apps, SEND))


def revoke(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    for group in Group.objects.filter(name__in=GROUPS):
        group.permissions.remove(*_named(apps, SEND))


class Migration(migrations.Migration):
    dependencies = [
        ("reports", "0003_payment_permissions"),
        ("customers", "0006_send_portal_link_permission"),
    ]

    operations = [migrations.RunPython(grant, revoke)]
