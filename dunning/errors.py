"""Errors of the dunning operations; the message is shown to staff or API clients as is."""

from __future__ import annotations


class DunningError(Exception):
    """A request that cannot be carried out; the message is shown to staff or API clients as is."""


class NoMatchingCampaign(DunningError):
    pass


class DunningExcluded(NoMatchingCampaign):
    """The invoice or its customer is excluded from dunning."""
