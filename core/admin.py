"""Mixins for ModelAdmins and inlines, declared on each admin class (nothing here registers a model).

Put a mixin before ``admin.ModelAdmin`` (or the inline class) in the bases.
"""

from __future__ import annotations

from django.core import checks

from core.admin_paging import CappedCountPaginator


class ReadOnlyAdminMixin:
    """Rows shown in the admin, never added or edited there (logs, records of what happened); those
    with the model's delete permission may still delete them."""

    # obj=None: one signature for a ModelAdmin (request) and an inline (request, obj).
    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


class AppendOnlyAdminMixin(ReadOnlyAdminMixin):
    """A record nobody changes or deletes from the admin, superusers included: money moved, the
    case timeline, the outbox."""

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


class LargeTableAdminMixin:
    """The changelist of a table of millions of rows: no full result count, and a paginator that stops
    counting at core.admin_paging.CAP.

    Such an admin also declares no ``date_hierarchy`` (it scans every row for its years: a date list
    filter instead) and no "all values" list filter on a plain column (``SELECT DISTINCT`` over the
    whole table: core.admin_paging.skip_scan_filter or choices_filter instead).
    """

    show_full_result_count = False
    paginator = CappedCountPaginator

    def check(self, **kwargs) -> list[checks.CheckMessage]:
        errors = super().check(**kwargs)
        if self.date_hierarchy:
            errors.append(checks.Error(
                f"{type(self).__name__}.date_hierarchy scans the whole table for its years: use a date list filter",
                obj=type(self), id="core.E001"))
        return errors
