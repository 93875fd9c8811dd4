"""The portal in a real browser (Debian's Chromium through Playwright) against a live server.

Screenshots of every page at 360 px and 1280 px go to test-artifacts/portal/.
"""

from __future__ import annotations

import datetime
import os
import re
from decimal import Decimal
from pathlib import Path

import pytest
import time_machine
from django.core import mail
from django.core.cache import cache
from django.core.management import call_command

from billing.models import Invoice
from dunning import engine
from dunning.cases import open_case
from dunning.links import make_token
from dunning.models import DunningCase
from dunning.plan_models import PaymentPlan
from notifications import services as outbox
from tests.factories import CustomerFactory, InvoiceFactory, PaymentMethodFactory, PlanLimitFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "portal"
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed")
    from playwright.sync_api import sync_playwright

    # Playwright's sync API runs an event loop in the test thread; Django's ORM refuses to run there
    # unless told it is safe. Set only while these tests run (a subprocess must not inherit it).
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as p:
            b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            yield b
            b.close()
    finally:
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@pytest.fixture
def page(browser, live_server, settings):
    settings.SITE_URL = live_server.url
    cache.clear()
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = context.new_page()
    pg.csp_errors = []
    pg.on("console", lambda msg: "Content Security Policy" in msg.text and pg.csp_errors.append(msg.text))
    yield pg
    assert pg.csp_errors == [], "the page broke its own Content-Security-Policy"
    context.close()


def shoot(page, name: str) -> None:
    """Save the page at phone width (360 px) and desktop width (1280 px)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for width in (360, 1280):
        page.set_viewport_size({"width": width, "height": 800})
        page.screenshot(path=str(ARTIFACTS / f"{name}-{width}.png"), full_page=True)
    page.set_viewport_size({"width": 1280, "height": 900})


def failing_customer(*, locale="en", name="Ada Lovelace", email="ada@example.com", tz="Europe/London"):
    call_command("load_defaults", verbosity=0)
    customer = CustomerFactory(name=name, email=email, locale=locale, timezone=tz)
    PaymentMethodFactory(customer=customer, token=f"tok_insufficient_funds:{email}", last4="9995")
    today = datetime.date.today()
    invoice = InvoiceFactory(customer=customer, amount_due=Decimal("120.00"),
                             issued_at=today - datetime.timedelta(days=3), due_date=today - datetime.timedelta(days=1))
    case, _ = open_case(invoice, decline_code="insufficient_funds")
    return customer, invoice, case


def link_from_first_notice(customer) -> str:
    """Run the campaign's first step and send the message, as the workers would; read the link."""
    engine.run_due_steps()
    outbox.send_queued()
    message = next(m for m in mail.outbox if m.to == [customer.email])
    return re.search(r"(http://\S+/portal/[^/\s]+/)", message.body).group(1)


def staff_sees_case_recovered(page, live_server, case) -> None:
    from django.contrib.auth import get_user_model

    get_user_model().objects.create_superuser("staff", "staff@example.com", "correct-horse-battery")
    page.goto(f"{live_server.url}/admin/login/?next=/admin/dunning/dunningcase/{case.pk}/change/")
    page.fill("#id_username", "staff")
    page.fill("#id_password", "correct-horse-battery")
    page.press("#id_password", "Enter")
    page.wait_for_url(re.compile(r".*/dunningcase/\d+/change/"))
    status = page.locator(".field-status .readonly").inner_text()
    assert status == "Recovered"
    assert page.get_by_text("case.recovered").first.is_visible()


def update_card(page, number="4242 4242 4242 4242"):
    page.fill("#id_card_number", number)
    page.fill("#id_exp_month", "12")
    page.fill("#id_exp_year", str(datetime.date.today().year + 3))
    page.fill("#id_cvc", "123")
    page.get_by_role("button", name=re.compile(r".+")).last.click()


def test_from_the_email_to_a_recovered_case(page, live_server):
    customer, invoice, case = failing_customer()
    link = link_from_first_notice(customer)
    assert link.startswith(live_server.url)

    page.goto(link)
    assert page.locator("html").get_attribute("lang") == "en"
    assert page.locator(".status .badge").inner_text() == "At risk"
    card = page.locator(f"#invoice-{invoice.pk}")
    assert "$120.00" in card.inner_text() and invoice.number in card.inner_text()
    assert "We will try again on" in card.inner_text()
    assert "9995" in page.locator(".method").first.inner_text()
    shoot(page, "01-overview")

    page.get_by_role("link", name="Update payment method").last.click()
    assert page.get_by_label("Card number").is_visible()
    shoot(page, "02-payment-method")
    update_card(page, number="4111 1111 1111 1111")  # not a sandbox test card
    error = page.locator("#id_card_number_error")
    assert "This card was declined" in error.inner_text()
    assert page.locator("#id_card_number").input_value() == ""  # the number is never sent back
    assert page.locator("#id_card_number").get_attribute("aria-describedby") == "id_card_number_error"
    shoot(page, "02b-payment-method-error")
    update_card(page)
    page.wait_for_url(re.compile(r".*/payment-method/\d+/$"))
    result = page.locator(".result").first
    assert "Paid" in result.inner_text() and invoice.number in result.inner_text()
    shoot(page, "03-payment-method-result")

    page.get_by_role("link", name="Overview").click()
    assert page.locator(".status .badge").inner_text() == "Active"
    assert page.get_by_text("You have no open invoices").is_visible()
    assert "4242" in page.locator(".method").first.inner_text()

    invoice.refresh_from_db()
    case.refresh_from_db()
    assert invoice.status == Invoice.Status.PAID and case.status == DunningCase.Status.RECOVERED
    page.goto(f"{live_server.url}/portal/{make_token(customer)}/invoices/{invoice.pk}/")
    assert page.locator(".invoice-status").inner_text() == "Paid"
    shoot(page, "04-invoice-paid")

    staff_sees_case_recovered(page, live_server, case)
    shoot(page, "05-admin-case-recovered")


def test_the_same_in_japanese(page, live_server):
    customer, invoice, case = failing_customer(locale="ja", name="山田 花子", email="hanako@example.jp",
                                               tz="Asia/Tokyo")
    page.goto(link_from_first_notice(customer))
    assert page.locator("html").get_attribute("lang") == "ja"
    assert page.locator(".status .badge").inner_text() == "リスクあり"
    card = page.locator(f"#invoice-{invoice.pk}")
    assert "$120.00" in card.inner_text() or "＄120.00" in card.inner_text()
    assert "再度お支払いを試みます" in card.inner_text()
    shoot(page, "10-ja-overview")
    page.get_by_role("link", name="お支払い方法を更新").last.click()
    assert page.get_by_label("カード番号").is_visible()
    shoot(page, "11-ja-payment-method")
    update_card(page)
    page.wait_for_url(re.compile(r".*/payment-method/\d+/$"))
    assert "支払い済み" in page.locator(".result").first.inner_text()
    shoot(page, "12-ja-payment-method-result")
    case.refresh_from_db()
    assert case.status == DunningCase.Status.RECOVERED
    staff_sees_case_recovered(page, live_server, case)


def test_a_tampered_link_offers_a_new_one_without_saying_whether_the_address_exists(page, live_server):
    customer, invoice, case = failing_customer()
    token = make_token(customer)
    tampered = token[:-4] + ("abcd" if not token.endswith("abcd") else "wxyz")
    response = page.goto(f"{live_server.url}/portal/{tampered}/")
    assert response.status == 403
    assert page.get_by_role("heading", name="This link does not work").is_visible()
    assert invoice.number not in page.content()
    shoot(page, "20-link-tampered")
    page.get_by_label("Your email address").fill("someone-else@example.com")
    page.get_by_role("button", name="Email me a new link").click()
    assert page.get_by_role("heading", name="Check your email").is_visible()
    shoot(page, "21-link-sent")

    # An expired link is answered in the customer's own language and can send a fresh link at once.
    customer.locale = "it"
    customer.save()
    with time_machine.travel(datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=30), tick=False):
        old = make_token(customer)
    response = page.goto(f"{live_server.url}/portal/{old}/")
    assert response.status == 403 and page.locator("html").get_attribute("lang") == "it"
    assert page.locator("nav").count() == 0  # no way into the account from here
    shoot(page, "22-link-expired-it")
    page.locator("form button[type=submit]").click()
    assert page.locator("h1").inner_text() == "Controlli la Sua email"
    assert outbox.Notification.objects.filter(template_code="portal_link", recipient=customer.email).count() == 1


def test_another_customers_invoice_id_in_the_url_is_not_found(page, live_server):
    customer, invoice, case = failing_customer()
    other_invoice = InvoiceFactory(customer=CustomerFactory(name="Someone Else"), amount_due=Decimal("999.00"))
    token = make_token(customer)
    mine = page.goto(f"{live_server.url}/portal/{token}/invoices/{invoice.pk}/")
    assert mine.status == 200
    response = page.goto(f"{live_server.url}/portal/{token}/invoices/{other_invoice.pk}/")
    assert response.status == 404
    assert "999" not in page.content() and "Someone Else" not in page.content()


def test_a_payment_plan_request_with_the_keyboard_and_the_other_pages(page, live_server):
    customer, invoice, case = failing_customer()
    second = InvoiceFactory(customer=customer, amount_due=Decimal("60.00"))
    open_case(second)
    PlanLimitFactory(currency="USD", min_instalment=Decimal("20.00"), max_months=6)
    page.goto(f"{live_server.url}/portal/{make_token(customer)}/")
    page.get_by_role("link", name="Payment plan").first.click()
    assert page.get_by_text("$180.00").first.is_visible()
    shoot(page, "30-plan-choose")
    # Keyboard only: pick 4 months with the arrow key, then Tab to the button and press Enter.
    page.focus("#months-3")
    page.keyboard.press("ArrowDown")
    assert page.is_checked("#months-4")
    page.keyboard.press("Tab")
    focused = page.evaluate("document.activeElement.textContent")
    assert focused.strip() == "Ask for this plan"
    with page.expect_navigation():
        page.keyboard.press("Enter")
    assert page.get_by_text("Your payment plan is active").is_visible()
    assert page.locator("table tbody tr").count() == 4
    shoot(page, "31-plan-active")
    plan = PaymentPlan.objects.get()
    assert plan.months == 4 and plan.status == PaymentPlan.Status.ACTIVE
    case.refresh_from_db()
    assert case.status == DunningCase.Status.PAUSED

    page.get_by_role("link", name="Overview").click()
    assert page.get_by_text("You are on a payment plan: reminders are paused").is_visible()
    assert page.get_by_text("Keep your payment method up to date").is_visible()
    shoot(page, "32-overview-on-plan")

    page.get_by_role("link", name="Contact us").click()
    page.get_by_label("Your message").fill("Can I pay by bank transfer instead?")
    shoot(page, "33-support")
    page.get_by_role("button", name="Send").click()
    assert page.get_by_text("your message was sent").is_visible()

    page.get_by_role("link", name="Preferences").click()
    assert page.get_by_text("notices the law requires").is_visible()
    shoot(page, "34-preferences")
    page.get_by_label("Stop reminder emails").check()
    page.get_by_label("Language").select_option("uk")
    page.get_by_role("button", name="Save preferences").click()
    assert page.locator("html").get_attribute("lang") == "uk"
    shoot(page, "35-preferences-uk")
    customer.refresh_from_db()
    assert customer.opt_out_email and customer.locale == "uk"
