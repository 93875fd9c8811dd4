from django.apps import AppConfig
from django.db.models.signals import post_delete, post_save


class BillingConfig(AppConfig):
    name = "billing"
    verbose_name = "Billing"

    def ready(self) -> None:
        from billing.declines import rules_changed

        rule = self.get_model("DeclineRule")
        post_save.connect(rules_changed, sender=rule, dispatch_uid="billing.decline_rules_saved")
        post_delete.connect(rules_changed, sender=rule, dispatch_uid="billing.decline_rules_deleted")
