"""The template editor in a real browser: the preview follows the edits."""

from __future__ import annotations

import os

import pytest
from django.contrib.auth import get_user_model

from notifications.models import MessageTemplate

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture
def browser_page():
    if not os.path.exists("/usr/bin/chromium"):
        pytest.skip("Chromium is not installed at /usr/bin/chromium")
    from playwright.sync_api import sync_playwright

    # The ORM refuses to run in Playwright's event-loop thread unless told it is safe: set only while
    # this test runs (a subprocess of another test must not inherit it).
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            page = browser.new_page()
            page.csp_errors = []
            page.on("console", lambda msg: "Content Security Policy" in msg.text and page.csp_errors.append(msg.text))
            yield page
            browser.close()
    finally:
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


def test_live_preview_updates_while_typing(live_server, browser_page):
    from notifications.defaults import load_default_templates

    load_default_templates()
    get_user_model().objects.create_superuser("editor", "editor@example.com", "pw-editor-1")
    template = MessageTemplate.objects.get(code="reminder", channel="email", locale="it")
    page = browser_page
    page.goto(f"{live_server.url}/admin/login/")
    page.fill("#id_username", "editor")
    page.fill("#id_password", "pw-editor-1")
    page.click("input[type=submit]")
    page.goto(f"{live_server.url}/admin/notifications/messagetemplate/{template.pk}/change/")

    frame = page.frame(name="template-preview")
    frame.wait_for_selector("#preview-subject")
    assert frame.inner_text("#preview-subject").startswith("Promemoria: la fattura INV-0001")
    email = frame.frame_locator("#preview-html")
    assert "Verifichi e paghi" in email.locator("a", has_text="Verifichi e paghi").inner_text()

    page.fill("#id_subject", "Ciao {{ customer_name }}, un promemoria")
    frame = page.frame(name="template-preview")
    page.wait_for_function(
        "() => { const f = document.querySelector('#template-preview').contentDocument;"
        " const s = f && f.querySelector('#preview-subject'); return s && s.textContent.startsWith('Ciao'); }"
    )
    assert page.frame(name="template-preview").inner_text("#preview-subject") == "Ciao Ada Lovelace, un promemoria"

    page.fill("#id_subject", "Ciao {{ cliente }}")
    page.wait_for_function(
        "() => { const f = document.querySelector('#template-preview').contentDocument;"
        " return f && f.querySelector('.error'); }"
    )
    assert "Unknown variable 'cliente'" in page.frame(name="template-preview").inner_text(".error")
    # Saving the broken template is refused with the error on the field.
    page.click("input[name=_save]")
    assert "Unknown variable" in page.inner_text(".errorlist")
    template.refresh_from_db()
    assert template.subject.startswith("Promemoria")
    assert page.csp_errors == []
