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
