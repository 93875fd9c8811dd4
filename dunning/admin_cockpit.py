"""Admin for the operator's cockpit: work queue, A/B variants, pins, targeting, campaign preview.

Extends the foundation's ModelAdmins by subclassing them (so their other changes carry over) and
re-registering. Every action calls dunning.workqueue, which writes the timeline.
"""

from __future__ import annotations

import datetime

from django import forms
from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from config.admin_paging import CappedCountPaginator, skip_scan_filter
from customers.models import Customer
from dunning import workqueue
from dunning.admin import CampaignAdmin, DunningCaseAdmin
from dunning.errors import DunningError
from dunning.models import Campaign, CampaignPin, CampaignStep, CampaignVariant, DunningCase, WorkItem
from dunning.preview import CAP, CAP_DAYS, QUIET_END, QUIET_START, preview


class CampaignVariantInline(admin.TabularInline):
    model = CampaignVariant
    fk_name = "experiment"
    extra = 0
    fields = ("name", "is_control", "weight", "steps_from")
    verbose_name_plural = _("A/B test variants (leave empty for no test)")


class CockpitCampaignAdmin(CampaignAdmin):
    list_display = (*CampaignAdmin.list_display, "countries", "payment_method_kinds", "variant_count")
    inlines = [*CampaignAdmin.inlines, CampaignVariantInline]
    change_form_template = "admin/dunning/campaign/cockpit_change_form.html"

    def get_queryset(self, request):
        from django.db.models import Count

        return super().get_queryset(request).annotate(n_variants=Count("variants"))

    @admin.display(description=_("variants"), ordering="n_variants")
    def variant_count(self, obj):
        return obj.n_variants or ""

    def get_urls(self):
        urls = super().get_urls()
        return [path("<int:pk>/preview/", self.admin_site.admin_view(self.preview_view),
                     name="dunning_campaign_preview"), *urls]

    def preview_view(self, request, pk: int):
        campaign = get_object_or_404(Campaign, pk=pk)
        if not self.has_view_permission(request, campaign):
            raise admin.sites.PermissionDenied
        form = PreviewForm(request.GET or None)
        rows, subject, error = [], None, ""
        if form.is_valid():
            case_id, customer_id = form.cleaned_data.get("case"), form.cleaned_data.get("customer")
            if case_id:
                case = DunningCase.objects.select_related("customer", "invoice").filter(pk=case_id).first()
                if case is None:
                    error = f"No case #{case_id}"
                else:
                    subject, rows = case, preview(campaign, case.customer, case=case)
            elif customer_id:
                customer = Customer.objects.filter(pk=customer_id).first()
                if customer is None:
                    error = f"No customer #{customer_id}"
                else:
                    subject, rows = customer, preview(campaign, customer)
        if not subject and not error:
            sample = (DunningCase.objects.open().select_related("customer", "invoice").order_by("-failed_at").first())
            if sample is not None:
                subject, rows = sample, preview(campaign, sample.customer, case=sample)
        context = {
            **self.admin_site.each_context(request), "opts": self.opts, "original": campaign,
            "title": f"Preview: {campaign.name}", "campaign": campaign, "form": form, "rows": rows,
            "subject": subject, "error": error,
            "tz": (subject.customer if isinstance(subject, DunningCase) else subject).timezone if subject else "",
            "policy": f"Quiet hours {QUIET_START:%H:%M}-{QUIET_END:%H:%M} customer time; "
                      f"at most {CAP} messages per {CAP_DAYS} days.",
        }
        return TemplateResponse(request, "admin/dunning/campaign/preview.html", context)


class PreviewForm(forms.Form):
    case = forms.IntegerField(required=False, label=_("Open case id"))
    customer = forms.IntegerField(required=False, label=_("or sample customer id (payment failing now)"))


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
class WorkItemAdmin(admin.ModelAdmin):
    form = WorkItemForm
    list_display = ("id", "kind", "title", "customer", "case_link", "status", "assigned_to", "snoozed_until",
                    "created_at")
    list_filter = (QueueFilter, "kind", "status", "assigned_to")
    list_select_related = ("customer", "assigned_to", "case")
    search_fields = ("title", "customer__name", "customer__external_id", "customer__email")
    raw_id_fields = ("customer", "case")
    show_full_result_count = False
    paginator = CappedCountPaginator
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


CurrencyFilter = skip_scan_filter("invoice__currency", "billing_invoice", "currency", _("currency"))


class StepFilter(admin.SimpleListFilter):
    """The foundation's step filter, without one campaign query per step."""

    title = _("current step")
    parameter_name = "current_step__id__exact"

    def lookups(self, request, model_admin):
        steps = CampaignStep.objects.select_related("campaign").order_by("campaign__name", "position")
        return [(str(s.pk), str(s)) for s in steps]

    def queryset(self, request, queryset):
        return queryset.filter(current_step_id=self.value()) if self.value() else queryset


class CockpitCaseAdmin(DunningCaseAdmin):
    list_display = (*DunningCaseAdmin.list_display, "variant")
    # No date_hierarchy (it scans every case for its years) and no "all values" currency filter
    # (it scans every invoice): date filters and an index-backed currency list instead.
    date_hierarchy = None
    list_filter = (
        *(StepFilter if f == "current_step" else f for f in DunningCaseAdmin.list_filter if f != "invoice__currency"),
        CurrencyFilter, "failed_at", "closed_at",
    )
    list_select_related = (*DunningCaseAdmin.list_select_related, "variant")
    paginator = CappedCountPaginator
    inlines = [*DunningCaseAdmin.inlines, WorkItemInline]
    fields = (*DunningCaseAdmin.fields, "variant")
    readonly_fields = fields


@admin.register(CampaignPin)
class CampaignPinAdmin(admin.ModelAdmin):
    list_display = ("__str__", "customer", "invoice", "campaign", "note")
    list_select_related = ("customer", "invoice", "campaign")
    raw_id_fields = ("customer", "invoice")
    list_filter = ("campaign",)
    search_fields = ("customer__name", "customer__external_id", "invoice__number")


for model, model_admin in ((Campaign, CockpitCampaignAdmin), (DunningCase, CockpitCaseAdmin)):
    admin.site.unregister(model)
    admin.site.register(model, model_admin)

