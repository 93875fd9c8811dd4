from django.contrib import admin

from notifications.models import MessageTemplate, Notification


@admin.register(MessageTemplate)
class MessageTemplateAdmin(admin.ModelAdmin):
    list_display = ("code", "channel", "locale", "subject", "updated_at")
    list_filter = ("channel", "locale", "code")
    search_fields = ("code", "subject", "body_text")


@admin.register(Notification)
class NotificationAdmin(admin.ModelAdmin):
    list_display = ("created_at", "customer", "channel", "template_code", "recipient", "status", "sent_at")
    list_filter = ("status", "channel", "template_code", "locale")
    search_fields = ("recipient", "customer__name", "customer__external_id", "reference", "provider_message_id")
    list_select_related = ("customer",)
    readonly_fields = [f.name for f in Notification._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
