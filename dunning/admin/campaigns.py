"""Admin of campaigns: steps, targeting, A/B test variants, fee policy, retry timing, pins and the
timeline preview."""

from __future__ import annotations

from django import forms
from django.contrib import admin
from django.core.exceptions import ValidationError
from django.db.models import Count
from django.forms.models import BaseInlineFormSet
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path
from django.utils.translation import gettext_lazy as _

from billing.admin import money_display
from customers.models import Customer
from dunning.admin.fees import FeePolicyInline
from dunning.models import Campaign, CampaignPin, CampaignStep, CampaignVariant, DunningCase, RetryPolicy
from dunning.preview import CAP, CAP_DAYS, QUIET_END, QUIET_START, preview


class StepFormSet(BaseInlineFormSet):
    def clean(self):
        super().clean()
        live = [f for f in self.forms if f.cleaned_data and not f.cleaned_data.get("DELETE")]
        if self.instance.active and not live:
            raise ValidationError(_("An active campaign needs at least one step."))


class CampaignStepInline(admin.TabularInline):
    model = CampaignStep
    formset = StepFormSet
    extra = 0
    fields = ("position", "offset_days", "offset_hours", "action", "template_code", "channels", "audience",
              "escalate_to")
    ordering = ("position",)


class CampaignVariantInline(admin.TabularInline):
    model = CampaignVariant
    fk_name = "experiment"
    extra = 0
    fields = ("name", "is_control", "weight", "steps_from")
    verbose_name_plural = _("A/B test variants (leave empty for no test)")


class RetryPolicyInline(admin.StackedInline):
    model = RetryPolicy
    extra = 0
    max_num = 1
    verbose_name = verbose_name_plural = _(
        "Retry timing (without one: charge when the step is due, at least 20 hours apart)")


@admin.register(Campaign)
class CampaignAdmin(admin.ModelAdmin):
    list_display = ("name", "active", "priority", "currency", "min_amount_money", "max_amount_money", "segment",
                    "countries", "payment_method_kinds", "variant_count")
    list_filter = ("active", "currency")
    list_editable = ("priority",)
    search_fields = ("name",)
    inlines = [CampaignStepInline, CampaignVariantInline, FeePolicyInline, RetryPolicyInline]
    change_form_template = "admin/dunning/campaign/cockpit_change_form.html"
    min_amount_money = money_display(Campaign, "min_amount")
    max_amount_money = money_display(Campaign, "max_amount")

    def get_queryset(self, request):
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


@admin.register(CampaignPin)
class CampaignPinAdmin(admin.ModelAdmin):
    list_display = ("__str__", "customer", "invoice", "campaign", "note")
    list_select_related = ("customer", "invoice", "campaign")
    raw_id_fields = ("customer", "invoice")
    list_filter = ("campaign",)
    search_fields = ("customer__name", "customer__external_id", "invoice__number")
