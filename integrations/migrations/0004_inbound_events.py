"""One inbox for every external event: the API's payment events (integrations.PaymentEvent) and the
gateways' webhook events (billing.WebhookEvent) become integrations.InboundEvent, deduplicated by
(source, event_id).

The API's rows keep their ids and everything they held (source "api"); each webhook row is copied
with its gateway as source, its type as kind and its result text as result["message"]
(billing.0008 then drops the old table). Staff roles that could read the webhook log can read the inbox.
"""

from django.db import migrations, models

READERS = ("Collections manager", "Collections agent", "Auditor")


def copy_webhook_events(apps, schema_editor):
    WebhookEvent = apps.get_model("billing", "WebhookEvent")
    InboundEvent = apps.get_model("integrations", "InboundEvent")
    rows = [
        InboundEvent(source=w.gateway, event_id=w.event_id, kind=w.type, object_id=w.object_id,
                     object_created=w.object_created, received_at=w.received_at, applied_at=w.received_at,
                     status="applied", result={"message": w.result} if w.result else {})
        for w in WebhookEvent.objects.order_by("id").iterator()
    ]
    InboundEvent.objects.bulk_create(rows, batch_size=1000)


def copy_back(apps, schema_editor):
    WebhookEvent = apps.get_model("billing", "WebhookEvent")
    InboundEvent = apps.get_model("integrations", "InboundEvent")
    webhooks = InboundEvent.objects.exclude(source="api")
    WebhookEvent.objects.bulk_create(
        (WebhookEvent(gateway=e.source, event_id=e.event_id, type=e.kind[:100], object_id=e.object_id,
                      object_created=e.object_created, received_at=e.received_at,
                      result=str((e.result or {}).get("message", ""))[:255])
         for e in webhooks.order_by("id").iterator()),
        batch_size=1000,
    )
    webhooks.delete()


def grant_inbox(apps, schema_editor):
    from django.contrib.auth.management import create_permissions

    app_config = apps.get_app_config("integrations")
    app_config.models_module = True
    create_permissions(app_config, apps=apps, verbosity=0)
    app_config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    view = Permission.objects.filter(content_type__app_label="integrations", codename="view_inboundevent")
    for group in Group.objects.filter(name__in=READERS, permissions__codename="view_webhookevent",
                                      permissions__content_type__app_label="billing"):
        group.permissions.add(*view)


class Migration(migrations.Migration):

    dependencies = [
        ("auth", "0012_alter_user_first_name_max_length"),
        ("billing", "0007_closed_invoice_attempts"),
        ("integrations", "0003_import_number_format"),
        ("reports", "0005_login_lockout_permissions"),
    ]

    operations = [
        # The fields first, under the old name: dropping the unique index of event_id also drops its
        # PostgreSQL LIKE twin, which is found by the table's name.
        migrations.AlterField(
            model_name="paymentevent",
            name="event_id",
            field=models.CharField(help_text="The id its source gave it.", max_length=255),
        ),
        migrations.AlterField(
            model_name="paymentevent",
            name="kind",
            field=models.CharField(max_length=100),
        ),
        migrations.AlterField(
            model_name="paymentevent",
            name="payload",
            field=models.JSONField(blank=True, default=dict),
        ),
        migrations.AddField(
            model_name="paymentevent",
            name="source",
            field=models.CharField(default="api", help_text="api, or the gateway that sent it.", max_length=32),
        ),
        migrations.AddField(
            model_name="paymentevent",
            name="object_id",
            field=models.CharField(blank=True, max_length=255),
        ),
        migrations.AddField(
            model_name="paymentevent",
            name="object_created",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.RenameModel("PaymentEvent", "InboundEvent"),
        migrations.RenameIndex("inboundevent", new_name="inboundevent_pending_idx",
                               old_name="paymentevent_pending_idx"),
        migrations.AlterModelOptions(
            name="inboundevent",
            options={"ordering": ["-received_at", "-id"], "verbose_name": "inbound event"},
        ),
        migrations.AddConstraint(
            model_name="inboundevent",
            constraint=models.UniqueConstraint(fields=("source", "event_id"), name="inbound_event_unique_id"),
        ),
        migrations.AddIndex(
            model_name="inboundevent",
            index=models.Index(condition=models.Q(("object_id", ""), _negated=True), fields=["object_id"],
                               name="inboundevent_object_idx"),
        ),
        migrations.RunPython(copy_webhook_events, copy_back),
        migrations.RunPython(grant_inbox, migrations.RunPython.noop),
    ]
