"""Dates a message can promise: the next retry and the suspension, from the campaign's steps."""

from __future__ import annotations

from datetime import datetime

from dunning.models import CampaignStep, DunningCase

PROMISES = (("next_retry_date", CampaignStep.Action.RETRY), ("suspension_date", CampaignStep.Action.SUSPEND))


def upcoming_dates(case: DunningCase, step: CampaignStep, steps: list[CampaignStep], now: datetime) -> dict:
    """``next_retry_date`` and ``suspension_date`` (ISO, customer's calendar) after ``step``; no query.

    A step whose time has passed (a resumed case) runs at the next engine pass, hence ``max``."""
    dates = {}
    later = [s for s in steps if s.position > step.position]
    for key, action in PROMISES:
        found = next((s for s in later if s.action == action), None)
        if found is not None:
            moment = max(case.failed_at + found.offset, now)
            dates[key] = moment.astimezone(case.customer.tz).date().isoformat()
    return dates
