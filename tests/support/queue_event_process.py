"""A stand-alone API client for the concurrency tests: posts one payment_failed event with an
Idempotency-Key to the API (in process, through Django's test client), in its own process.

Usage: python tests/support/queue_event_process.py START_AT_EPOCH API_KEY IDEMPOTENCY_KEY EVENT_ID INVOICE
Prints True when the event was accepted (202), False when it was refused (409: the key is taken).
"""

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.test_settings")

import django  # noqa: E402

django.setup()

from django.test import Client  # noqa: E402

start_at, api_key, idem_key, event_id, invoice = sys.argv[1:6]
client = Client()
body = json.dumps({"id": event_id, "type": "payment_failed", "invoice": invoice})
time.sleep(max(float(start_at) - time.time(), 0))
response = client.post("/api/v1/payment-events/", body, content_type="application/json",
                       HTTP_AUTHORIZATION=f"Bearer {api_key}", HTTP_IDEMPOTENCY_KEY=idem_key)
if response.status_code not in (202, 409):
    raise SystemExit(f"unexpected answer {response.status_code}: {response.content!r}")
print(response.status_code == 202)
