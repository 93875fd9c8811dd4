"""Soak: 2,000 due cases worked by 3 worker processes, one of them SIGKILLed every 2 seconds and
replaced, while staff mark invoices paid at random moments. At the end every case is closed, every
step ran once, every message went out at most once (its fate unknown only for a message a killed
sender was handing over), nothing was left behind, and no invoice paid by staff was charged.

Bounded to two minutes; runs in CI on PostgreSQL (``.ci/run``)."""

from __future__ import annotations

import datetime
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from decimal import Decimal
from pathlib import Path

import pytest
from django.conf import settings
from django.db.models import Count
from django.utils import timezone

from billing.models import GatewayRefund, Invoice, PaymentAttempt, SandboxCharge, SandboxRefund
from customers.models import Customer, PaymentMethod
from dunning.errors import DunningError
from dunning.models import CampaignStep, CaseEvent, DunningCase
from dunning.receipts import mark_paid
from notifications.defaults import load_default_templates
from notifications.models import Notification
from tests.factories import CampaignFactory, RetryPolicyFactory
from tests.support.notifications import FakePostmark

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

ROOT = Path(__file__).resolve().parents[2]
N = 2000
WORKERS = 3
KILL_EVERY = 2.0
KILL_FOR = 40.0  # seconds of kills; then the leases of the last victims run out (30 s) and the rest drains
BOUND = 120.0
LEASE = 30


def make_due_cases(now: datetime.datetime) -> None:
    load_default_templates()
    campaign = CampaignFactory(name="Soak")
    RetryPolicyFactory(campaign=campaign, local_hour=None)
    first = CampaignStep.objects.create(campaign=campaign, position=1, action="email", template_code="reminder",
                                        channels=["email"])
    CampaignStep.objects.create(campaign=campaign, position=2, action="retry")
    CampaignStep.objects.create(campaign=campaign, position=3, action="final_notice", template_code="final_notice",
                                channels=["email"])
    CampaignStep.objects.create(campaign=campaign, position=4, action="mark_uncollectible")
    customers = Customer.objects.bulk_create(
        Customer(external_id=f"s{i}", name=f"Soak {i}", email=f"s{i}@example.com") for i in range(N)
    )
    # Half the cards pay at the retry; the other half are declined for good (no smart retries follow).
    PaymentMethod.objects.bulk_create(
        PaymentMethod(customer=c, token=("tok_ok" if i % 2 else "tok_stolen_card") + f":{c.pk}", is_default=True)
        for i, c in enumerate(customers)
    )
    invoices = Invoice.objects.bulk_create(
        Invoice(external_id=f"i{c.pk}", number=f"N{c.pk}", customer=c, currency="USD", amount_due=Decimal("10"),
                issued_at=now.date(), due_date=now.date())
        for c in customers
    )
    DunningCase.objects.bulk_create(
        DunningCase(invoice=inv, customer_id=inv.customer_id, campaign=campaign, failed_at=now,
                    next_step=first, next_action_at=now)
        for inv in invoices
    )


def all_done() -> bool:
    return (not DunningCase.objects.filter(status=DunningCase.Status.ACTIVE).exists()
            and not Notification.objects.filter(status__in=[Notification.Status.QUEUED,
                                                            Notification.Status.SENDING]).exists()
            and not PaymentAttempt.objects.filter(outcome=PaymentAttempt.Outcome.PENDING).exists())


def test_killed_workers_lose_nothing_double_nothing_and_charge_no_paid_invoice():
    now = timezone.now() - datetime.timedelta(minutes=1)
    make_due_cases(now)
    db = settings.DATABASES["default"]
    env = {
        **os.environ,
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "DJANGO_SETTINGS_MODULE": "config.test_settings",
        "PAYMENT_ATTEMPT_LEASE_SECONDS": str(LEASE),
        "NOTIFY_SEND_LEASE_SECONDS": str(LEASE),
        "PAYMENT_GATEWAY_CONCURRENCY": "4",
    }
    rng = random.Random(14)
    paid_by_staff: set[int] = set()
    kills = 0
    with FakePostmark() as esp:
        def start():
            return subprocess.Popen([sys.executable, str(ROOT / "tests" / "support" / "soak_worker.py"), esp.url],
                                    env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

        workers = [start() for _ in range(WORKERS)]
        started = time.monotonic()
        next_kill = started + KILL_EVERY
        try:
            while time.monotonic() - started < BOUND:
                elapsed = time.monotonic() - started
                if elapsed < KILL_FOR and time.monotonic() >= next_kill:
                    victim = workers.pop(rng.randrange(len(workers)))
                    victim.send_signal(signal.SIGKILL)
                    victim.wait()
                    kills += 1
                    workers.append(start())
                    next_kill += KILL_EVERY
                for w in workers:
                    assert w.poll() is None, f"a worker died on its own: {w.stderr.read()[-3000:]}"
                # Staff mark a few open invoices paid while the workers run: at any moment of a case.
                if elapsed < KILL_FOR:
                    # Half the time a case whose retry is queued and not yet charged: the moment a
                    # payment job could charge an invoice that was just paid.
                    cases = DunningCase.objects.filter(status=DunningCase.Status.ACTIVE)
                    if rng.random() < 0.5:
                        cases = cases.filter(invoice__attempts__outcome=PaymentAttempt.Outcome.PENDING)
                    open_case = cases.order_by("?").first()
                    if open_case is not None and len(paid_by_staff) < 200:
                        try:
                            mark_paid(open_case, reference="soak")
                            paid_by_staff.add(open_case.invoice_id)
                        except DunningError:
                            pass  # closed meanwhile by a worker
                elif all_done():
                    break
                time.sleep(0.2)
        finally:
            for w in workers:
                w.send_signal(signal.SIGKILL)
                w.wait()
        requests = list(esp.requests)

    assert kills >= 15
    assert all_done(), "work left after two minutes"
    assert len(paid_by_staff) >= 50

    # Every case closed: paid at the retry, by staff, or exhausted after the final notice.
    statuses = Counter(DunningCase.objects.values_list("status", flat=True))
    assert sum(statuses.values()) == N and set(statuses) <= {"recovered", "exhausted"}, statuses

    # Each step ran once per case: no timeline entry of a step written twice.
    per_step = (CaseEvent.objects.filter(step__isnull=False).values("case_id", "step_id", "kind")
                .annotate(n=Count("id")).filter(n__gt=1))
    assert not per_step.exists(), list(per_step[:5])

    # One message per (case, template); none left queued or sending; unknown only where a sender died.
    rows = Notification.objects.exclude(status=Notification.Status.CANCELLED)
    dupes = rows.values("reference", "template_code").annotate(n=Count("id")).filter(n__gt=1)
    assert not dupes.exists(), list(dupes[:5])
    unknown = rows.filter(status=Notification.Status.UNKNOWN).count()
    assert unknown <= kills
    others = rows.exclude(status__in=[Notification.Status.SENT, Notification.Status.UNKNOWN])
    assert not others.exists(), list(others.values("status", "last_error")[:3])
    # Handed to the provider at most once each: a message is never sent twice.
    handed = Counter((r["To"], r["Subject"]) for r in requests)
    assert max(handed.values()) == 1, handed.most_common(3)
    sent = rows.filter(status=Notification.Status.SENT).count()
    assert sent <= len(requests) <= sent + unknown
    # A reminder queued for every customer not paid up first (cancelled if the retry paid before it
    # went out); the final notice to every exhausted case.
    assert Notification.objects.filter(template_code="reminder").count() >= N - len(paid_by_staff)
    exhausted = set(DunningCase.objects.filter(status="exhausted").values_list("pk", flat=True))
    noticed = {int(ref.split(":")[1]) for ref in
               rows.filter(template_code="final_notice").values_list("reference", flat=True)}
    missing = sorted(exhausted - noticed)[:3]
    assert exhausted and not missing, [
        (pk, list(Notification.objects.filter(reference=f"case:{pk}").values_list("template_code", "status",
                                                                                    "last_error")),
         list(CaseEvent.objects.filter(case_id=pk).values_list("kind", flat=True))) for pk in missing]

    # One retry per case, each key charged at most once by the gateway.
    retries = (PaymentAttempt.objects.filter(source=PaymentAttempt.Source.RETRY).values("invoice_id")
               .annotate(n=Count("id")).filter(n__gt=1))
    assert not retries.exists(), list(retries[:5])
    # No invoice that staff marked paid was charged afterwards, unless the charge was already at the
    # gateway when staff marked it paid: then it is refunded, exactly once, for the whole amount.
    charges = {c.idempotency_key: c for c in SandboxCharge.objects.filter(succeeded=True)}
    late = PaymentAttempt.objects.filter(invoice_id__in=paid_by_staff, idempotency_key__in=set(charges),
                                         source=PaymentAttempt.Source.RETRY)
    refunds = Counter(SandboxRefund.objects.values_list("charge_reference", flat=True))
    for attempt in late:
        charge = charges[attempt.idempotency_key]
        assert attempt.tries > 0 and refunds[charge.reference] == 1, (attempt.pk, attempt.tries)
        refund = GatewayRefund.objects.get(attempt=attempt)
        assert refund.status == GatewayRefund.Status.SUCCEEDED and refund.amount == charge.amount
    assert sum(refunds.values()) == late.count()  # nothing else was refunded
