"""The back office's admin site (core.apps.AdminConfig makes it ``admin.site``)."""

from __future__ import annotations

from django.conf import settings
from django.contrib import admin
from django.utils.text import format_lazy
from django.utils.translation import gettext_lazy as _


class AdminSite(admin.AdminSite):
    # The admin's "View site" would lead to a page that does not exist: there is no public site (the
    # portal opens only from a signed link), so the admin has no such link and / leads to the admin.
    site_url = None
    # Staff see whose back office this is, not the framework's name.
    site_header = format_lazy("{} · {}", settings.MERCHANT_NAME, _("Collections"))
    site_title = _("Collections")
    index_title = _("Dunning back office")
