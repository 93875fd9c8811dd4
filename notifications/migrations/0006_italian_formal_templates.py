"""The Italian portal-link and support-acknowledgement emails address the customer formally ("Lei"), like
every other Italian message (they used "tu"). Templates still as shipped are updated; a template staff
have edited is left as it is."""

from django.db import migrations

# (code, channel, (old subject, old body), (new subject, new body)), locale it.
CHANGES = [
    ('portal_link', 'email',
     ('Il tuo nuovo link al tuo account',
      "Ciao {{ customer_name }},\n\necco un nuovo link al tuo account di fatturazione, come richiesto:\n{{ portal_url }}\n\nPer la tua sicurezza il link funziona per un tempo limitato. Se non l'hai richiesto, puoi ignorare questa email.\n\n{{ merchant_name }}\n"),
     ('Il nuovo link al Suo account',
      "Gentile {{ customer_name }},\n\necco un nuovo link al Suo account di fatturazione, come da Sua richiesta:\n{{ portal_url }}\n\nPer la Sua sicurezza, il link funziona per un tempo limitato. Se non l'ha richiesto, può ignorare questa email.\n\nCordiali saluti,\n{{ merchant_name }}\n")),
    ('support_ack', 'email',
     ('Abbiamo ricevuto il tuo messaggio',
      'Ciao {{ customer_name }},\n\ngrazie per averci scritto. Il tuo messaggio è arrivato al nostro team e ti risponderemo via email, di solito entro un giorno lavorativo.\n\nPuoi vedere le tue fatture e aggiornare i dati di pagamento in qualsiasi momento qui:\n{{ portal_url }}\n\n{{ merchant_name }}\n'),
     ('Abbiamo ricevuto il Suo messaggio',
      'Gentile {{ customer_name }},\n\nLa ringraziamo per averci scritto. Il Suo messaggio è arrivato al nostro team e Le risponderemo via email, di solito entro un giorno lavorativo.\n\nPuò consultare le Sue fatture e aggiornare i dati di pagamento in qualsiasi momento qui:\n{{ portal_url }}\n\nCordiali saluti,\n{{ merchant_name }}\n')),
]


def _swap(apps, frm: int, to: int) -> None:
    MessageTemplate = apps.get_model("notifications", "MessageTemplate")
    for code, channel, *versions in CHANGES:
        (old_subject, old_body), (new_subject, new_body) = versions[frm], versions[to]
        MessageTemplate.objects.filter(code=code, channel=channel, locale="it", subject=old_subject,
                                       body_text=old_body).update(subject=new_subject, body_text=new_body)


def forwards(apps, schema_editor):
    _swap(apps, 0, 1)


def backwards(apps, schema_editor):
    _swap(apps, 1, 0)


class Migration(migrations.Migration):

    dependencies = [
        ("notifications", "0005_spanish_formal_templates"),
    ]

    operations = [
        migrations.RunPython(forwards, backwards),
    ]
