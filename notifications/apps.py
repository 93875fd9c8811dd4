from django.apps import AppConfig


class NotificationsConfig(AppConfig):
    name = "notifications"
    verbose_name = "Notifications"
    # Recurring jobs (core.schedules): name -> (function, minutes).
    schedules = {
        "Deliver outbound webhooks": ("notifications.tasks.deliver_webhooks", 1),
    }
