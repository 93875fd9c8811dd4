"""The interactive API docs render in a real browser under the site's strict CSP (assets served locally)."""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def async_unsafe(monkeypatch):
    # Playwright's sync API runs an event loop in this thread; only for this test, never globally.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


def test_swagger_ui_renders_with_the_csp(async_unsafe, live_server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run"])
        page = browser.new_page()
        problems: list[str] = []
        page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        external: list[str] = []
        page.on("request", lambda r: external.append(r.url) if not r.url.startswith(live_server.url) else None)
        page.goto(f"{live_server.url}/api/docs/")
        page.wait_for_selector("text=Dunning back office API", timeout=20000)
        page.wait_for_selector("text=/api/v1/payment-events/", timeout=20000)
        assert page.locator(".opblock").count() > 10
        browser.close()
    assert not [m for m in problems if "Content Security Policy" in m], problems
    assert external == []
