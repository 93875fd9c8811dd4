"""The tests' frozen clock: the moment every scenario starts from, and the clock fixture's object."""

from __future__ import annotations

import datetime

from django.utils import timezone

from billing.attempts import process_pending
from dunning import engine
from dunning.payments import SETTLEMENT
from notifications import services as outbox

T0 = datetime.datetime(2026, 3, 2, 10, 0, tzinfo=datetime.UTC)


class Clock:
    """A frozen clock that tests move forward; `tick` runs what the workers would run at that time."""

    def __init__(self, traveller):
        self.traveller = traveller

    @property
    def now(self) -> datetime.datetime:
        return timezone.now()

    def move_to(self, moment: datetime.datetime) -> None:
        self.traveller.move_to(moment)

    def advance(self, **delta) -> None:
        self.move_to(self.now + datetime.timedelta(**delta))

    def tick(self) -> None:
        engine.run_due_steps()
        process_pending(SETTLEMENT)
        outbox.send_queued()
