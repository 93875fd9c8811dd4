"""Gateway calls run concurrently within one worker: bounded, rate limited, outside database locks."""

from __future__ import annotations

import threading
import time
from decimal import Decimal

import pytest
from django.db import connections
from django.test import override_settings

from billing.attempts import process_pending
from billing.gateways import ChargeRequest, ChargeResult
from billing.gateways.pool import GatewayPool, RateLimiter
from billing.gateways.sandbox import SandboxGateway
from billing.models import PaymentAttempt
from dunning.cases import open_case
from dunning.models import DunningCase
from dunning.payments import SETTLEMENT
from tests.factories import CampaignFactory, CampaignStepFactory, InvoiceFactory, PaymentMethodFactory


class FakeClock:
    def __init__(self):
        self.now = 0.0
        self.slept = []

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.slept.append(seconds)
        self.now += seconds


def test_rate_limiter_lets_a_burst_through_then_holds_to_the_rate():
    clock = FakeClock()
    limiter = RateLimiter(10, clock=clock, sleep=clock.sleep)
    starts = []
    for _ in range(30):
        limiter.acquire()
        starts.append(clock.now)
    assert starts[:10] == [0.0] * 10  # the bucket starts full
    assert starts[-1] == pytest.approx(2.0)  # 20 more at 10 a second
    assert all(b - a == pytest.approx(0.1) for a, b in zip(starts[10:], starts[11:], strict=False))


def test_rate_limiter_refills_while_idle_and_zero_means_no_limit():
    clock = FakeClock()
    limiter = RateLimiter(5, clock=clock, sleep=clock.sleep)
    for _ in range(5):
        limiter.acquire()
    clock.now += 1.0
    assert [limiter.acquire() for _ in range(5)] == [0.0] * 5
    assert limiter.acquire() == pytest.approx(0.2)
    unlimited = RateLimiter(0, clock=clock, sleep=clock.sleep)
    assert [unlimited.acquire() for _ in range(1000)] == [0.0] * 1000


class SlowGateway(SandboxGateway):
    """A processor that takes its time: counts the calls in flight, and checks that no row of the
    attempt is locked by us while the call is out (another connection may lock it at once)."""

    lock = threading.Lock()
    in_flight = 0
    most = 0
    locked_during_call = []
    calls = []

    def charge(self, request: ChargeRequest) -> ChargeResult:
        cls = type(self)
        with cls.lock:
            cls.in_flight += 1
            cls.most = max(cls.most, cls.in_flight)
            cls.calls.append(request.idempotency_key)
        try:
            attempt_id = int(request.metadata["attempt"])
            with connections["default"].cursor() as cur:
                cur.execute("BEGIN")
                cur.execute("SELECT id FROM billing_paymentattempt WHERE id = %s FOR UPDATE NOWAIT", [attempt_id])
                cur.execute("SELECT id FROM billing_invoice WHERE id = (SELECT invoice_id FROM "
                            "billing_paymentattempt WHERE id = %s) FOR UPDATE NOWAIT", [attempt_id])
                cur.execute("ROLLBACK")
        except Exception as exc:  # a lock held by the job during the call
            cls.locked_during_call.append(repr(exc))
        time.sleep(0.2)
        try:
            return super().charge(request)
        finally:
            with cls.lock:
                cls.in_flight -= 1


@pytest.fixture
def slow_gateway():
    SlowGateway.in_flight = SlowGateway.most = 0
    SlowGateway.locked_during_call = []
    SlowGateway.calls = []
    with override_settings(PAYMENT_GATEWAY="tests.billing.gateways.test_pool.SlowGateway"):
        yield SlowGateway


def make_pending(n: int) -> list[PaymentAttempt]:
    CampaignStepFactory(campaign=CampaignFactory(), offset_days=30)
    attempts = []
    for i in range(n):
        invoice = InvoiceFactory(amount_due=Decimal("20.00"))
        method = PaymentMethodFactory(customer=invoice.customer, token=f"tok_ok:{i}")
        open_case(invoice)
        attempts.append(PaymentAttempt.objects.create(invoice=invoice, payment_method=method, amount=invoice.amount_due,
                                                      currency=invoice.currency, idempotency_key=f"pool:{i}"))
    return attempts


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@override_settings(PAYMENT_GATEWAY_CONCURRENCY=4, PAYMENT_GATEWAY_RATE_PER_SECOND=0)
def test_one_worker_makes_up_to_the_pool_size_of_calls_at_once_each_settled_once(slow_gateway):
    attempts = make_pending(10)
    started = time.monotonic()
    assert process_pending(SETTLEMENT) == 10
    elapsed = time.monotonic() - started
    assert slow_gateway.most == 4  # concurrent, and never more than the pool
    assert sorted(slow_gateway.calls) == sorted(a.idempotency_key for a in attempts)  # each key sent once
    assert slow_gateway.locked_during_call == []  # no lock of ours held across a call
    assert elapsed < 10 * 0.2  # not one at a time (10 calls of 0.2 s)
    assert PaymentAttempt.objects.filter(outcome=PaymentAttempt.Outcome.SUCCEEDED).count() == 10
    assert DunningCase.objects.filter(status=DunningCase.Status.RECOVERED).count() == 10
    assert process_pending(SETTLEMENT) == 0  # run again: nothing is charged twice
    assert len(slow_gateway.calls) == 10


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@override_settings(PAYMENT_GATEWAY_CONCURRENCY=8, PAYMENT_GATEWAY_RATE_PER_SECOND=5)
def test_the_rate_limit_caps_how_many_calls_start_per_second(slow_gateway):
    make_pending(10)
    started = time.monotonic()
    process_pending(SETTLEMENT)
    # A burst of 5, then 5 more at 5 a second: the last starts about a second after the first.
    assert time.monotonic() - started >= 0.9
    assert len(slow_gateway.calls) == 10


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_the_pool_closes_the_connections_its_threads_opened():
    with GatewayPool("sandbox", size=3) as pool:
        pids = {f.result() for f in [pool.submit(_backend_pid) for _ in range(6)]}
    assert pids and _backend_pid() not in pids  # the threads had connections of their own
    # All closed when the pool closed (a backend leaves pg_stat_activity a moment after its client).
    deadline = time.monotonic() + 5
    while _open_backends(pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _open_backends(pids) == 0


def _open_backends(pids) -> int:
    with connections["default"].cursor() as cur:
        cur.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(%s)", [list(pids)])
        return cur.fetchone()[0]


def _backend_pid() -> int:
    with connections["default"].cursor() as cur:
        cur.execute("SELECT pg_backend_pid()")
        return cur.fetchone()[0]


@pytest.mark.django_db
def test_inside_a_transaction_calls_run_inline_in_the_callers_thread():
    with GatewayPool("sandbox", size=5) as pool:
        assert pool.inline
        assert pool.submit(threading.get_ident).result() == threading.get_ident()
