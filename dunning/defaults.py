"""The default escalation campaign shipped with the product."""

from __future__ import annotations

from django.db import transaction

from dunning.models import Campaign, CampaignStep

A = CampaignStep.Action
DEFAULT_CAMPAIGN_NAME = "Standard"
# (day, action, template)
DEFAULT_STEPS = [
    (0, A.EMAIL, "first_notice"),
    (3, A.RETRY, ""),
    (5, A.EMAIL, "reminder"),
    (7, A.RETRY, ""),
    (10, A.FINAL_NOTICE, "final_notice"),
    (14, A.SUSPEND, "suspended"),
    (28, A.MARK_UNCOLLECTIBLE, ""),
]


@transaction.atomic
def ensure_default_campaign() -> tuple[Campaign, bool]:
    """Create the Standard campaign with its steps if it does not exist; never edits an existing one."""
    campaign, created = Campaign.objects.get_or_create(
        name=DEFAULT_CAMPAIGN_NAME, defaults={"active": True, "priority": 1000}
    )
    if created:
        CampaignStep.objects.bulk_create(
            CampaignStep(campaign=campaign, position=i, offset_days=day, action=action, template_code=template,
                         channels=["email"] if template else [])
            for i, (day, action, template) in enumerate(DEFAULT_STEPS, start=1)
        )
    return campaign, created
