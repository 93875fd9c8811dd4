"""A stand-alone worker used by the concurrency tests: runs the due-steps job in its own process.

Usage: python tests/support/worker_process.py NOW_ISO START_AT_EPOCH
It waits until START_AT so that several processes start at the same moment, then prints the number
of steps it ran.
"""

import datetime
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.test_settings")

import django  # noqa: E402

django.setup()

from dunning import engine  # noqa: E402

now = datetime.datetime.fromisoformat(sys.argv[1])
start_at = float(sys.argv[2])
batch = int(sys.argv[3]) if len(sys.argv) > 3 else 100
time.sleep(max(start_at - time.time(), 0))
print(engine.run_due_steps(now, batch_size=batch))
