"""Settings for the test suite: the normal settings with test-friendly defaults.

DATABASE_URL still chooses the database (CI points it at PostgreSQL); without it the tests use
SQLite. Tests marked ``postgres`` are skipped on SQLite.
"""

import os

os.environ.setdefault("DEBUG", "true")
os.environ.setdefault("SECRET_KEY", "test-only-secret-key-0123456789-abcdefghijklmnopqrstuvwxyz")
os.environ.setdefault("Q_SYNC", "true")

from config.settings import *  # noqa: E402,F403
from config.settings import DATABASES, Q_CLUSTER  # noqa: E402

ALLOWED_HOSTS = ["testserver", "localhost", "127.0.0.1"]
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
Q_CLUSTER = {**Q_CLUSTER, "sync": True}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["TEST"] = {"NAME": ":memory:"}
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
# Quiet hours depend on the wall clock and each customer's time zone: off for the suite, so a test
# run at night does not hold messages back; tests of the rule turn them on (tests/test_notifications_policy.py).
NOTIFY_QUIET_HOURS = ""
# Each payment_failed event wakes the (synchronous) worker at its commit, so tests see it applied.
PAYMENT_EVENTS_WAKE_SECONDS = 0
