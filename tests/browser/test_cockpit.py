"""The dashboard and a report in a real browser: the charts draw under the strict CSP."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest

from tests.factories import CampaignFactory, CampaignStepFactory, CustomerFactory
from tests.support.cases import make_attempt, make_case, staff_user

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PAINTED = """(canvas) => {
  const ctx = canvas.getContext('2d');
  const {data} = ctx.getImageData(0, 0, canvas.width, canvas.height);
  let n = 0;
  for (let i = 3; i < data.length; i += 4) { if (data[i] > 0) n++; }
  return n;
}"""


@pytest.fixture
def browser_page(monkeypatch):
    # Playwright's sync API runs an event loop; set only for this test (a leaked value would fail
    # `check --deploy` in a later test).
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    sync_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.skip("Chromium is not installed at /usr/bin/chromium")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1100})
        yield page
        browser.close()


def seed():
    from django.utils import timezone

    from dunning.models import CampaignVariant

    now = timezone.now()
    campaign = CampaignFactory(name="Standard")
    step = CampaignStepFactory(campaign=campaign, position=1)
    gentle = CampaignFactory(name="Gentle", active=False)
    CampaignStepFactory(campaign=gentle, position=1, offset_days=2)
    variants = [CampaignVariant.objects.create(experiment=campaign, name="control", steps_from=campaign,
                                               is_control=True),
                CampaignVariant.objects.create(experiment=campaign, name="gentle", steps_from=gentle)]
    for i in range(12):
        customer = CustomerFactory(currency="USD" if i % 3 else "EUR", segment="pro" if i % 2 else "basic")
        failed = now - datetime.timedelta(days=5 + 6 * i)
        status = ["recovered", "recovered", "exhausted", "active"][i % 4]
        closed = failed + datetime.timedelta(days=1 + i % 5) if status != "active" else None
        case = make_case(customer, campaign, amount=f"{20 + 10 * i}", failed_at=failed, status=status,
                         closed_at=closed, current_step=step, decline="insufficient_funds",
                         variant=variants[i % 2])
        make_attempt(case, failed + datetime.timedelta(hours=2), ok=status == "recovered")
    return campaign


def login(page, live_server, client, user):
    client.force_login(user)
    cookie = client.cookies["sessionid"]
    page.context.add_cookies([{"name": "sessionid", "value": cookie.value, "url": live_server.url}])


def assert_charts_drawn(page, expected: int) -> None:
    page.wait_for_selector('canvas[data-rendered="true"]', timeout=10_000)
    canvases = page.query_selector_all("canvas[data-chart]")
    assert len(canvases) == expected
    for canvas in canvases:
        assert canvas.get_attribute("data-rendered") == "true"
        assert page.evaluate(PAINTED, canvas) > 500  # bars, lines and axes were painted


def test_dashboard_and_report_charts_render(browser_page, live_server, client):
    campaign = seed()
    page = browser_page
    errors: list[str] = []
    # Console errors (a CSP violation is one); a failed load is reported by URL below (the favicon
    # included: it is served).
    page.on("console", lambda msg: errors.append(msg.text)
            if msg.type == "error" and not msg.text.startswith("Failed to load resource") else None)
    page.on("response", lambda r: errors.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    login(page, live_server, client, staff_user("boss", superuser=True))
    ARTIFACTS.mkdir(exist_ok=True)

    page.goto(f"{live_server.url}/admin/")
    assert page.locator("#cockpit-dashboard").is_visible()
    assert_charts_drawn(page, 1)
    page.screenshot(path=str(ARTIFACTS / "cockpit-dashboard.png"), full_page=True)
    # A dashboard number leads to its list.
    page.click('a[data-figure="recovered-90"]')
    assert "/admin/dunning/dunningcase/" in page.url and "status=recovered" in page.url

    page.goto(f"{live_server.url}/admin/reports/period/?currency=USD")
    assert_charts_drawn(page, 1)
    assert page.locator("#report-table tbody tr").count() >= 1
    page.screenshot(path=str(ARTIFACTS / "cockpit-report-period.png"), full_page=True)

    page.goto(f"{live_server.url}/admin/reports/experiments/{campaign.pk}/")
    assert_charts_drawn(page, 1)
    assert "Not yet significant" in page.locator("#report-table").inner_text()
    page.screenshot(path=str(ARTIFACTS / "cockpit-experiment.png"), full_page=True)

    page.goto(f"{live_server.url}/admin/dunning/campaign/{campaign.pk}/change/")
    page.click("text=Preview timeline")
    assert page.locator("#preview-table tbody tr").count() == 1
    page.screenshot(path=str(ARTIFACTS / "cockpit-preview.png"), full_page=True)
    assert errors == [], errors  # no CSP violation, no script error
