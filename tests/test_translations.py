"""The compiled portal catalogues: every plural form a language's rule can pick is translated."""

import pytest
from django.utils import translation
from django.utils.translation import ngettext

PLURALS = [
    ("Portal links revoked for %(n)d customer.", "Portal links revoked for %(n)d customers."),
    ("%(total)s in %(months)s monthly instalment.", "%(total)s in %(months)s monthly instalments."),
]


@pytest.mark.parametrize("locale", ["es", "it", "ja", "uk"])
def test_no_plural_form_is_left_empty(locale):
    with translation.override(locale):
        for singular, plural in PLURALS:
            for n in [*range(0, 30), 101, 1000, 1000000]:
                text = ngettext(singular, plural, n)
                assert text, f"{locale}: empty translation of {plural!r} for n={n}"
                assert text != (singular if n == 1 else plural), f"{locale}: {plural!r} untranslated for n={n}"


@pytest.mark.django_db
def test_shipped_spanish_templates_still_in_tu_become_usted_and_edited_ones_stay():
    import importlib

    from django.apps import apps

    from notifications.models import MessageTemplate

    migration = importlib.import_module("notifications.migrations.0005_spanish_formal_templates")
    (code, (old_subject, old_body), (new_subject, new_body)), (edited_code, (edited_subject, _b), _new) = \
        migration.CHANGES
    MessageTemplate.objects.filter(locale="es", code__in=[code, edited_code]).delete()
    shipped = MessageTemplate.objects.create(code=code, channel="email", locale="es", subject=old_subject,
                                             body_text=old_body)
    edited = MessageTemplate.objects.create(code=edited_code, channel="email", locale="es",
                                            subject=edited_subject, body_text="Hola, te escribimos nosotros.")
    migration.forwards(apps, None)
    shipped.refresh_from_db()
    edited.refresh_from_db()
    assert (shipped.subject, shipped.body_text) == (new_subject, new_body) and "su cuenta" in new_body
    assert edited.body_text == "Hola, te escribimos nosotros."
    # The shipped files are the new texts, so a fresh install gets the same.
    from notifications.defaults import iter_default_templates

    files = {(d["code"], d["locale"], d["channel"]): d for d in iter_default_templates()}
    assert files[(code, "es", "email")]["body_text"] == new_body


@pytest.mark.django_db
def test_shipped_italian_templates_still_in_tu_become_lei_and_edited_ones_stay():
    import importlib

    from django.apps import apps

    from notifications.defaults import iter_default_templates
    from notifications.models import MessageTemplate

    migration = importlib.import_module("notifications.migrations.0006_italian_formal_templates")
    (code, channel, (old_subject, old_body), (new_subject, new_body)), \
        (edited_code, edited_channel, (edited_subject, _b), _new) = migration.CHANGES
    MessageTemplate.objects.filter(locale="it", code__in=[code, edited_code]).delete()
    shipped = MessageTemplate.objects.create(code=code, channel=channel, locale="it", subject=old_subject,
                                             body_text=old_body)
    edited = MessageTemplate.objects.create(code=edited_code, channel=edited_channel, locale="it",
                                            subject=edited_subject, body_text="Ciao, ti scriviamo noi.")
    migration.forwards(apps, None)
    shipped.refresh_from_db()
    edited.refresh_from_db()
    assert (shipped.subject, shipped.body_text) == (new_subject, new_body) and "Suo account" in new_body
    assert edited.body_text == "Ciao, ti scriviamo noi." and edited.subject == edited_subject
    migration.backwards(apps, None)
    shipped.refresh_from_db()
    assert (shipped.subject, shipped.body_text) == (old_subject, old_body)
    # The shipped files are the new texts, so a fresh install gets the same.
    files = {(d["code"], d["locale"], d["channel"]): d for d in iter_default_templates()}
    for c, ch, _old, (subject, body) in migration.CHANGES:
        assert (files[(c, "it", ch)]["subject"], files[(c, "it", ch)]["body_text"]) == (subject, body)
