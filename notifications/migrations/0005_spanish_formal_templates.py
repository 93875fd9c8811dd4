"""The Spanish portal-link and support-acknowledgement emails address the customer as "usted", like
every other Spanish message (they used "tú"). Templates still as shipped are updated; a template
staff have edited is left as it is."""

from django.db import migrations

# (code, (old subject, old body), (new subject, new body)), email, locale es.
CHANGES = [
    ('portal_link',
     ('Tu nuevo enlace a tu cuenta',
      'Hola, {{ customer_name }}:\n\nAquí tienes un nuevo enlace a tu cuenta de facturación, como nos pediste:\n{{ portal_url }}\n\nPor tu seguridad, el enlace funciona durante un tiempo limitado. Si no lo has pedido, puedes ignorar este correo.\n\n{{ merchant_name }}\n'),
     ('Su nuevo enlace a su cuenta',
      'Hola, {{ customer_name }}:\n\nAquí tiene un nuevo enlace a su cuenta de facturación, como nos solicitó:\n{{ portal_url }}\n\nPor su seguridad, el enlace funciona durante un tiempo limitado. Si no lo ha solicitado, puede ignorar este correo.\n\n{{ merchant_name }}\n')),
    ('support_ack',
     ('Hemos recibido tu mensaje',
      'Hola, {{ customer_name }}:\n\nGracias por escribirnos. Tu mensaje ha llegado a nuestro equipo y te responderemos por correo, normalmente en un día laborable.\n\nPuedes consultar tus facturas y actualizar tus datos de pago en cualquier momento aquí:\n{{ portal_url }}\n\n{{ merchant_name }}\n'),
     ('Hemos recibido su mensaje',
      'Hola, {{ customer_name }}:\n\nGracias por escribirnos. Su mensaje ha llegado a nuestro equipo y le responderemos por correo, normalmente en un día laborable.\n\nPuede consultar sus facturas y actualizar sus datos de pago en cualquier momento aquí:\n{{ portal_url }}\n\n{{ merchant_name }}\n')),
]


def _swap(apps, frm: int, to: int) -> None:
    MessageTemplate = apps.get_model("notifications", "MessageTemplate")
    for code, *versions in CHANGES:
        (old_subject, old_body), (new_subject, new_body) = versions[frm], versions[to]
        MessageTemplate.objects.filter(code=code, channel="email", locale="es", subject=old_subject,
                                       body_text=old_body).update(subject=new_subject, body_text=new_body)


def forwards(apps, schema_editor):
    _swap(apps, 0, 1)


def backwards(apps, schema_editor):
    _swap(apps, 1, 0)


class Migration(migrations.Migration):

    dependencies = [
        ("notifications", "0004_meta_indexes"),
    ]

    operations = [
        migrations.RunPython(forwards, backwards),
    ]
