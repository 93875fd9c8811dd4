"""Signal receivers of the billing app (imported by core.apps once every model is loaded)."""

from __future__ import annotations

from django.db.models.signals import post_delete, post_save

from billing.declines import rules_changed
from billing.models import DeclineRule

post_save.connect(rules_changed, sender=DeclineRule, dispatch_uid="billing.decline_rules_saved")
post_delete.connect(rules_changed, sender=DeclineRule, dispatch_uid="billing.decline_rules_deleted")
