"""Staff roles for the smart-retry settings (issue 3): managers tune the decline table and retry
policies; agents and auditors can read them and the webhook log."""

from django.db import migrations

MANAGER = [
    "billing.add_declinerule", "billing.change_declinerule", "billing.delete_declinerule", "billing.view_declinerule",
    "billing.view_webhookevent",
    "dunning.add_retrypolicy", "dunning.change_retrypolicy", "dunning.delete_retrypolicy", "dunning.view_retrypolicy",
]
READER = ["billing.view_declinerule", "billing.view_webhookevent", "dunning.view_retrypolicy"]


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

    for name, codes in (("Collections manager", MANAGER), ("Collections agent", READER), ("Auditor", READER)):
        group = Group.objects.filter(name=name).first()
        if group is not None:
            group.permissions.add(*named(codes))


class Migration(migrations.Migration):
    dependencies = [
        ("reports", "0002_permission_groups"),
        ("billing", "0005_seed_decline_rules"),
        ("dunning", "0007_retry_policy_and_state"),
    ]

    operations = [migrations.RunPython(grant, migrations.RunPython.noop)]
