"""A stand-alone worker for the soak test: runs every job of a worker machine in a loop until killed.

Usage: python tests/support/soak_worker.py ESP_URL
Each pass runs the due campaign steps, the payment job, the outbox sender and the lease clean-up, in
small batches so that a kill lands in the middle of real work. Email goes through anymail's Postmark
backend to ESP_URL (tests.support.notifications.FakePostmark).
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.test_settings")

import django  # noqa: E402

django.setup()

from django.test.utils import override_settings  # noqa: E402

from billing.attempts import process_pending  # noqa: E402
from dunning import engine  # noqa: E402
from dunning.payments import SETTLEMENT  # noqa: E402
from notifications import services as outbox  # noqa: E402

esp_url = sys.argv[1]
with override_settings(EMAIL_BACKEND="anymail.backends.postmark.EmailBackend",
                       ANYMAIL={"POSTMARK_SERVER_TOKEN": "test-token", "POSTMARK_API_URL": esp_url}):
    print("ready", flush=True)
    while True:
        done = engine.run_due_steps(batch_size=50, max_batches=1)
        done += process_pending(SETTLEMENT, limit=20)
        done += outbox.send_queued(limit=20)
        outbox.release_stuck()
        if not done:
            time.sleep(0.1)
