"""Staff sign-in lock-out (django-axes, configured in config/settings.py; docs/security.md).

Failed sign-ins are counted per username and client address, so that a colleague behind the same
office address is not locked out by someone else's typos; an address with many failures over any
usernames (password spraying) is locked out for every username.
"""

from __future__ import annotations

from axes.attempts import get_cool_off_threshold
from axes.models import AccessAttempt
from django.conf import settings
from django.contrib import admin
from django.db.models import Sum
from django.http import HttpResponse
from django.shortcuts import render
from django.utils.translation import gettext as _


def address_failures(address: str, request) -> int:
    """Failed sign-ins from ``address`` for any username within the cool-off."""
    failures = AccessAttempt.objects.filter(
        ip_address=address, attempt_time__gte=get_cool_off_threshold(request),
    ).aggregate(total=Sum("failures_since_start"))["total"]
    return failures or 0


def lockout_parameters(request_or_attempt, credentials=None) -> list:
    """AXES_LOCKOUT_PARAMETERS: username and address together, or the address alone once it has
    AXES_ADDRESS_FAILURE_LIMIT failures (axes then compares that count with AXES_FAILURE_LIMIT,
    which is lower, so every username from the address is locked out)."""
    by_user_and_address: list = [["username", "ip_address"]]
    limit = settings.AXES_ADDRESS_FAILURE_LIMIT
    # Called with the request during sign-in, and with a stored AccessAttempt by axes' own helpers.
    address = getattr(request_or_attempt, "axes_ip_address", None)
    if not limit or not address:
        return by_user_and_address
    if address_failures(address, request_or_attempt) >= limit:
        return ["ip_address"]
    return by_user_and_address


def locked_out(request, original_response=None, credentials=None) -> HttpResponse:
    """AXES_LOCKOUT_CALLABLE: a page saying when to try again, 429 with Retry-After."""
    minutes = settings.AXES_COOLOFF_MINUTES
    context = {"title": _("Sign-in paused"), "minutes": minutes, "site_header": admin.site.site_header,
               "site_title": admin.site.site_title}
    response = render(request, "admin/locked_out.html", context, status=429)
    response["Retry-After"] = str(minutes * 60)
    return response
