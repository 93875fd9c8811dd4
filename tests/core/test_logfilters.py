"""Retention of message bodies and tracking data, and logs free of card data, tokens and bodies."""

from __future__ import annotations

import datetime
import logging
import re
from decimal import Decimal
from pathlib import Path

import pytest
from django.conf import settings
from django.core import mail
from django.core.mail.backends.locmem import EmailBackend

from billing.models import SandboxCharge
from core.schedules import declared_schedules
from customers.models import PaymentMethod
from dunning import fees, privacy, tasks
from dunning.cases import open_case
from dunning.links import make_token
from dunning.models import CaseEvent
from notifications import retention
from notifications.models import Notification
from tests.factories import (
    BillingContactFactory,
    CustomerFactory,
    FeePolicyFactory,
    InvoiceFactory,
    PaymentMethodFactory,
)
from tests.support.clock import T0

pytestmark = pytest.mark.django_db


def test_old_message_bodies_are_removed_and_recent_ones_kept(defaults, clock, settings):
    from dunning import engine
    from notifications import services as outbox

    settings.RETENTION_DAYS = 400
    customer = CustomerFactory()
    open_case(InvoiceFactory(customer=customer))
    engine.run_due_steps()
    outbox.send_queued()
    old = Notification.objects.get()
    assert old.body_text and old.context
    clock.advance(days=399)
    assert retention.purge_old_messages() == 0
    # A recent message of another customer.
    other = CustomerFactory()
    open_case(InvoiceFactory(customer=other))
    engine.run_due_steps()
    outbox.send_queued()
    clock.advance(days=2)
    assert tasks.purge_old_messages() == 1
    assert tasks.purge_old_messages() == 0  # idempotent
    old.refresh_from_db()
    assert (old.subject, old.body_text, old.body_html, old.context) == ("", "", "", {})
    assert old.status == Notification.Status.SENT and old.template_code == "first_notice"  # the record stays
    recent = Notification.objects.get(customer=other)
    assert recent.body_text and recent.context


def test_the_jobs_are_scheduled():
    SCHEDULES = declared_schedules()
    assert SCHEDULES["Apply late fees and interest"][0] == "dunning.tasks.apply_fees"
    assert SCHEDULES["Remove old message bodies and tracking data"][0] == "dunning.tasks.purge_old_messages"


# --- Logs ------------------------------------------------------------------------------------------

def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        n = int(ch)
        if i % 2:
            n = n * 2 - 9 if n > 4 else n * 2
        total += n
    return total % 10 == 0


def leaks(lines: list[str], secrets: dict[str, list[str]]) -> list[str]:
    found = []
    for line in lines:
        for match in re.findall(r"(?<!\d)(?:\d[ -]?){13,19}(?!\d)", line):
            digits = re.sub(r"\D", "", match)
            if 13 <= len(digits) <= 19 and luhn_ok(digits):
                found.append(f"card number in: {line[:80]}")
        for kind, values in secrets.items():
            for value in values:
                if value and value in line:
                    found.append(f"{kind} in: {line[:80]}")
    return found


def test_the_log_scanner_finds_planted_secrets():
    secrets = {"token": ["tok_ok:abc"], "body": ["Hello Ada, pay now"]}
    assert leaks(["charging 4242 4242 4242 4242"], secrets)
    assert leaks(["using tok_ok:abc"], secrets)
    assert leaks(["sent: Hello Ada, pay now"], secrets)
    assert not leaks(["notification 42 sent; invoice INV-000123 for 1200.00"], secrets)


class FlakyBackend(EmailBackend):
    """Refuses one address, so the failure path (which logs) runs too."""

    def send_messages(self, messages):
        for message in messages:
            if "flaky" in message.to[0]:
                raise ConnectionError("mail server said no")
        return super().send_messages(messages)


def test_a_full_dunning_run_logs_no_card_data_tokens_or_bodies(defaults, clock, caplog, settings):
    settings.EMAIL_BACKEND = "tests.core.test_logfilters.FlakyBackend"
    FeePolicyFactory(campaign=defaults, fixed_fees={"USD": "15"}, annual_interest_rate=Decimal("10"))
    customers = []
    for name, token in (("flaky", "tok_insufficient_funds:flaky"), ("fixer", "tok_succeed_after_2:fixer"),
                        ("never", "tok_stolen_card:never"), ("error", "tok_unknown_kind:error")):
        customer = CustomerFactory(email=f"{name}@example.com")
        PaymentMethodFactory(customer=customer, token=token)
        BillingContactFactory(customer=customer, email=f"{name}.ap@example.com", is_primary=True)
        for amount in ("40.00", "60.00"):
            open_case(InvoiceFactory(customer=customer, amount_due=Decimal(amount)))
        customers.append(customer)
    caplog.set_level(logging.DEBUG)
    for hour in range(0, 30 * 24 + 1, 6):
        clock.move_to(T0 + datetime.timedelta(hours=hour))
        clock.tick()
        fees.apply_fees()
    privacy.export_customer(customers[0])
    privacy.erase_customer(customers[2], close_active_cases=True)
    retention.purge_old_messages(days=1)

    lines = [r.getMessage() for r in caplog.records] + [r.exc_text or "" for r in caplog.records]
    assert any("late fees" in line for line in lines) and any("failed" in line for line in lines)
    assert CaseEvent.objects.filter(kind="message.failed").exists()
    sent_bodies = [m.body for m in mail.outbox]
    assert sent_bodies
    body_lines = [line for body in sent_bodies for line in body.splitlines() if len(line) >= 30]
    portal = [make_token(c) for c in customers]
    urls = [u for c in Notification.objects.values_list("context", flat=True) for u in
            (c.get("portal_url", ""), c.get("unsubscribe_url", "")) if u]
    secrets = {
        "payment-method token": list(PaymentMethod.objects.values_list("token", flat=True))
        + list(SandboxCharge.objects.values_list("token", flat=True)) + ["tok_insufficient_funds:flaky"],
        "portal token": portal + [u.rstrip("/").split("/")[-1] for u in urls] + urls,
        "email body": sent_bodies + body_lines,
    }
    assert leaks(lines, secrets) == []


def test_the_console_log_filter_masks_what_slips_through(settings):
    from core.logfilters import RedactSecrets, redact

    assert settings.LOGGING["handlers"]["console"]["filters"] == ["redact"]
    assert redact("Not Found: /portal/eyJjIjo1fQ:1vN:abc/preferences/") == "Not Found: /portal/[token]/preferences/"
    assert redact("declined tok_insufficient_funds:zelda for pm_1Abc23") == "declined [token] for [token]"
    assert redact("card 4242 4242 4242 4242 charged") == "card [card] charged"
    assert redact("invoice INV-000123 for 1200.00, attempt 1234567890123") == \
        "invoice INV-000123 for 1200.00, attempt 1234567890123"  # not a card number (Luhn)
    record = logging.LogRecord("x", logging.WARNING, __file__, 1, "Not Found: %s", ("/portal/t/abc.def:ghi/",), None)
    assert RedactSecrets().filter(record) and record.getMessage() == "Not Found: /portal/t/[token]/"


def test_request_lines_of_the_dev_server_and_gunicorns_logs_are_masked(tmp_path):
    import datetime
    import io
    from types import SimpleNamespace

    from gunicorn.config import Config

    from core.gunicorn_logging import RedactingLogger
    from core.logfilters import RedactSecrets

    # Django's own lines ("Not Found: /portal/<token>/") reach only the masked root handler.
    assert [h for h in logging.getLogger("django").handlers if type(h) is logging.StreamHandler] == []
    # runserver's "GET /portal/<token>/ HTTP/1.1" 200 lines go through the same filter.
    server = logging.getLogger("django.server")
    [handler] = [h for h in server.handlers if type(h) is logging.StreamHandler]  # (pytest adds its own)
    assert any(isinstance(f, RedactSecrets) for f in handler.filters)
    stream = io.StringIO()
    original = handler.setStream(stream)
    try:
        server.info('"%s" %s %s', "GET /portal/eyJjIjo1fQ:1vN:abc/ HTTP/1.1", "200", "512")
    finally:
        handler.setStream(original)
    assert "/portal/[token]/" in stream.getvalue() and "eyJjIjo1fQ" not in stream.getvalue()

    # gunicorn, configured by config/gunicorn.conf.py: the request line, path and referrer are masked.
    cfg = Config()
    cfg.set("logconfig_dict", {"version": 1})
    namespace = {}
    exec(Path(settings.BASE_DIR, "config", "gunicorn.conf.py").read_text(), namespace)  # noqa: S102
    assert namespace["logger_class"] == "core.gunicorn_logging.RedactingLogger"
    access = RedactingLogger(cfg)
    environ = {"REQUEST_METHOD": "GET", "RAW_URI": "/portal/eyJjIjo1fQ:1vN:abc/plan/", "SERVER_PROTOCOL": "HTTP/1.1",
               "PATH_INFO": "/portal/eyJjIjo1fQ:1vN:abc/plan/", "QUERY_STRING": "",
               "HTTP_REFERER": "https://billing.example.com/portal/eyJjIjo1fQ:1vN:abc/", "REMOTE_ADDR": "10.0.0.1"}
    response = SimpleNamespace(status="200 OK", sent=512, headers=[])
    atoms = access.atoms(response, SimpleNamespace(headers=[("REFERER", environ["HTTP_REFERER"])]), environ,
                         datetime.timedelta(milliseconds=12))
    line = access.cfg.access_log_format % atoms
    assert "eyJjIjo1fQ" not in line and "GET /portal/[token]/plan/ HTTP/1.1" in line
    assert atoms["f"] == "https://billing.example.com/portal/[token]/" and atoms["B"] == 512
    # gunicorn's error log ("Error handling request <uri>") is masked too.
    errors = tmp_path / "gunicorn-error.log"
    error_cfg = Config()
    error_cfg.set("errorlog", str(errors))
    RedactingLogger(error_cfg).error("Error handling request %s", "/portal/eyJjIjo1fQ:1vN:abc/pay/")
    assert "Error handling request /portal/[token]/pay/" in errors.read_text()
    assert "eyJjIjo1fQ" not in errors.read_text()
