from __future__ import annotations

import pytest
import time_machine
from django.conf import settings
from django.core.management import call_command

from billing import declines
from dunning.models import Campaign
from tests.support.clock import T0, Clock


def pytest_collection_modifyitems(config, items):
    if settings.DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql":
        skip = pytest.mark.skip(reason="needs PostgreSQL: set DATABASE_URL=postgres://... to run")
        for item in items:
            if "postgres" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(autouse=True)
def fresh_decline_table():
    """Each test reads the decline table of its own database (a rolled-back edit must not linger)."""
    declines._bump()


@pytest.fixture
def defaults(db):
    """The shipped templates and the Standard campaign, as `load_defaults` creates them."""
    call_command("load_defaults", verbosity=0)
    return Campaign.objects.get(name="Standard")


@pytest.fixture
def clock():
    with time_machine.travel(T0, tick=False) as traveller:
        yield Clock(traveller)
