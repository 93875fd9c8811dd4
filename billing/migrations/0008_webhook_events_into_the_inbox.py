"""The gateways' webhook events now live in integrations.InboundEvent (copied there by
integrations.0004_inbound_events, which runs first): the old table goes."""

from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ("billing", "0007_closed_invoice_attempts"),
        ("integrations", "0004_inbound_events"),
    ]

    operations = [
        migrations.DeleteModel(name="WebhookEvent"),
    ]
