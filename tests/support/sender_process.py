"""A stand-alone outbox sender for the crash and cap tests: runs notifications.services in its own process.

Usage: python tests/support/sender_process.py START_AT_EPOCH LIMIT ESP_URL [send|claim]
Email goes through anymail's Postmark backend to ESP_URL (tests.support.notifications.FakePostmark).
It waits until START_AT so that several processes start together. ``send`` runs one batch of the
sender and prints how many messages it sent; ``claim`` only leases a batch, prints "claimed N" and
waits to be killed (a sender that dies before its first provider call).
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.test_settings")

import django  # noqa: E402

django.setup()

from django.test.utils import override_settings  # noqa: E402
from django.utils import timezone  # noqa: E402

from notifications import services as outbox  # noqa: E402

start_at, limit, esp_url = float(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
mode = sys.argv[4] if len(sys.argv) > 4 else "send"
time.sleep(max(start_at - time.time(), 0))
with override_settings(EMAIL_BACKEND="anymail.backends.postmark.EmailBackend",
                       ANYMAIL={"POSTMARK_SERVER_TOKEN": "test-token", "POSTMARK_API_URL": esp_url}):
    if mode == "claim":
        print("claimed", len(outbox.claim_queued(timezone.now(), limit, worker=outbox.worker_id())), flush=True)
        time.sleep(600)
    else:
        print(outbox.send_queued(limit=limit), flush=True)
