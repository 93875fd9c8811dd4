"""Signed links to the customer portal (no password: the link is the credential).

A token is a signed, timestamped customer id; expiry is checked when the portal opens it, and
rotating SECRET_KEY (with the old one in SECRET_KEY_FALLBACKS) keeps outstanding links valid.
"""

from __future__ import annotations

from django.conf import settings
from django.core import signing
from django.urls import NoReverseMatch, reverse

from customers.models import Customer

SALT = "dunning.portal"


def make_token(customer: Customer) -> str:
    return signing.dumps({"c": customer.pk, "v": getattr(customer, "portal_token_version", 0)}, salt=SALT,
                         compress=True)


def portal_url(customer: Customer, page: str = "") -> str:
    token = make_token(customer)
    try:
        path = reverse("portal:overview", kwargs={"token": token})
    except NoReverseMatch:  # the portal is not wired in this deployment
        path = f"/portal/{token}/"
    return f"{settings.SITE_URL}{path}{page + '/' if page else ''}"


def message_links(customer: Customer) -> dict:
    """Links added to every message when it is sent (settings.NOTIFICATION_LINK_BUILDER)."""
    base = portal_url(customer)  # one signature for both links: signing is most of a message's link cost
    return {"portal_url": base, "unsubscribe_url": f"{base}preferences/"}
