"""A stand-alone API writer for the concurrency tests: queues one payment_failed event with its
Idempotency-Key record in one statement, in its own process.

Usage: python tests/support/queue_event_process.py START_AT_EPOCH API_KEY_ID IDEMPOTENCY_KEY EVENT_ID INVOICE
Prints True when it stored the event, False when the ordinary path must answer.
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.test_settings")

import django  # noqa: E402

django.setup()

from integrations import events  # noqa: E402
from integrations.models import ApiKey  # noqa: E402

start_at, key_id, idem_key, event_id, invoice = sys.argv[1:6]
api_key = ApiKey.objects.get(pk=int(key_id))
event = events.pending_failure(event_id, {"invoice": invoice}, api_key)
claim = events.Claim(idem_key, f"hash-of-{event_id}", "POST", "/api/v1/payment-events/")
time.sleep(max(float(start_at) - time.time(), 0))
print(events.queue_failure_with_key(event, claim, {"id": event_id, "status": "pending"}) is not None)
