from django.db import migrations


def seed(apps, schema_editor):
    from billing.decline_defaults import ensure_default_rules

    ensure_default_rules(apps.get_model("billing", "DeclineRule"))


class Migration(migrations.Migration):
    dependencies = [("billing", "0004_decline_rules_webhook_events")]

    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
