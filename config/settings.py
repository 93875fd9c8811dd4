"""Settings for the dunning back office.

Everything that differs between a laptop and production comes from the environment (or a ``.env``
file beside manage.py, which real environment variables override). The defaults need nothing but
Python: SQLite, the django-q2 ORM broker, the file email backend and the sandbox payment gateway.
See docs/configuration.md for every variable.
"""

from __future__ import annotations

import os
import re
from datetime import timedelta
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured
from django.utils.translation import gettext_lazy as _

from core.env import (
    env_bool,
    env_choice,
    env_decimal,
    env_int,
    env_list,
    env_str,
    load_dotenv,
)

BASE_DIR = Path(__file__).resolve().parent.parent
load_dotenv(BASE_DIR / ".env")

DEBUG = env_bool("DEBUG", False)

SECRET_KEY = env_str("SECRET_KEY")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY must be set when DEBUG is off (see docs/configuration.md)")
    SECRET_KEY = "dev-only-insecure-key-" + "x" * 40
SECRET_KEY_FALLBACKS = env_list("SECRET_KEY_FALLBACKS", [])

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost"] if DEBUG else [])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])
# Absolute base URL used in emails and SMS (portal links, tracking pixels). Unset, it is where the
# development server listens: `make run HOST=... PORT=...` passes both (runall hands SITE_URL on).
SITE_URL = (
    env_str("SITE_URL") or f"http://{env_str('HOST', '127.0.0.1')}:{env_int('PORT', 8000, minimum=1, maximum=65535)}"
).rstrip("/")

INSTALLED_APPS = [
    "core.apps.AdminConfig",  # django.contrib.admin with the back office's site
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_q",
    "anymail",
    "import_export",
    "phonenumber_field",
    "core",
    "customers",
    "billing",
    "notifications",
    "dunning",
    "reports",
    "integrations",
    "axes",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    # Last: turns a locked-out login into the lock-out page (AXES_LOCKOUT_TEMPLATE).
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"
ASGI_APPLICATION = "config.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "django.template.context_processors.i18n",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------------
# DATABASE_URL selects the database (postgres://user@host:5432/name); SQLite by default.
DATABASE_URL = env_str("DATABASE_URL", f"sqlite:///{BASE_DIR / 'var' / 'db.sqlite3'}")
try:
    _db = environ.Env.db_url_config(DATABASE_URL)
except Exception as exc:  # environ raises several types for a malformed URL
    raise ImproperlyConfigured(f"DATABASE_URL={DATABASE_URL!r} is not a valid database URL: {exc}") from exc
if _db["ENGINE"] == "django.db.backends.sqlite3":
    Path(_db["NAME"]).parent.mkdir(parents=True, exist_ok=True) if _db["NAME"] != ":memory:" else None
    _db.setdefault("OPTIONS", {})
    # Several worker processes share the file: wait for the write lock instead of failing at once.
    _db["OPTIONS"].update({"timeout": 20, "transaction_mode": "IMMEDIATE", "init_command": "PRAGMA journal_mode=WAL;"})
else:
    _db["CONN_MAX_AGE"] = env_int("CONN_MAX_AGE", 60, minimum=0)
    _db["CONN_HEALTH_CHECKS"] = True
    # The psycopg pool must not be created before django-q2 forks its workers: keep it for web
    # processes only (DB_POOL=true in the web service's environment, never in qcluster's).
    if env_bool("DB_POOL", False):
        _db["CONN_MAX_AGE"] = 0
        _db.setdefault("OPTIONS", {})["pool"] = {"min_size": 2, "max_size": env_int("DB_POOL_MAX", 10, minimum=1)}
DATABASES = {"default": _db}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Cache (rate limits, import progress) ---------------------------------------------------
REDIS_URL = env_str("REDIS_URL")
if REDIS_URL:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}}
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# --- Background workers (django-q2) ---------------------------------------------------------
Q_CLUSTER = {
    "name": "dunning",
    "workers": env_int("Q_WORKERS", 2, minimum=1),
    # A task may run up to `timeout` seconds; `retry` must exceed it or a running task is handed out
    # again. Every task is idempotent anyway (claimed rows, idempotency keys).
    "timeout": env_int("Q_TIMEOUT", 240, minimum=10),
    "retry": env_int("Q_RETRY", 300, minimum=20),
    "max_attempts": 5,
    "catch_up": False,
    "save_limit": 1000,
    "ack_failures": True,
    "sync": env_bool("Q_SYNC", False),
    "label": "Background tasks",
}
if Q_CLUSTER["retry"] <= Q_CLUSTER["timeout"]:
    raise ImproperlyConfigured("Q_RETRY must be larger than Q_TIMEOUT (see django-q2 docs)")
if REDIS_URL and env_bool("Q_USE_REDIS", True):
    Q_CLUSTER["redis"] = REDIS_URL
else:
    Q_CLUSTER["orm"] = "default"

# --- Auth, i18n -----------------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# Staff sign-in is refused while locked out (django-axes; docs/security.md): the axes backend first.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
# Locked out after this many failed sign-ins for one username from one client address within the
# cool-off, and every username from an address after AXES_ADDRESS_FAILURE_LIMIT failures (0: off).
AXES_FAILURE_LIMIT = env_int("AXES_FAILURE_LIMIT", 5, minimum=1)
AXES_ADDRESS_FAILURE_LIMIT = env_int("AXES_ADDRESS_FAILURE_LIMIT", 20, minimum=0)
if AXES_ADDRESS_FAILURE_LIMIT and AXES_ADDRESS_FAILURE_LIMIT < AXES_FAILURE_LIMIT:
    raise ImproperlyConfigured("AXES_ADDRESS_FAILURE_LIMIT must be 0 (off) or at least AXES_FAILURE_LIMIT")
AXES_COOLOFF_MINUTES = env_int("AXES_COOLOFF_MINUTES", 15, minimum=1)
AXES_COOLOFF_TIME = timedelta(minutes=AXES_COOLOFF_MINUTES)
AXES_LOCKOUT_PARAMETERS = "reports.staff_login.lockout_parameters"
AXES_CLIENT_IP_CALLABLE = "dunning.portal.access.client_ip"
AXES_LOCKOUT_CALLABLE = "reports.staff_login.locked_out"
AXES_RESET_ON_SUCCESS = True
AXES_ENABLE_ACCESS_FAILURE_LOG = True
AXES_ENABLE_ADMIN = False  # registered by reports/admin.py
LANGUAGE_CODE = "en"
LANGUAGES = [
    ("en", _("English")),
    ("es", _("Spanish")),
    ("it", _("Italian")),
    ("ja", _("Japanese")),
    ("uk", _("Ukrainian")),
]
LOCALE_PATHS = [BASE_DIR / "locale"]
TIME_ZONE = env_str("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

# --- Static files ---------------------------------------------------------------------------
STATIC_URL = "/static/"
STATIC_ROOT = Path(env_str("STATIC_ROOT", str(BASE_DIR / "var" / "staticfiles")))
STATICFILES_DIRS = [BASE_DIR / "static"]
MEDIA_ROOT = Path(env_str("MEDIA_ROOT", str(BASE_DIR / "var" / "media")))
MEDIA_URL = "/media/"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if not DEBUG
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}

# --- Email ----------------------------------------------------------------------------------
# Default: messages are written as files under var/mail (nothing leaves the machine). Production:
# EMAIL_BACKEND=anymail.backends.<esp>.EmailBackend with the ESP's ANYMAIL_* variables.
EMAIL_BACKEND = env_str("EMAIL_BACKEND", "django.core.mail.backends.filebased.EmailBackend")
EMAIL_FILE_PATH = env_str("EMAIL_FILE_PATH", str(BASE_DIR / "var" / "mail"))
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "Billing <billing@example.com>")
SERVER_EMAIL = env_str("SERVER_EMAIL", DEFAULT_FROM_EMAIL)
ANYMAIL = {
    key[len("ANYMAIL_"):]: value
    for key, value in os.environ.items()
    if key.startswith("ANYMAIL_") and value
}

# Adds the signed portal links to a message's merge data when it is sent.
NOTIFICATION_LINK_BUILDER = "dunning.links.message_links"
# Shows those links to staff in the outbox: working (minted in the staff member's name) only with the
# "send portal link" permission, a placeholder otherwise.
NOTIFICATION_LINK_MASK = "dunning.links.link_mask"

# --- Payments -------------------------------------------------------------------------------
PAYMENT_GATEWAY = env_str("PAYMENT_GATEWAY", "billing.gateways.sandbox.SandboxGateway")
# Stripe (docs/payments.md). Empty keys: the Stripe gateway and webhook endpoint are unusable.
STRIPE_API_KEY = env_str("STRIPE_API_KEY", "")
STRIPE_WEBHOOK_SECRET = env_str("STRIPE_WEBHOOK_SECRET", "")
STRIPE_PUBLISHABLE_KEY = env_str("STRIPE_PUBLISHABLE_KEY", "")
STRIPE_API_BASE = env_str("STRIPE_API_BASE", "https://api.stripe.com")
STRIPE_TIMEOUT_SECONDS = env_int("STRIPE_TIMEOUT_SECONDS", 30, minimum=1)
STRIPE_WEBHOOK_TOLERANCE_SECONDS = env_int("STRIPE_WEBHOOK_TOLERANCE_SECONDS", 300, minimum=1)
# Smart retries (docs/payments.md): class of a decline no rule knows, and network limits per card.
DECLINE_DEFAULT_CLASS = env_choice("DECLINE_DEFAULT_CLASS", "soft", {"soft", "retry_soon", "needs_new_method", "hard"})
RETRY_LIMIT_VISA_30D = env_int("RETRY_LIMIT_VISA_30D", 20, minimum=1)
RETRY_LIMIT_VISA_30D_BEFORE_2025_05 = env_int("RETRY_LIMIT_VISA_30D_BEFORE_2025_05", 15, minimum=1)
RETRY_LIMIT_MASTERCARD_24H = env_int("RETRY_LIMIT_MASTERCARD_24H", 10, minimum=1)
RETRY_LIMIT_MASTERCARD_30D = env_int("RETRY_LIMIT_MASTERCARD_30D", 35, minimum=1)
# Pre-dunning: "update your card" reminders this many days before a card expires (largest = window),
# and an optional reminder N days before an invoice without automatic payment is due (0: off).
try:
    CARD_EXPIRY_REMINDER_DAYS = sorted({int(d) for d in env_list("CARD_EXPIRY_REMINDER_DAYS", ["30", "7"])})
except ValueError:
    raise ImproperlyConfigured("CARD_EXPIRY_REMINDER_DAYS must be comma-separated whole days, e.g. 30,7") from None
if any(d < 1 or d > 120 for d in CARD_EXPIRY_REMINDER_DAYS):
    raise ImproperlyConfigured("CARD_EXPIRY_REMINDER_DAYS: each value must be between 1 and 120 days")
INVOICE_DUE_REMINDER_DAYS = env_int("INVOICE_DUE_REMINDER_DAYS", 0, minimum=0, maximum=60)

# --- The merchant, shown in messages and the portal -----------------------------------------
MERCHANT_NAME = env_str("MERCHANT_NAME", "Acme Cloud")
MERCHANT_SUPPORT_EMAIL = env_str("MERCHANT_SUPPORT_EMAIL", "support@example.com")
MERCHANT_BRAND_COLOR = env_str("MERCHANT_BRAND_COLOR", "#1f4fd1")

# --- Notifications: SMS, respect rules, outbound webhooks (docs/notifications.md) -----------
# SMS backend by dotted path: the console backend writes messages to the log and to var/sms.
SMS_BACKEND = env_str("SMS_BACKEND", "notifications.sms.console.ConsoleSmsBackend")
SMS_FILE_PATH = env_str("SMS_FILE_PATH", str(BASE_DIR / "var" / "sms"))
TWILIO_ACCOUNT_SID = env_str("TWILIO_ACCOUNT_SID", "")
TWILIO_AUTH_TOKEN = env_str("TWILIO_AUTH_TOKEN", "")
TWILIO_FROM_NUMBER = env_str("TWILIO_FROM_NUMBER", "")
TWILIO_MESSAGING_SERVICE_SID = env_str("TWILIO_MESSAGING_SERVICE_SID", "")
# Only for tests and Twilio-compatible gateways: where the SDK sends its API requests.
TWILIO_API_BASE_URL = env_str("TWILIO_API_BASE_URL", "")
PHONENUMBER_DEFAULT_REGION = env_str("PHONENUMBER_DEFAULT_REGION", None)
# Quiet hours in the customer's own time zone ("21:00-08:00"; empty turns them off).
NOTIFY_QUIET_HOURS = env_str("NOTIFY_QUIET_HOURS", "21:00-08:00", empty_means_off=True).strip()
# Contact cap: at most N contacts per rolling window of days per customer (0 turns it off).
NOTIFY_CONTACT_CAP = env_int("NOTIFY_CONTACT_CAP", 3, minimum=0)
NOTIFY_CONTACT_CAP_DAYS = env_int("NOTIFY_CONTACT_CAP_DAYS", 7, minimum=1)
# Messages the customer asked for or expects at once (receipts, a new portal link, a support
# acknowledgement): sent at any hour, never capped nor counted, not stopped by a reminder opt-out.
NOTIFY_TRANSACTIONAL_CODES = env_list(
    "NOTIFY_TRANSACTIONAL_CODES",
    ["receipt", "payment_receipt", "payment_succeeded", "payment_recovered", "portal_link", "support_ack", "test"],
)
# Legally required notices: sent despite an email/in-app opt-out and the contact cap (never to an
# SMS number that replied STOP, never outside quiet hours). See docs/notifications.md.
NOTIFY_LEGAL_NOTICE_CODES = env_list("NOTIFY_LEGAL_NOTICE_CODES", ["final_notice", "suspended"])
# When a channel cannot be used (opted out, bounced, no address), the first usable one in this order.
NOTIFY_FALLBACK_ORDER = env_list("NOTIFY_FALLBACK_ORDER", ["email", "sms", "inapp"])
# The sender's lease on the rows it claims (docs/notifications.md, "Delivery guarantees"): a row held
# longer by a worker that stopped goes back to the queue, or becomes "unknown" if its provider call
# had started. Longer than one batch takes to send.
NOTIFY_SEND_LEASE_SECONDS = env_int("NOTIFY_SEND_LEASE_SECONDS", 300, minimum=30)
WEBHOOK_MAX_ATTEMPTS = env_int("WEBHOOK_MAX_ATTEMPTS", 10, minimum=1, maximum=30)
WEBHOOK_TIMEOUT_SECONDS = env_int("WEBHOOK_TIMEOUT_SECONDS", 10, minimum=1, maximum=60)

# --- Dunning engine -------------------------------------------------------------------------
DUNNING_BATCH_SIZE = env_int("DUNNING_BATCH_SIZE", 500, minimum=1, maximum=10000)
# How long a claimed payment attempt is leased to one worker before another may reconcile it.
PAYMENT_ATTEMPT_LEASE_SECONDS = env_int("PAYMENT_ATTEMPT_LEASE_SECONDS", 300, minimum=30)
# Gateway calls in flight at once per worker process, and started per second per gateway per worker
# process (billing/gateways/pool.py; docs/payments.md). 0 turns the rate limit off.
PAYMENT_GATEWAY_CONCURRENCY = env_int("PAYMENT_GATEWAY_CONCURRENCY", 20, minimum=1, maximum=200)
PAYMENT_GATEWAY_RATE_PER_SECOND = env_int("PAYMENT_GATEWAY_RATE_PER_SECOND", 80, minimum=0, maximum=10000)
# The sandbox gateway answers after this many milliseconds (race tests; 0 in demos).
SANDBOX_GATEWAY_LATENCY_MS = env_int("SANDBOX_GATEWAY_LATENCY_MS", 0, minimum=0, maximum=60000)
# A charge whose success arrives after its invoice was settled another way (docs/payments.md):
# "refund" gives it back through the gateway; "hold" keeps it as customer credit and asks staff.
LATE_CHARGE_POLICY = env_choice("LATE_CHARGE_POLICY", "refund", {"refund", "hold"})
# One reminder per customer and step listing every invoice in dunning (docs/contacts.md).
DUNNING_CONSOLIDATE_MESSAGES = env_bool("DUNNING_CONSOLIDATE_MESSAGES", True)

# --- Late fees and privacy (docs/fees.md, docs/privacy.md) ----------------------------------
# EU late payment preset: statutory interest = this reference rate (ECB main refinancing rate, %) + 8.
FEES_EU_REFERENCE_RATE = env_decimal("FEES_EU_REFERENCE_RATE", "2.15")
FEES_EU_FIXED_FEE = env_decimal("FEES_EU_FIXED_FEE", "40.00")
# Message bodies, merge data and tracking rows older than this many days are removed.
RETENTION_DAYS = env_int("RETENTION_DAYS", 400, minimum=1)

# --- Customer portal (docs/portal.md) -------------------------------------------------------
# How long a portal link in a message stays valid; a newer link can always be requested.
PORTAL_LINK_MAX_AGE_DAYS = env_int("PORTAL_LINK_MAX_AGE_DAYS", 14, minimum=1, maximum=365)
# Token-less portal pages (asking for a fresh link): requests per client address per window.
PORTAL_RATE_LIMIT = env_int("PORTAL_RATE_LIMIT", 10, minimum=1)
PORTAL_RATE_WINDOW_SECONDS = env_int("PORTAL_RATE_WINDOW_SECONDS", 900, minimum=10)
# Card-testing protection: card submissions per customer and per client address per window.
PORTAL_CARD_LIMIT = env_int("PORTAL_CARD_LIMIT", 5, minimum=1)
PORTAL_CARD_LIMIT_PER_ADDRESS = env_int("PORTAL_CARD_LIMIT_PER_ADDRESS", 10, minimum=1)
PORTAL_CARD_WINDOW_SECONDS = env_int("PORTAL_CARD_WINDOW_SECONDS", 3600, minimum=60)

# --- REST framework -------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Dunning back office API",
    "VERSION": "1.0.0",
}
# The /api/v1/ settings (authentication, throttling, idempotency) live in integrations/api/settings.py.
from integrations.api.settings import api_rest_framework, api_spectacular  # noqa: E402

REST_FRAMEWORK.update(api_rest_framework())
# Proxies in front of the app that append to X-Forwarded-For. 0: the client address is REMOTE_ADDR and
# X-Forwarded-For is ignored (a client can write anything in it). The API's throttles, the portal's
# limits and the admin's sign-in lock-out all read the address by this rule (dunning.portal.access).
NUM_PROXIES = env_int("NUM_PROXIES", 0, minimum=0, maximum=10)
REST_FRAMEWORK["NUM_PROXIES"] = NUM_PROXIES
SPECTACULAR_SETTINGS.update(api_spectacular())
# Requests per window per API key; requests without a key or with a wrong one count per client address.
API_THROTTLE_RATE = env_str("API_THROTTLE_RATE", "600/min")
if not re.fullmatch(r"[1-9]\d*/(s|sec|second|m|min|minute|h|hour|d|day)", API_THROTTLE_RATE):
    raise ImproperlyConfigured(f"API_THROTTLE_RATE={API_THROTTLE_RATE!r}: write requests/period, e.g. 600/min, 100/s, "
                               "5000/hour or 50000/day")
# How long the first response to an Idempotency-Key is kept and replayed.
API_IDEMPOTENCY_HOURS = env_int("API_IDEMPOTENCY_HOURS", 24, minimum=1)
# payment_failed events are applied by a worker in batches of this size (docs/api.md, "Payment events").
PAYMENT_EVENTS_BATCH = env_int("PAYMENT_EVENTS_BATCH", 500, minimum=1, maximum=5000)
# At most one drain task is queued per this many seconds (per cache: share it with REDIS_URL); 0 queues
# one per event.
PAYMENT_EVENTS_WAKE_SECONDS = env_int("PAYMENT_EVENTS_WAKE_SECONDS", 1, minimum=0, maximum=60)

# --- Imports --------------------------------------------------------------------------------
# Admin uploads larger than this many bytes are imported by a background worker (django-q2).
IMPORT_BACKGROUND_BYTES = env_int("IMPORT_BACKGROUND_BYTES", 2_000_000, minimum=0)
# The admin's preview-then-confirm upload must be readable by every web server: media storage
# (shared volume or object storage) rather than the default local temp file.
IMPORT_EXPORT_TMP_STORAGE_CLASS = env_str("IMPORT_EXPORT_TMP_STORAGE_CLASS", "import_export.tmp_storages.MediaStorage")

# --- Content Security Policy (django-csp 4) -------------------------------------------------
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "style-src": ["'self'"],
        "script-src": ["'self'"],
        "frame-ancestors": ["'none'"],
        "form-action": ["'self'"],
        "base-uri": ["'self'"],
    }
}

# --- Logging --------------------------------------------------------------------------------
LOG_LEVEL = env_choice("LOG_LEVEL", "INFO", {"DEBUG", "INFO", "WARNING", "ERROR"})
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        "django.server": {"()": "django.utils.log.ServerFormatter", "format": "[{server_time}] {message}",
                          "style": "{"},
    },
    # Masks card numbers, payment-method and portal tokens that reach a log line by accident.
    "filters": {"redact": {"()": "core.logfilters.RedactSecrets"}},
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "plain", "filters": ["redact"]},
        # Django's development server logs each request line ("GET /portal/<token>/ ..."): masked too.
        "django.server": {"class": "logging.StreamHandler", "formatter": "django.server", "filters": ["redact"]},
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        # Django's own console handler (DEBUG only) would print "Not Found: /portal/<token>/" unmasked:
        # its lines go to the root handler above instead.
        "django": {"handlers": [], "level": "INFO", "propagate": True},
        "django.db.backends": {"level": "WARNING"},
        # axes logs its version at INFO on every start of every command; lock-outs are WARNING.
        "axes.apps": {"level": "WARNING"},
        "django.server": {"handlers": ["django.server"], "level": "INFO", "propagate": False},
    },
}

# --- Production hardening (python manage.py check --deploy is clean with DEBUG off) ---------
if not DEBUG:
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31536000, minimum=0)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", True)
    SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", True)
    SECURE_CONTENT_TYPE_NOSNIFF = True
    SECURE_REFERRER_POLICY = "same-origin"
    X_FRAME_OPTIONS = "DENY"
    if env_bool("BEHIND_TLS_PROXY", True):
        SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SESSION_COOKIE_HTTPONLY = True
