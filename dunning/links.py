"""Signed links to the customer portal (no password: the link is the credential).

A token is a signed, timestamped customer id; expiry is checked when the portal opens it, and
rotating SECRET_KEY (with the old one in SECRET_KEY_FALLBACKS) keeps outstanding links valid.

Staff never see a customer's own link in the admin. Those who may send portal links get one minted
for them: its token also names the staff member ("s"), and the portal logs what is done through it
under their name. Everyone else sees an inert placeholder where a link would be.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from django.conf import settings
from django.core import signing
from django.core.exceptions import PermissionDenied
from django.urls import NoReverseMatch, reverse

from customers.models import Customer

SALT = "dunning.portal"
SEND_PERMISSION = "customers.send_portal_link"
# Shown instead of a token to staff without SEND_PERMISSION; the portal answers it as a bad link.
HIDDEN_TOKEN = "link-hidden"
# signing.dumps output: payload (a leading "." when compressed), base62 timestamp, signature.
_SIGNED = re.compile(r"(?<![A-Za-z0-9_.:-])\.?[A-Za-z0-9_-]+:[0-9A-Za-z]+:[A-Za-z0-9_-]{20,}")


def make_token(customer: Customer, *, staff=None) -> str:
    payload = {"c": customer.pk, "v": getattr(customer, "portal_token_version", 0)}
    if staff is not None:
        payload["s"] = staff.pk
    return signing.dumps(payload, salt=SALT, compress=True)


def portal_url(customer: Customer, page: str = "", *, staff=None) -> str:
    return _url(make_token(customer, staff=staff), page)


def _url(token: str, page: str = "") -> str:
    try:
        path = reverse("portal:overview", kwargs={"token": token})
    except NoReverseMatch:  # the portal is not wired in this deployment
        path = f"/portal/{token}/"
    return f"{settings.SITE_URL}{path}{page + '/' if page else ''}"


def message_links(customer: Customer) -> dict:
    """Links added to every message when it is sent (settings.NOTIFICATION_LINK_BUILDER)."""
    base = portal_url(customer)  # one signature for both links: signing is most of a message's link cost
    return {"portal_url": base, "unsubscribe_url": f"{base}preferences/"}


def staff_link(customer: Customer, user) -> str:
    """A working link for a staff member to pass on; the portal logs its use under their name."""
    if not user.has_perm(SEND_PERMISSION):
        raise PermissionDenied
    return portal_url(customer, staff=user)


def link_mask(user) -> Callable[[str], str]:
    """How the portal links in a sent message are shown to a staff member
    (settings.NOTIFICATION_LINK_MASK): every portal token becomes one minted for them if they may send
    portal links, else the inert HIDDEN_TOKEN. Text that only looks like a token is left alone."""
    allowed = user is not None and user.has_perm(SEND_PERMISSION)
    shown: dict[str, str] = {}

    def replace(match: re.Match) -> str:
        token = match.group(0)
        if token not in shown:
            shown[token] = _shown_token(token, user if allowed else None)
        return shown[token]

    return lambda text: _SIGNED.sub(replace, text) if text else text


def _shown_token(token: str, staff) -> str:
    try:
        payload = signing.loads(token, salt=SALT)  # no max_age: an expired link is hidden all the same
    except signing.BadSignature:
        return token
    if staff is None or not isinstance(payload, dict):
        return HIDDEN_TOKEN
    customer = Customer.objects.filter(pk=payload.get("c")).first()
    return make_token(customer, staff=staff) if customer is not None else HIDDEN_TOKEN
