"""Admin of the staff work queue: every change goes through dunning.workqueue, which
write the case timeline."""

from __future__ import annotations

import datetime

from django import forms
from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from core.admin import LargeTableAdminMixin
from dunning import workqueue
from dunning.errors import DunningError
from dunning.models import WorkItem


class QueueFilter(admin.SimpleListFilter):
    title = _("queue")
    parameter_name = "queue"

    def lookups(self, request, model_admin):
        return [("actionable", _("To do now")), ("mine", _("Assigned to me")), ("snoozed", _("Snoozed")),
                ("done", _("Done"))]

    def queryset(self, request, queryset):
        value = self.value()
        if value == "actionable":
            return queryset.filter(pk__in=workqueue.actionable().values("pk"))
        if value == "mine":
            return queryset.filter(assigned_to=request.user).exclude(status=WorkItem.Status.DONE)
        if value == "snoozed":
            return queryset.filter(status=WorkItem.Status.SNOOZED, snoozed_until__gt=timezone.now())
        if value == "done":
            return queryset.filter(status=WorkItem.Status.DONE)
        return queryset


class WorkItemForm(forms.ModelForm):
    new_comment = forms.CharField(label=_("Add a comment"), required=False, widget=forms.Textarea(attrs={"rows": 3}))
    snooze_until = forms.DateTimeField(label=_("Snooze until"), required=False,
                                       help_text=_("YYYY-MM-DD HH:MM (server time zone)."))
    # Not "mark_done": that is the name of the list action, and a read-only change page (staff who may
    # only view) resolves a field name to the admin's method of the same name before the form's field.
    done = forms.BooleanField(label=_("Mark done"), required=False)

    class Meta:
        model = WorkItem
        fields = ("kind", "customer", "case", "title", "body", "assigned_to")


@admin.register(WorkItem)
class WorkItemAdmin(LargeTableAdminMixin, admin.ModelAdmin):
    form = WorkItemForm
    list_display = ("id", "kind", "title", "customer", "case_link", "status", "assigned_to", "snoozed_until",
                    "created_at")
    list_filter = (QueueFilter, "kind", "status", "assigned_to")
    list_select_related = ("customer", "assigned_to", "case")
    search_fields = ("title", "customer__name", "customer__external_id", "customer__email")
    raw_id_fields = ("customer", "case")
    actions = ["assign_to_me", "snooze_one_day", "snooze_one_week", "mark_done", "reopen"]
    readonly_fields = ("status", "snoozed_until", "done_at", "created_at", "comments_list")

    def get_fields(self, request, obj=None):
        if obj is None:
            return ("kind", "customer", "case", "title", "body", "assigned_to")
        fields = ("kind", "customer", "case", "title", "body", "status", "assigned_to", "snoozed_until", "done_at",
                  "created_at", "comments_list")
        if not self.has_change_permission(request, obj):
            return fields  # the comment, snooze and done inputs mean nothing to a reader
        return (*fields, "new_comment", "snooze_until", "done")

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return ()
        return (*self.readonly_fields, "kind", "customer", "case", "title", "body")

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if db_field.name == "assigned_to":
            kwargs["queryset"] = get_user_model().objects.filter(is_staff=True, is_active=True)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    @admin.display(description=_("case"), ordering="case")
    def case_link(self, obj):
        if not obj.case_id:
            return "–"
        return format_html('<a href="{}">#{}</a>', reverse("admin:dunning_dunningcase_change", args=[obj.case_id]),
                           obj.case_id)

    @admin.display(description=_("comments"))
    def comments_list(self, obj):
        rows = obj.comments.select_related("author").order_by("created_at")
        if not rows:
            return "–"
        return format_html("<ul>{}</ul>", format_html_join(
            "", "<li><strong>{}</strong> {}: {}</li>",
            ((c.author or "system", timezone.localtime(c.created_at).strftime("%Y-%m-%d %H:%M"), c.body)
             for c in rows)))

    def save_model(self, request, obj, form, change):
        if not change:
            item, _created = workqueue.create_work_item(
                obj.customer, obj.kind, obj.title, body=obj.body, case=obj.case, actor=request.user
            )
            obj.pk = item.pk
            if obj.assigned_to_id:
                workqueue.assign(item, obj.assigned_to, actor=request.user)
            return
        # Changes go through the work-queue services so each lands on the case timeline.
        data = form.cleaned_data
        try:
            if "assigned_to" in form.changed_data:
                workqueue.assign(obj, data.get("assigned_to"), actor=request.user)
            if data.get("new_comment"):
                workqueue.comment(obj, data["new_comment"], actor=request.user)
            if data.get("snooze_until"):
                workqueue.snooze(obj, data["snooze_until"], actor=request.user)
            if data.get("done"):
                workqueue.done(obj, actor=request.user)
        except DunningError as exc:
            self.message_user(request, str(exc), messages.ERROR)

    def _each(self, request, queryset, func, label):
        ok, failed = 0, []
        for item in queryset:
            try:
                func(item)
                ok += 1
            except DunningError as exc:
                failed.append(f"#{item.pk}: {exc}")
        if ok:
            self.message_user(request, ngettext("%(n)d item %(label)s.", "%(n)d items %(label)s.", ok)
                              % {"n": ok, "label": label}, messages.SUCCESS)
        if failed:
            self.message_user(request, "; ".join(failed), messages.ERROR)

    @admin.action(description=_("Assign to me"), permissions=["change"])
    def assign_to_me(self, request, queryset):
        self._each(request, queryset, lambda i: workqueue.assign(i, request.user, actor=request.user),
                   _("assigned to you"))

    @admin.action(description=_("Snooze for a day"), permissions=["change"])
    def snooze_one_day(self, request, queryset):
        until = timezone.now() + datetime.timedelta(days=1)
        self._each(request, queryset, lambda i: workqueue.snooze(i, until, actor=request.user), _("snoozed"))

    @admin.action(description=_("Snooze for a week"), permissions=["change"])
    def snooze_one_week(self, request, queryset):
        until = timezone.now() + datetime.timedelta(days=7)
        self._each(request, queryset, lambda i: workqueue.snooze(i, until, actor=request.user), _("snoozed"))

    @admin.action(description=_("Mark done"), permissions=["change"])
    def mark_done(self, request, queryset):
        self._each(request, queryset, lambda i: workqueue.done(i, actor=request.user), _("done"))

    @admin.action(description=_("Reopen"), permissions=["change"])
    def reopen(self, request, queryset):
        self._each(request, queryset, lambda i: workqueue.reopen(i, actor=request.user), _("reopened"))


class WorkItemInline(admin.TabularInline):
    model = WorkItem
    extra = 0
    can_delete = False
    fields = ("kind", "title", "status", "assigned_to", "snoozed_until")
    readonly_fields = fields
    show_change_link = True
    verbose_name_plural = _("Work items")

    def has_add_permission(self, request, obj=None):
        return False
