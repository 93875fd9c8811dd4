"""The outbox sender as real processes on PostgreSQL: killed inside or before its provider call, and two
senders racing over one customer's contact cap."""

from __future__ import annotations

import datetime
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import time_machine
from django.conf import settings
from django.core import mail
from django.utils import timezone

from notifications import services as outbox
from notifications.models import Notification
from tests.factories import CustomerFactory, MessageTemplateFactory, NotificationFactory
from tests.support.notifications import FakePostmark

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

ROOT = Path(__file__).resolve().parents[2]
AFTER_THE_LEASE = datetime.timedelta(seconds=settings.NOTIFY_SEND_LEASE_SECONDS + 60)


def start_senders(count: int, limit: int, esp: FakePostmark, mode: str = "send", **env) -> list[subprocess.Popen]:
    db = settings.DATABASES["default"]
    env = {
        **os.environ, **env,
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "DJANGO_SETTINGS_MODULE": "config.test_settings",
    }
    start_at = time.time() + 2
    return [
        subprocess.Popen([sys.executable, str(ROOT / "tests" / "support" / "sender_process.py"), str(start_at),
                          str(limit), esp.url, mode],
                         env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(count)
    ]


def wait_until(condition, timeout: float = 60) -> None:
    """Waits on another process (the only waiting here: the clock itself is frozen for the lease)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting for the sender process"
        time.sleep(0.05)


def kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)


def restart_after_the_lease() -> int:
    """What a restarted worker does once the dead sender's lease has run out (the clock moved, not slept)."""
    with time_machine.travel(timezone.now() + AFTER_THE_LEASE, tick=False):
        outbox.release_stuck()
        sent = outbox.send_queued()
        # Run again, later still: nothing more goes out.
        outbox.release_stuck()
        return sent + outbox.send_queued()


def test_a_sender_killed_inside_the_provider_call_leaves_one_unknown_and_sends_the_rest_once():
    MessageTemplateFactory()
    rows = [NotificationFactory(customer=CustomerFactory(email=f"k{i}@example.com")) for i in range(3)]
    with FakePostmark(hold=True) as esp:
        [proc] = start_senders(1, 10, esp)
        wait_until(lambda: len(esp.requests) == 1)  # the first message is in the provider's hands
        kill(proc)
    first = Notification.objects.get(pk=rows[0].pk)
    assert first.status == "sending" and first.attempted_at is not None
    assert [r.status for r in Notification.objects.filter(pk__in=[r.pk for r in rows[1:]])] == ["sending"] * 2

    assert restart_after_the_lease() == 2

    first.refresh_from_db()
    assert first.status == "unknown" and "not sent again automatically" in first.last_error
    assert [r["To"] for r in esp.requests] == ["k0@example.com"]
    # Never handed to the provider before the kill: sent exactly once afterwards.
    assert sorted(m.to[0] for m in mail.outbox) == ["k1@example.com", "k2@example.com"]
    assert Notification.objects.filter(status="sent").count() == 2


def test_a_sender_killed_after_its_claim_and_before_the_provider_call_is_sent_once_after_the_lease():
    MessageTemplateFactory()
    row = NotificationFactory(customer=CustomerFactory(email="b@example.com"))
    with FakePostmark() as esp:
        [proc] = start_senders(1, 10, esp, mode="claim")
        assert proc.stdout.readline().strip() == "claimed 1"
        kill(proc)
    row.refresh_from_db()
    assert row.status == "sending" and row.attempted_at is None
    assert outbox.release_stuck() == 0 and outbox.send_queued() == 0  # the lease still holds

    assert restart_after_the_lease() == 1

    row.refresh_from_db()
    assert row.status == "sent" and row.attempts == 1
    assert esp.requests == [] and [m.to for m in mail.outbox] == [["b@example.com"]]


def test_two_senders_over_one_customers_cap_send_one_message_and_defer_the_other():
    MessageTemplateFactory()
    customer = CustomerFactory(email="cap@example.com")
    rows = [NotificationFactory(customer=customer) for _ in range(2)]  # two causes: two contacts
    with FakePostmark(hold=True) as esp:
        procs = start_senders(2, 1, esp, NOTIFY_CONTACT_CAP="1", NOTIFY_CONTACT_CAP_DAYS="1")
        # One sender is in the provider call; the other must have decided meanwhile. A second
        # request would be the cap broken.
        wait_until(lambda: len(esp.requests) >= 2 or (len(esp.requests) == 1 and any(
            p.poll() is not None for p in procs)))
        esp.release()
        outputs = [p.communicate(timeout=60) for p in procs]
    for proc, (_out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err
    assert sorted(int(out.strip()) for out, _err in outputs) == [0, 1]
    assert len(esp.requests) == 1
    sent, deferred = sorted(Notification.objects.filter(pk__in=[r.pk for r in rows]), key=lambda r: r.status != "sent")
    assert sent.status == "sent"
    assert deferred.status == "queued" and "contact cap reached (1 per 1 days)" in deferred.last_error
    assert deferred.send_after > sent.sent_at + datetime.timedelta(hours=23)
