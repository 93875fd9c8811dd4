"""The catalogues and shipped texts: every plural form a language's rule can pick is translated, and no
sentence puts its own full stop after a localized date that already ends with one (Ukrainian "р.")."""

import datetime
import re
from pathlib import Path

import pytest
from babel.dates import format_date
from babel.messages.pofile import read_po
from django.conf import settings
from django.template.loader import render_to_string
from django.utils import translation
from django.utils.translation import gettext, ngettext

from notifications.defaults import iter_default_templates
from notifications.models import MessageTemplate
from notifications.rendering import SAMPLE_CONTEXT, render_parts

LANGUAGES = [code for code, _name in settings.LANGUAGES]
CATALOGUES = sorted(Path(settings.LOCALE_PATHS[0]).glob("*/LC_MESSAGES/django.po"))
DAY = datetime.date(2026, 3, 2)
# A sentence stop doubled after a date: "2026 р..", "2026年3月2日。。", "р. ." (an ellipsis is not one).
DOUBLED = re.compile(r"(?<!\.)\.[\s\u202f]?\.(?!\.)|[。．]\s?[。．.]|\.\s?[。．]")
# Placeholders that receive a localized date: {{ day }} in the portal, *_date in messages.
DATE_PLACEHOLDER = re.compile(r"%\((day|date|\w+_date|\w+_on)\)s")

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


def test_the_checks_see_every_shipped_language():
    assert {path.parts[-3] for path in CATALOGUES} == set(LANGUAGES) - {"en"}
    assert {t["locale"] for t in iter_default_templates()} == set(LANGUAGES)


def _long_date(locale: str) -> str:
    return format_date(DAY, format="long", locale=locale)


@pytest.mark.parametrize("path", CATALOGUES, ids=lambda p: p.parts[-3])
def test_no_catalogue_stops_a_sentence_twice_after_a_date(path):
    locale = path.parts[-3]
    with path.open("rb") as handle:
        catalogue = read_po(handle, locale=locale)
    found = []
    for message in catalogue:
        if not message.id:
            continue
        ids = message.id if isinstance(message.id, tuple) else (message.id,)
        strings = [s for s in (message.string if isinstance(message.string, tuple) else (message.string,)) if s]
        # An untranslated message shows the English text around the local date.
        for text in strings or list(ids):
            if not DATE_PLACEHOLDER.search(text):
                continue
            shown = DATE_PLACEHOLDER.sub(_long_date(locale), text).replace("%%", "%")
            if DOUBLED.search(shown):
                found.append(shown)
    assert not found, f"{locale}: doubled punctuation after a date: {found}"


@pytest.mark.parametrize("locale", LANGUAGES)
def test_portal_sentences_with_dates_stop_once(locale):
    row = {"retry_on": DAY, "suspend_on": DAY + datetime.timedelta(days=9)}
    with translation.override(locale):
        html = render_to_string("portal/_next.html", {"row": row})
    assert _long_date(locale) in html
    assert not DOUBLED.search(html), html


@pytest.mark.parametrize("locale", LANGUAGES)
def test_shipped_messages_with_dates_stop_once_in_every_language(locale):
    """Each message as a customer speaking this language gets it: their template, else the English one,
    with dates formatted for their language either way."""
    shipped = {(t["code"], t["channel"], t["locale"]): t for t in iter_default_templates()}
    checked = 0
    for code, channel in sorted({(c, ch) for c, ch, _l in shipped}):
        data = shipped.get((code, channel, locale)) or shipped[(code, channel, "en")]
        template = MessageTemplate(**data)
        for part in render_parts(template, dict(SAMPLE_CONTEXT), locale):
            match = DOUBLED.search(part)
            assert match is None, f"{code}.{channel} ({data['locale']} text, {locale} dates): " \
                                  f"{part[max(match.start() - 60, 0):match.end() + 20]!r}"
        checked += 1
    assert checked >= 20


def _messages(locale: str):
    with (Path(settings.LOCALE_PATHS[0]) / locale / "LC_MESSAGES" / "django.po").open("rb") as handle:
        yield from (m for m in read_po(handle, locale=locale) if m.id)


def test_overdue_is_not_expired_in_japanese_and_the_current_card_is_not_saved_just_now_in_ukrainian():
    # 期限切れ is what an expired card is; an unpaid invoice past its due date is 支払期限を過ぎた.
    overdue = [m for m in _messages("ja") if "overdue" in str(m.id).lower()]
    assert len(overdue) >= 3
    assert not [m.string for m in overdue if "期限切れ" in str(m.string)]
    with translation.override("ja"):
        assert gettext("Overdue balance: %(total)s") == "支払期限を過ぎた残高: %(total)s"
    with translation.override("uk"):
        assert gettext("On file now") == "Поточний спосіб оплати"
