"""core.admin: the mixins a ModelAdmin declares (read-only, append-only, large table)."""

from __future__ import annotations

from django.contrib import admin
from django.test import RequestFactory

from core.admin import AppendOnlyAdminMixin, LargeTableAdminMixin, ReadOnlyAdminMixin
from core.admin_paging import CappedCountPaginator
from dunning.models import CaseEvent


def _request():
    request = RequestFactory().get("/admin/")
    request.user = type("Superuser", (), {"is_active": True, "is_staff": True, "is_superuser": True,
                                          "has_perm": lambda self, perm, obj=None: True})()
    return request


def test_read_only_and_append_only_refuse_even_a_superuser():
    site = admin.AdminSite(name="test")
    read_only = type("ReadOnly", (ReadOnlyAdminMixin, admin.ModelAdmin), {})(CaseEvent, site)
    append_only = type("AppendOnly", (AppendOnlyAdminMixin, admin.ModelAdmin), {})(CaseEvent, site)
    request = _request()
    def perms(model_admin):
        return [getattr(model_admin, f"has_{kind}_permission")(request) for kind in ("add", "change", "delete", "view")]

    assert perms(read_only) == [False, False, True, True]
    assert perms(append_only) == [False, False, False, True]
    inline = type("Inline", (AppendOnlyAdminMixin, admin.TabularInline), {"model": CaseEvent})(CaseEvent, site)
    assert not inline.has_add_permission(request, None) and not inline.has_delete_permission(request)


def test_a_large_table_admin_counts_no_further_than_the_cap_and_refuses_a_date_hierarchy():
    site = admin.AdminSite(name="test")
    large = type("Large", (LargeTableAdminMixin, admin.ModelAdmin), {})(CaseEvent, site)
    assert large.paginator is CappedCountPaginator and large.show_full_result_count is False
    assert large.check() == []
    dated = type("Dated", (LargeTableAdminMixin, admin.ModelAdmin), {"date_hierarchy": "at"})(CaseEvent, site)
    assert [error.id for error in dated.check()] == ["core.E001"]
