"""Factories and helpers for the payment tests."""

from __future__ import annotations

import datetime

from dunning.models import Campaign, CampaignStep
from tests.factories import RetryPolicyFactory


def retry_campaign(name: str, *, every_hours: int, days: int, **policy) -> Campaign:
    """An active campaign that only retries, every `every_hours` for `days` days, with a retry policy."""
    campaign = Campaign.objects.create(name=name, active=True, priority=1)
    CampaignStep.objects.bulk_create(
        CampaignStep(campaign=campaign, position=i + 1, offset_days=h // 24, offset_hours=h % 24,
                     action=CampaignStep.Action.RETRY)
        for i, h in enumerate(range(every_hours, days * 24 + 1, every_hours))
    )
    if policy:
        RetryPolicyFactory(campaign=campaign, **policy)
    return campaign


def rolling_max(times: list[datetime.datetime], window: datetime.timedelta) -> int:
    """The largest number of moments inside any window of that length (ends included)."""
    times = sorted(times)
    best = 0
    start = 0
    for end, t in enumerate(times):
        while times[start] <= t - window:
            start += 1
        best = max(best, end - start + 1)
    return best
