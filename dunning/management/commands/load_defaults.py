from django.core.management.base import BaseCommand

from billing.decline_defaults import ensure_default_rules
from billing.models import DeclineRule
from dunning.defaults import ensure_default_campaign
from dunning.retries import ensure_default_retry_policy
from notifications.defaults import load_default_templates


class Command(BaseCommand):
    help = (
        "Create the shipped message templates and the Standard campaign where they are missing. "
        "Never overwrites templates or campaigns staff have edited; safe to run on every deploy."
    )

    def handle(self, *args, **options):
        created, kept = load_default_templates()
        campaign, made = ensure_default_campaign()
        rules = ensure_default_rules(DeclineRule)
        if made:
            ensure_default_retry_policy(campaign)
        if options["verbosity"] == 0:
            return
        self.stdout.write(f"Templates: {created} created, {kept} already present.")
        self.stdout.write(f"Campaign {campaign.name!r}: {'created' if made else 'already present'}.")
        self.stdout.write(f"Decline rules: {rules} created.")
