"""Reading portal links: a signed token names one customer, expires, and can be revoked by staff.

A link a staff member minted in the admin also names them: what is done through it is theirs on the
timeline, and it stops working once they lose the permission to send portal links or are deactivated.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.core import signing
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.core.validators import validate_ipv46_address
from rest_framework.throttling import BaseThrottle

from customers.models import Customer
from dunning.links import SALT, SEND_PERMISSION

# The timeline's actor for a customer acting through their own link.
PORTAL_ACTOR = "portal"


@dataclass
class TokenProblem(Exception):
    """The link cannot be used. ``customer`` is known when the signature was valid (expired, revoked)."""

    reason: str  # "expired", "revoked" or "invalid"
    customer: Customer | None = None


def max_age() -> timedelta:
    return timedelta(days=settings.PORTAL_LINK_MAX_AGE_DAYS)


@dataclass(frozen=True)
class PortalLink:
    customer: Customer
    staff: AbstractBaseUser | None = None  # the staff user who minted the link; None for the customer's own link

    @property
    def actor(self):
        """Who acts through this link, for services that log an actor."""
        return self.staff if self.staff is not None else PORTAL_ACTOR


def read_token(token: str) -> Customer:
    """The customer a link belongs to, or TokenProblem."""
    return read_link(token).customer


def read_link(token: str) -> PortalLink:
    """The customer (and minting staff member) of a link, or TokenProblem. SECRET_KEY_FALLBACKS are
    honoured by signing; a token without a staff claim is the customer's own link."""
    try:
        payload = signing.loads(token, salt=SALT, max_age=max_age())
        expired = False
    except signing.SignatureExpired:
        # The signature is good, only old: read it anyway so the page can speak the customer's language.
        payload = signing.loads(token, salt=SALT)
        expired = True
    except signing.BadSignature:
        raise TokenProblem("invalid") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("c"), int):
        raise TokenProblem("invalid")
    customer = Customer.objects.filter(pk=payload["c"]).first()
    if customer is None:
        raise TokenProblem("invalid")
    if payload.get("v", 0) != customer.portal_token_version:
        raise TokenProblem("revoked", customer)
    staff = _minting_staff(payload, customer)
    if expired:
        raise TokenProblem("expired", customer)
    return PortalLink(customer, staff)


def _minting_staff(payload: dict, customer: Customer) -> AbstractBaseUser | None:
    """The staff user who minted a link (None for the customer's own link). A staff link stops
    working once its maker may no longer send portal links."""
    if "s" not in payload:
        return None
    user = None
    if isinstance(payload["s"], int):
        user = get_user_model().objects.filter(pk=payload["s"], is_active=True, is_staff=True).first()
    if user is None or not user.has_perm(SEND_PERMISSION):
        raise TokenProblem("revoked", customer)
    return user


def client_ip(request) -> str:
    """The client's address, by REST framework's NUM_PROXIES rule so that the portal's limits, the API's
    throttles and the admin's sign-in lock-out (AXES_CLIENT_IP_CALLABLE) agree: REMOTE_ADDR by default,
    as X-Forwarded-For is whatever the client wrote unless a trusted proxy appended to it. Something that
    is not an IP address falls back to REMOTE_ADDR, then to "" (the lock-out stores it in an inet column)."""
    for address in (BaseThrottle().get_ident(request), request.META.get("REMOTE_ADDR")):
        try:
            validate_ipv46_address(address or "")
        except ValidationError:
            continue
        return address
    return ""


def rate_limited(key: str, limit: int | None = None, window: int | None = None) -> bool:
    """Count one hit for key; True once more than ``limit`` hits fell in the current window."""
    limit = limit or settings.PORTAL_RATE_LIMIT
    window = window or settings.PORTAL_RATE_WINDOW_SECONDS
    cache_key = f"portal-rl:{key}"
    if cache.add(cache_key, 1, timeout=window):
        return False
    try:
        hits = cache.incr(cache_key)
    except ValueError:  # expired between add and incr
        cache.add(cache_key, 1, timeout=window)
        return False
    return hits > limit
