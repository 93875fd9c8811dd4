from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.decorators import method_decorator
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.clickjacking import xframe_options_sameorigin
from django.views.decorators.http import require_POST

from core.admin import AppendOnlyAdminMixin, LargeTableAdminMixin, ReadOnlyAdminMixin
from core.admin_paging import choices_filter, skip_scan_filter
from notifications import services, webhooks
from notifications.models import MessageTemplate, Notification, WebhookDelivery, WebhookEndpoint
from notifications.previews import PreviewError, preview, send_test_to, shown_to

try:  # django-csp: the preview shows an email, whose HTML needs inline styles
    from csp.decorators import csp_replace
except ImportError:  # pragma: no cover
    def csp_replace(config):
        return lambda view: view

PREVIEW_CSP = {
    "style-src": ["'self'", "'unsafe-inline'"],
    "img-src": ["'self'", "data:", "https:"],
    "frame-ancestors": ["'self'"],
    "script-src": ["'none'"],
}
EDITABLE = ("code", "channel", "locale", "subject", "body_text", "body_html")


@admin.register(MessageTemplate)
class MessageTemplateAdmin(admin.ModelAdmin):
    list_display = ("code", "channel", "locale", "subject", "updated_at")
    list_filter = ("channel", "locale", "code")
    search_fields = ("code", "subject", "body_text")
    actions = ["send_test_action"]
    change_form_template = "admin/notifications/messagetemplate/change_form.html"

    class Media:
        js = ("notifications/template_preview.js",)
        css = {"all": ("notifications/template_preview.css",)}

    def get_urls(self):
        urls = [
            path("preview/", self.admin_site.admin_view(self.preview_view),
                 name="notifications_messagetemplate_preview"),
            path("send-test/", self.admin_site.admin_view(self.send_test_view),
                 name="notifications_messagetemplate_send_test"),
        ]
        return urls + super().get_urls()

    def _from_post(self, request) -> MessageTemplate:
        """The template as currently typed in the form (unsaved)."""
        return MessageTemplate(**{name: request.POST.get(name, "") for name in EDITABLE})

    @method_decorator(require_POST)
    @method_decorator(xframe_options_sameorigin)
    @method_decorator(csp_replace(PREVIEW_CSP))
    def preview_view(self, request):
        if not self.has_view_or_change_permission(request):
            raise PermissionDenied
        template = self._from_post(request)
        reference = request.POST.get("preview_reference", "").strip()
        try:
            result = preview(template, reference)
        except PreviewError as exc:
            result = {"error": str(exc)}
        return TemplateResponse(request, "admin/notifications/messagetemplate/preview.html",
                                {"result": result, "template": template, "reference": reference})

    @method_decorator(require_POST)
    def send_test_view(self, request):
        if not self.has_view_or_change_permission(request):
            raise PermissionDenied
        template = self._from_post(request)
        self._send_tests(request, [template], request.POST.get("preview_reference", "").strip())
        # Back to the page the form was on, only if that page is this site's own.
        back = request.META.get("HTTP_REFERER", "")
        if not url_has_allowed_host_and_scheme(back, allowed_hosts={request.get_host()},
                                               require_https=request.is_secure()):
            back = reverse("admin:notifications_messagetemplate_changelist")
        return HttpResponseRedirect(back)

    # Readers may test a template on themselves: the preview and send-test views allow them too.
    @admin.action(description="Send a test of the selected templates to me", permissions=["view"])
    def send_test_action(self, request, queryset):
        self._send_tests(request, list(queryset), "")

    def _send_tests(self, request, templates, reference: str) -> None:
        if not request.user.email:
            self.message_user(request, "Your staff account has no email address; add one to receive tests.",
                              messages.ERROR)
            return
        sent, failed = 0, []
        for template in templates:
            try:
                send_test_to(template, request.user.email, reference)
                sent += 1
            except PreviewError as exc:
                failed.append(f"{template}: {exc}")
        if sent:
            self.message_user(request, f"{sent} test message(s) sent to {request.user.email}.", messages.SUCCESS)
        for problem in failed:
            self.message_user(request, problem, messages.ERROR)


# Parts of a message that can hold portal links: shown through notifications.previews.shown_to.
LINKED = ("subject", "body_text", "body_html", "context")


def _shown(name: str):
    def display(modeladmin, obj):
        return getattr(obj, "shown", {}).get(name, "")
    display.short_description = Notification._meta.get_field(name).verbose_name
    return display


@admin.register(Notification)
class NotificationAdmin(AppendOnlyAdminMixin, LargeTableAdminMixin, admin.ModelAdmin):
    """The outbox is the record of what was sent: read-only, and nobody deletes it, superusers included."""

    list_display = ("created_at", "customer", "channel", "template_code", "recipient", "status", "tracking_status",
                    "sent_at")
    list_filter = (
        "status", "channel", "tracking_status",
        # Template codes from the (small) template table, languages from settings: no scan of the outbox.
        skip_scan_filter(Notification, "template_code", table="notifications_messagetemplate", column="code"),
        choices_filter(Notification, "locale", [(code, str(name)) for code, name in settings.LANGUAGES]),
    )
    search_fields = ("recipient", "customer__name", "customer__external_id", "reference", "provider_message_id")
    list_select_related = ("customer",)
    fields = [f"shown_{f.name}" if f.name in LINKED else f.name for f in Notification._meta.fields]
    readonly_fields = fields
    shown_subject = _shown("subject")
    shown_body_text = _shown("body_text")
    shown_body_html = _shown("body_html")
    shown_context = _shown("context")
    actions = ["resend_action"]

    def get_object(self, request, object_id, from_field=None):
        obj = super().get_object(request, object_id, from_field)
        if obj is not None:
            # A sent link is the customer's credential: staff see a placeholder, or with the
            # "send portal link" permission a link minted in their own name.
            obj.shown = shown_to(request.user, obj)
        return obj

    def has_resend_permission(self, request):
        # The outbox is read-only in the admin; resending needs the model's change permission.
        return request.user.has_perm("notifications.change_notification")

    @admin.action(description="Resend the selected messages of unknown fate", permissions=["resend"])
    def resend_action(self, request, queryset):
        resent, skipped = [], []
        for notification in queryset:
            copy = services.resend(notification, actor=request.user)
            if copy is None:
                skipped.append(str(notification.pk))
                continue
            resent.append(str(notification.pk))
            self.log_change(request, notification, f"Resent as message {copy.pk}.")
        parts = []
        if resent:
            parts.append(f"{len(resent)} message(s) queued again ({', '.join(resent)}).")
        if skipped:
            parts.append(f"{len(skipped)} skipped, not of unknown fate or already resent ({', '.join(skipped)}).")
        self.message_user(request, " ".join(parts), messages.SUCCESS if not skipped else messages.WARNING)


class WebhookDeliveryInline(admin.TabularInline):
    model = WebhookDelivery
    fields = ("created_at", "event_type", "status", "attempts", "response_status", "last_error", "delivered_at")
    readonly_fields = fields
    extra = 0
    max_num = 0
    ordering = ["-created_at"]
    show_change_link = True

    def get_queryset(self, request):
        return super().get_queryset(request).order_by("-created_at")


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(admin.ModelAdmin):
    list_display = ("url", "description", "active", "events", "updated_at")
    list_filter = ("active",)
    actions = ["send_test_event"]
    readonly_fields = ("created_at", "updated_at")

    @admin.action(description="Send a test event now", permissions=["change"])
    def send_test_event(self, request, queryset):
        for endpoint in queryset:
            delivery = webhooks.send_test(endpoint)
            level = messages.SUCCESS if delivery.status == WebhookDelivery.Status.DELIVERED else messages.WARNING
            self.message_user(request, f"{endpoint.url}: {delivery.get_status_display()} "
                              f"(HTTP {delivery.response_status or '-'}) {delivery.last_error}", level)


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """A read-only log; staff may have a delivery sent again."""

    list_display = ("created_at", "event_type", "endpoint", "status", "attempts", "response_status",
                    "next_attempt_at", "delivered_at")
    list_filter = ("status", "event_type", "endpoint")
    search_fields = ("event_id", "event_type")
    list_select_related = ("endpoint",)
    readonly_fields = [f.name for f in WebhookDelivery._meta.fields]
    actions = ["retry_now"]

    @admin.action(description="Send again at the next run", permissions=["retry"])
    def retry_now(self, request, queryset):
        count = webhooks.retry_now(queryset)
        self.message_user(request, f"{count} deliveries will be sent again within a minute.", messages.SUCCESS)

    def has_retry_permission(self, request) -> bool:
        # Re-queueing changes the rows: the model's change permission, not the (read-only) form's.
        return request.user.has_perm("notifications.change_webhookdelivery")
