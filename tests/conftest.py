from __future__ import annotations

import datetime

import pytest
import time_machine
from django.conf import settings
from django.core.management import call_command

from billing.attempts import process_pending
from dunning import engine
from dunning.payments import SETTLEMENT
from notifications import services as outbox

T0 = datetime.datetime(2026, 3, 2, 10, 0, tzinfo=datetime.UTC)


def pytest_collection_modifyitems(config, items):
    if settings.DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql":
        skip = pytest.mark.skip(reason="needs PostgreSQL: set DATABASE_URL=postgres://... to run")
        for item in items:
            if "postgres" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(autouse=True)
def fresh_decline_table():
    """Each test reads the decline table of its own database (a rolled-back edit must not linger)."""
    from billing import declines

    declines._bump()


@pytest.fixture
def defaults(db):
    """The shipped templates and the Standard campaign, as `load_defaults` creates them."""
    call_command("load_defaults", verbosity=0)
    from dunning.models import Campaign

    return Campaign.objects.get(name="Standard")


class Clock:
    """A frozen clock that tests move forward; `tick` runs what the workers would run at that time."""

    def __init__(self, traveller):
        self.traveller = traveller

    @property
    def now(self) -> datetime.datetime:
        from django.utils import timezone

        return timezone.now()

    def move_to(self, moment: datetime.datetime) -> None:
        self.traveller.move_to(moment)

    def advance(self, **delta) -> None:
        self.move_to(self.now + datetime.timedelta(**delta))

    def tick(self) -> None:
        engine.run_due_steps()
        process_pending(SETTLEMENT)
        outbox.send_queued()


@pytest.fixture
def clock():
    with time_machine.travel(T0, tick=False) as traveller:
        yield Clock(traveller)
