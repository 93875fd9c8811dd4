"""No charge on a closed invoice, with real processes on PostgreSQL: a payment worker (its own
process, a slow sandbox gateway) against payments reported through the API in this process."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from decimal import Decimal
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection
from rest_framework.test import APIClient

from billing.attempts import process_pending, process_refund, process_refunds
from billing.models import CustomerCredit, GatewayRefund, Invoice, PaymentAttempt, SandboxCharge, SandboxRefund
from dunning import engine
from dunning.cases import open_case
from dunning.models import DunningCase
from dunning.payments import SETTLEMENT
from tests.factories import CustomerFactory, InvoiceFactory, PaymentMethodFactory, retrying_campaign
from tests.support.imports import api_key

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

ROOT = Path(__file__).resolve().parents[2]


def queued_retries(n: int) -> list[Invoice]:
    """n open cases whose retry step has queued a pending attempt (nothing sent yet)."""
    retrying_campaign()
    invoices = []
    for i in range(n):
        customer = CustomerFactory()
        PaymentMethodFactory(customer=customer, token=f"tok_ok:race{i}")
        invoice = InvoiceFactory(customer=customer, amount_due=Decimal("49.00"))
        open_case(invoice, decline_code="insufficient_funds")
        invoices.append(invoice)
    engine.run_due_steps()
    assert PaymentAttempt.objects.pending().filter(tries=0).count() == n
    return invoices


def worker(folder: Path | None = None, latency_ms: int = 0, start_at: float | None = None,
           concurrency: int = 20) -> subprocess.Popen:
    db = settings.DATABASES["default"]
    env = {
        **os.environ,
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "DJANGO_SETTINGS_MODULE": "config.test_settings",
        "PAYMENT_GATEWAY": "tests.support.gateways.SlowGateway",
        "SLOW_GATEWAY_DIR": str(folder or ""),
        "SANDBOX_GATEWAY_LATENCY_MS": str(latency_ms),
        "PAYMENT_GATEWAY_CONCURRENCY": str(concurrency),
    }
    args = [sys.executable, str(ROOT / "tests" / "support" / "attempt_process.py")]
    args += [str(start_at)] if start_at else []
    return subprocess.Popen(args, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen) -> int:
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    return int(out.strip().splitlines()[-1])


def pay_through_api(client: APIClient, invoice: Invoice, *, unless_settled: bool = False):
    """The billing system reports the invoice's balance paid (it refuses when nothing is left)."""
    response = client.post("/api/v1/payment-events/", {"id": f"evt_{uuid.uuid4().hex}", "type": "payment_succeeded",
                                                       "invoice": invoice.external_id},
                           format="json", HTTP_IDEMPOTENCY_KEY=uuid.uuid4().hex)
    if unless_settled and response.status_code == 400:
        assert "Nothing is left to pay" in response.content.decode()
        return response
    assert response.status_code == 201, response.content
    return response


@pytest.fixture
def api():
    _key, secret = api_key()
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    return client


def kept_per_invoice(invoice: Invoice) -> Decimal:
    """Money the customer has given for the invoice and not had back: charges + external payments - refunds."""
    keys = list(PaymentAttempt.objects.filter(invoice=invoice).values_list("idempotency_key", flat=True))
    charged = sum((c.amount for c in SandboxCharge.objects.filter(idempotency_key__in=keys, succeeded=True)),
                  Decimal("0"))
    references = SandboxCharge.objects.filter(idempotency_key__in=keys).values_list("reference", flat=True)
    refunded = sum((r.amount for r in SandboxRefund.objects.filter(charge_reference__in=list(references))),
                   Decimal("0"))
    external = sum((a.amount for a in PaymentAttempt.objects.filter(invoice=invoice, source="external")),
                   Decimal("0"))
    return charged + external - refunded


def test_paid_while_a_retry_is_queued_the_worker_makes_no_gateway_call(api):
    [invoice] = queued_retries(1)
    pay_through_api(api, invoice)
    attempt = PaymentAttempt.objects.get(invoice=invoice, source="retry")
    assert attempt.outcome == PaymentAttempt.Outcome.CANCELLED

    assert finish(worker()) == 0
    assert not SandboxCharge.objects.exists()  # the sandbox records every call it gets: none
    case = DunningCase.objects.get(invoice=invoice)
    assert case.status == DunningCase.Status.RECOVERED
    assert case.events.filter(kind="payment.attempts_cancelled").count() == 1


def test_paid_while_the_charge_is_in_flight_the_late_success_is_refunded_exactly_once(api, tmp_path):
    [invoice] = queued_retries(1)
    attempt = PaymentAttempt.objects.get(invoice=invoice)
    proc = worker(tmp_path)
    charging = tmp_path / f"charging-{attempt.idempotency_key.replace(':', '_')}"
    deadline = time.monotonic() + 60
    while not charging.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert charging.exists(), proc.stderr.read() if proc.poll() is not None else "the worker never called"
    # The worker holds no lock while its gateway call is in flight: the API payment goes through.
    pay_through_api(api, invoice)
    attempt.refresh_from_db()
    assert (attempt.outcome, attempt.tries) == ("pending", 1)  # sent, so not cancellable
    (tmp_path / "release").touch()
    assert finish(proc) == 1

    attempt.refresh_from_db()
    invoice.refresh_from_db()
    assert attempt.outcome == PaymentAttempt.Outcome.SUCCEEDED
    assert invoice.status == Invoice.Status.PAID and invoice.amount_paid == Decimal("49.00")
    refund = GatewayRefund.objects.get()
    assert refund.status == GatewayRefund.Status.SUCCEEDED and refund.amount == Decimal("49.00")
    assert SandboxRefund.objects.get().charge_reference == attempt.gateway_reference
    assert kept_per_invoice(invoice) == Decimal("49.00")
    assert not CustomerCredit.objects.exists()
    case = DunningCase.objects.get(invoice=invoice)
    assert {"payment.late_charge", "payment.refunded"} <= set(case.events.values_list("kind", flat=True))

    # Run twice: another worker process and this one find nothing more to refund.
    assert finish(worker()) == 0
    process_refunds(SETTLEMENT)
    process_refund(refund.pk, SETTLEMENT)
    assert SandboxRefund.objects.count() == 1 and GatewayRefund.objects.count() == 1


def test_payments_racing_a_slow_worker_never_leave_two_charges_kept(api):
    invoices = queued_retries(20)
    start_at = time.time() + 2
    # Two calls at a time, 100 ms each: the worker's charges and the payments interleave.
    proc = worker(latency_ms=100, start_at=start_at, concurrency=2)

    def pay_all():
        try:
            time.sleep(max(start_at - time.time(), 0) + 0.1)
            # From the last: the worker starts at the first, so the two meet in the middle.
            for invoice in reversed(invoices):
                pay_through_api(api, invoice, unless_settled=True)
                time.sleep(0.03)
        finally:
            connection.close()

    payer = threading.Thread(target=pay_all)
    payer.start()
    payer.join(timeout=120)
    finish(proc)
    finish(worker())  # and once more: nothing new is charged or refunded
    process_pending(SETTLEMENT)

    for invoice in invoices:
        invoice.refresh_from_db()
        assert invoice.status == Invoice.Status.PAID and invoice.amount_paid == Decimal("49.00")
        assert kept_per_invoice(invoice) == Decimal("49.00"), invoice.number
    assert not PaymentAttempt.objects.pending().exists()
    assert GatewayRefund.objects.exclude(status=GatewayRefund.Status.SUCCEEDED).count() == 0
    assert SandboxRefund.objects.count() == GatewayRefund.objects.count()
    assert not CustomerCredit.objects.exists()
    # Both interleavings happened: some retries were cancelled before the call, some charged.
    outcomes = set(PaymentAttempt.objects.filter(source="retry").values_list("outcome", flat=True))
    assert PaymentAttempt.Outcome.CANCELLED in outcomes and PaymentAttempt.Outcome.SUCCEEDED in outcomes
