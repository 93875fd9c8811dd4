"""API keys: ``Authorization: Bearer dk_<prefix>_<secret>``, scopes and per-key throttling."""

from __future__ import annotations

import functools
import hmac
import time
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django.utils import timezone
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import exceptions, permissions, throttling
from rest_framework.authentication import BaseAuthentication, get_authorization_header

from integrations.models import KEY_PREFIX, ApiKey, hash_secret


@dataclass
class ApiClient:
    """request.user for API requests: the key's owner, not a staff account."""

    key: ApiKey
    is_authenticated: bool = True
    is_active: bool = True
    is_staff: bool = False

    @property
    def pk(self):
        return None

    def __str__(self) -> str:
        return self.key.actor_label


def parse_key(raw: str) -> tuple[str, str] | None:
    parts = raw.split("_", 2)
    if len(parts) != 3 or parts[0] != KEY_PREFIX or not parts[1] or not parts[2]:
        return None
    return parts[1], parts[2]


def usable_key(prefix: str) -> ApiKey | None:
    """The unrevoked key with this prefix (one indexed read)."""
    try:
        return ApiKey.objects.usable().get(prefix=prefix)
    except ApiKey.DoesNotExist:
        return None


def key_for(token: str) -> ApiKey | None:
    """The usable key for the bearer token ``dk_<prefix>_<secret>``, or None (malformed, unknown, revoked,
    or a wrong secret)."""
    parsed = parse_key(token)
    if parsed is None:
        return None
    prefix, secret = parsed
    # Revocation is immediate: the key row is read on every request, never cached.
    key = usable_key(prefix)
    if key is None or not hmac.compare_digest(key.secret_hash, hash_secret(secret)):
        return None
    return key


def note_use(key: ApiKey) -> None:
    """Record when the key was last used, at most once a minute per key; after the request's
    transaction, so that concurrent requests never queue on the key's row."""
    now = timezone.now()
    if key.last_used_at is None or key.last_used_at < now - timedelta(minutes=1):
        transaction.on_commit(lambda: ApiKey.objects.filter(pk=key.pk).update(last_used_at=now))


def address_ident(request) -> str:
    """The throttle counter of a client without a valid key: its address by REST framework's
    NUM_PROXIES rule (REMOTE_ADDR unless settings say how many proxies append to X-Forwarded-For)."""
    return f"throttle:api:ip:{throttling.BaseThrottle().get_ident(request)}"


def count_keyless(request) -> None:
    """Count a request with no key or a wrong one against its client address, and answer 429 once the
    address is over API_THROTTLE_RATE. Authentication runs before REST framework's throttles and a
    refused key ends the request there, so such requests are counted here; the mark on the request
    keeps KeyRateThrottle from counting an anonymous request a second time."""
    allowed, retry_after = hit(address_ident(request))
    request.api_throttle_hit = (allowed, retry_after)
    if not allowed:
        raise exceptions.Throttled(wait=retry_after)


class ApiKeyAuthentication(BaseAuthentication):
    keyword = b"bearer"

    def authenticate(self, request):
        try:
            key = self.key(request)
        except exceptions.AuthenticationFailed:
            count_keyless(request)  # a throttled address gets 429 rather than the 401
            raise
        if key is None:
            count_keyless(request)
            return None
        note_use(key)
        return ApiClient(key), key

    def key(self, request) -> ApiKey | None:
        """The request's valid key; None without an Authorization: Bearer header; AuthenticationFailed
        for a malformed, unknown or revoked key."""
        header = get_authorization_header(request).split()
        if not header or header[0].lower() != self.keyword:
            return None
        if len(header) != 2:
            raise exceptions.AuthenticationFailed("Send exactly one key: Authorization: Bearer <key>.")
        try:
            token = header[1].decode("ascii")
        except UnicodeDecodeError:
            token = ""
        if parse_key(token) is None:
            raise exceptions.AuthenticationFailed("This is not an API key.")
        key = key_for(token)
        if key is None:
            raise exceptions.AuthenticationFailed("Unknown or revoked API key.")
        return key

    def authenticate_header(self, request) -> str:
        return 'Bearer realm="api"'


class HasKeyScope(permissions.BasePermission):
    """Any valid key may read; writing (POST) needs a read-write key."""

    message = "This API key is read-only; writing needs a read-write key."

    def has_permission(self, request, view) -> bool:
        key = request.auth
        if not isinstance(key, ApiKey):
            return False  # DRF answers 401 with a WWW-Authenticate header
        return request.method in permissions.SAFE_METHODS or key.can_write


@functools.lru_cache(maxsize=8)
def parse_rate(rate: str) -> tuple[int, int]:
    """"600/min" -> (600, 60), as REST framework reads rates."""
    num, period = rate.split("/")
    return int(num), {"s": 1, "m": 60, "h": 3600, "d": 86400}[period[0]]


def hit(ident: str) -> tuple[bool, float]:
    """Count one request against ``ident``'s API_THROTTLE_RATE; returns (allowed, seconds until the
    window ends). One atomic add-or-increment in the cache per request."""
    # The rate is read on every request so that settings overrides (tests, reloads) apply.
    num_requests, duration = parse_rate(settings.API_THROTTLE_RATE)
    now = time.time()
    window = int(now // duration)
    key = f"{ident}:{window}"
    hits = 1
    if not cache.add(key, 1, timeout=duration + 1):
        try:
            hits = cache.incr(key)
        except ValueError:  # expired between add and incr
            cache.add(key, 1, timeout=duration + 1)
    return hits <= num_requests, (window + 1) * duration - now


def throttle_ident(key: ApiKey) -> str:
    return f"throttle:api:key:{key.prefix}"


class KeyRateThrottle(throttling.SimpleRateThrottle):
    """API_THROTTLE_RATE requests per window per API key (per client address without a valid key:
    those are counted by ApiKeyAuthentication, which runs first).

    A fixed-window counter in the cache: one atomic add-or-increment per request whatever the rate,
    where DRF's own SimpleRateThrottle reads and rewrites the list of every request time in the window
    (thousands of entries at a high rate). A client may get up to twice the rate across a window
    boundary, as with any fixed window."""

    scope = "api_key"

    def get_rate(self) -> str:
        return settings.API_THROTTLE_RATE

    def allow_request(self, request, view):
        # A request without a valid key was counted by count_keyless already: not counted twice.
        counted = getattr(request, "api_throttle_hit", None)
        allowed, self._retry_after = counted or hit(self.get_cache_key(request, view))
        return allowed

    def wait(self) -> float:
        return self._retry_after

    def get_cache_key(self, request, view) -> str:
        key = request.auth
        return throttle_ident(key) if isinstance(key, ApiKey) else address_ident(request)


class ApiKeyScheme(OpenApiAuthenticationExtension):
    target_class = "integrations.api.auth.ApiKeyAuthentication"
    name = "ApiKey"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer", "bearerFormat": "dk_<prefix>_<secret>",
                "description": "An API key created by staff in the admin (Integrations > API keys)."}
