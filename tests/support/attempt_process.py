"""A stand-alone payment worker for the close-versus-charge races: runs the payment-attempts job in
its own process (the gateway named by PAYMENT_GATEWAY in its environment) and prints how many
attempts it processed.

Usage: python tests/support/attempt_process.py [START_AT_EPOCH]
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.test_settings")

import django  # noqa: E402

django.setup()

from billing.attempts import process_pending  # noqa: E402
from dunning.payments import SETTLEMENT  # noqa: E402

if len(sys.argv) > 1:
    time.sleep(max(float(sys.argv[1]) - time.time(), 0))
print(process_pending(SETTLEMENT))
