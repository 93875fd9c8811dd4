"""A preference change on the timeline has one kind: the receiver of contact_preference_changed wrote
"customer.preference", the portal "customer.preferences" (dunning.timeline.EventKind.CUSTOMER_PREFERENCES)."""

from django.db import migrations


def forwards(apps, schema_editor):
    CaseEvent = apps.get_model("dunning", "CaseEvent")
    CaseEvent.objects.filter(kind="customer.preference").update(kind="customer.preferences")


class Migration(migrations.Migration):
    dependencies = [("dunning", "0010_closed_invoice_attempts")]

    # Backwards it leaves the rows merged: the kind cannot tell the two origins apart (the message can).
    operations = [migrations.RunPython(forwards, migrations.RunPython.noop)]
