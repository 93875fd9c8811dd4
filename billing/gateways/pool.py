"""Gateway calls made concurrently within one worker: a bounded pool and a per-gateway rate limit.

A real gateway takes hundreds of milliseconds a call; one call at a time, a worker charges a few
cards a second. The payment job (billing.attempts.process_pending) does the database work
of every attempt (claim, re-check, settle) in its own thread, on one connection, and hands only the
gateway calls to this pool, so no call runs inside a database lock and the threads hold no
connection of their own. The sandbox gateway, which keeps its charges in the database, is the
exception: its threads open a connection each, closed when the pool closes.

``PAYMENT_GATEWAY_CONCURRENCY`` bounds the calls in flight per worker process;
``PAYMENT_GATEWAY_RATE_PER_SECOND`` bounds how many calls a worker process starts per second on
one gateway (Stripe allows 100 write requests per second in live mode for a whole account: divide
it between the worker machines). Inside a database transaction (Django's TestCase, or a caller
holding locks) calls run inline, one at a time, in the caller's thread.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

from django.conf import settings
from django.db import connection, connections

T = TypeVar("T")


class RateLimiter:
    """At most ``rate`` starts per second, with bursts of up to ``burst`` (a generic cell rate
    algorithm: each caller reserves the next free slot, then sleeps until it, outside the lock)."""

    def __init__(self, rate: float, burst: int | None = None, *, clock=time.monotonic, sleep=time.sleep) -> None:
        self.rate = float(rate)
        self.interval = 1 / self.rate if self.rate > 0 else 0.0
        self.tolerance = (max(1, burst if burst is not None else int(self.rate)) - 1) * self.interval
        self.clock = clock
        self.sleep = sleep
        self.next_slot = clock()
        self.lock = threading.Lock()

    def acquire(self) -> float:
        """Take the next slot, waiting until it comes. Returns the seconds waited."""
        if self.rate <= 0:
            return 0.0
        with self.lock:
            now = self.clock()
            slot = max(self.next_slot, now)
            wait = max(0.0, slot - self.tolerance - now)
            self.next_slot = slot + self.interval
        if wait:
            self.sleep(wait)
        return wait


_limiters: dict[str, RateLimiter] = {}
_limiters_lock = threading.Lock()


def limiter_for(gateway_name: str) -> RateLimiter:
    """One bucket per gateway per process, shared by every pool of the process."""
    rate = settings.PAYMENT_GATEWAY_RATE_PER_SECOND
    with _limiters_lock:
        current = _limiters.get(gateway_name)
        if current is None or current.rate != rate:
            current = _limiters[gateway_name] = RateLimiter(rate)
        return current


class GatewayPool:
    """Run gateway calls concurrently: ``submit`` waits for the gateway's rate limit, then starts the
    call on one of ``size`` threads and returns its Future. Use as a context manager."""

    def __init__(self, gateway_name: str, size: int | None = None) -> None:
        self.size = size if size is not None else settings.PAYMENT_GATEWAY_CONCURRENCY
        self.limiter = limiter_for(gateway_name)
        # Inside a transaction another thread would not see the caller's rows (and on SQLite would
        # wait for its lock): run inline instead.
        self.inline = self.size <= 1 or connection.in_atomic_block
        self.executor = None if self.inline else ThreadPoolExecutor(
            self.size, thread_name_prefix=f"gateway-{gateway_name}")

    def __enter__(self) -> GatewayPool:
        return self

    def __exit__(self, *exc) -> None:
        if self.executor is None:
            return
        # Each thread keeps its connection between calls; close them all at the end, one task per
        # thread (the barrier holds every thread until each has taken one).
        barrier = threading.Barrier(self.size)
        for _ in range(self.size):
            self.executor.submit(self._close_connections, barrier)
        self.executor.shutdown(wait=True)

    def submit(self, fn: Callable[..., T], *args, **kwargs) -> Future:
        self.limiter.acquire()
        if self.executor is None:
            future: Future = Future()
            try:
                future.set_result(fn(*args, **kwargs))
            except Exception as exc:  # handed to the caller through the future, as a thread would
                future.set_exception(exc)
            return future
        return self.executor.submit(fn, *args, **kwargs)

    @staticmethod
    def _close_connections(barrier: threading.Barrier) -> None:
        barrier.wait(timeout=60)
        connections.close_all()  # this thread's connections only (they are thread-local)
