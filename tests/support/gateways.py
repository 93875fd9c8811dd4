"""Sandbox gateways for the close-versus-charge races (tests/billing/test_services.py, tests/flows/test_closed_race.py).

``HookedGateway`` runs ``before_charge`` inside the gateway call, after the worker has claimed the
attempt: what another process does while the charge is in flight. ``SlowGateway`` is its stand-in
for a real process: with ``SLOW_GATEWAY_DIR`` set, it writes ``charging-<key>`` there and waits for
``release`` before answering (at most 60 s). A sandbox that is merely slow needs no class of its
own: ``SANDBOX_GATEWAY_LATENCY_MS``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from billing.gateways.base import ChargeRequest, ChargeResult
from billing.gateways.sandbox import SandboxGateway


class HookedGateway(SandboxGateway):
    before_charge: Callable[[ChargeRequest], None] | None = None

    def charge(self, request: ChargeRequest) -> ChargeResult:
        if type(self).before_charge is not None:
            type(self).before_charge(request)
        return super().charge(request)


class SlowGateway(SandboxGateway):
    def charge(self, request: ChargeRequest) -> ChargeResult:
        if folder := os.environ.get("SLOW_GATEWAY_DIR"):
            Path(folder, f"charging-{request.idempotency_key.replace(':', '_')}").touch()
            deadline = time.monotonic() + 60
            while not Path(folder, "release").exists() and time.monotonic() < deadline:
                time.sleep(0.02)
        return super().charge(request)
