"""The staff sign-in lock-out in the admin (django-axes' own admins, registered here with
AXES_ENABLE_ADMIN off so that its clean-up action declares the permission it needs)."""

from __future__ import annotations

from axes.admin import AccessAttemptAdmin, AccessFailureLogAdmin, AccessLogAdmin
from axes.models import AccessAttempt, AccessFailureLog, AccessLog
from django.contrib import admin
from django.utils.translation import gettext_lazy as _


@admin.register(AccessAttempt)
class LockoutAttemptAdmin(AccessAttemptAdmin):
    # Deletes expired attempts: for those who may unlock accounts (managers), not for readers.
    @admin.action(description=_("Clean up expired attempts"), permissions=["delete"])
    def cleanup_expired_attempts(self, request, queryset):
        return super().cleanup_expired_attempts(request, queryset)


admin.site.register(AccessLog, AccessLogAdmin)
admin.site.register(AccessFailureLog, AccessFailureLogAdmin)
