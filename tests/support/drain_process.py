"""A stand-alone worker for the concurrency tests: applies pending payment events in its own process.

Usage: python tests/support/drain_process.py START_AT_EPOCH BATCH
It waits until START_AT so that several processes start together, then prints how many events it claimed.
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.test_settings")

import django  # noqa: E402

django.setup()

from integrations import events  # noqa: E402

start_at = float(sys.argv[1])
time.sleep(max(start_at - time.time(), 0))
print(events.drain(batch_size=int(sys.argv[2])))
