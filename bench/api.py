"""Issue 6: payment events ingested per second through the REST API under gunicorn (2 workers).

Each request is a real ``payment_failed`` event for its own invoice, sent by a few concurrent clients:
the request checks the API key, claims its Idempotency-Key and stores the event as pending in the
inbox (integrations.InboundEvent), in one transaction. Reported: events per second accepted, p50 and
p99 latency and the ratio to a bare Django view (/api/v1/ping/, no database) on the same server. The
same number of events that also carry ``occurred_at`` (a date to parse) are reported beside them; both
go through the one view, REST framework's. Then a django-q2
worker's job (integrations.events.drain, here in the benchmark's own process) applies the pending
events in batches (a failed attempt, a new dunning case and its timeline entry each): reported as
events applied per second and queries per 1,000 events. In production the workers run on their own
machines; on this benchmark's two cores, running them during the load would measure the two
sharing the cores.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from bench.common import Timer, count_queries, row, truncate_all

SIZES = {"small": 600, "full": 3_000}
CONCURRENCY = 8
THREADS = 8  # gthread threads per worker: one per client connection, so a worker given more than half never queues
ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def build(n: int) -> str:
    from django.core.management import call_command

    from billing.models import Invoice
    from customers.models import Customer
    from integrations.models import ApiKey, IdempotencyRecord, ImportJob, InboundEvent

    truncate_all()
    for model in (IdempotencyRecord, InboundEvent, ImportJob, ApiKey):
        model.objects.all().delete()
    call_command("load_defaults", verbosity=0)
    n = 2 * n  # plain events, then as many through the full pipeline
    customers = Customer.objects.bulk_create(Customer(external_id=f"bc{i}", name=f"C {i}") for i in range(n))
    Invoice.objects.bulk_create(
        Invoice(customer=c, external_id=f"bi{i}", number=f"B-{i}", currency="USD", amount_due="49.00",
                issued_at="2026-01-01", due_date="2026-01-31")
        for i, c in enumerate(customers))
    _key, secret = ApiKey.issue("bench", ApiKey.Scope.READ_WRITE)
    return secret


def server_env() -> dict:
    return {**os.environ, "DEBUG": "false", "SECRET_KEY": "bench-" + "k" * 50, "ALLOWED_HOSTS": "127.0.0.1",
            "SECURE_SSL_REDIRECT": "false", "API_THROTTLE_RATE": "1000000/min", "LOG_LEVEL": "WARNING",
            "DJANGO_SETTINGS_MODULE": "config.settings"}


def start_server(port: int) -> subprocess.Popen:
    env = server_env()
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "config.wsgi:application", "--workers", "2", "--threads", str(THREADS),
         "--bind", f"127.0.0.1:{port}", "--log-level", "warning"],
        cwd=ROOT, env=env,
    )
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            status, _ = request(port, "GET", "/api/v1/ping/")
            if status == 200:
                return server
        except OSError:
            time.sleep(0.2)
    server.terminate()
    raise RuntimeError("gunicorn did not start")


def request(port: int, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def load(port: int, calls: list[tuple[str, str, bytes | None, dict]]) -> tuple[float, list[float], list[int]]:
    """Send the calls with CONCURRENCY clients, each on its own kept-alive connection as an HTTP client
    library's pool would; returns (seconds, latencies in ms, status codes)."""
    latencies: list[float] = []
    statuses: list[int] = []
    lock = threading.Lock()
    queue = list(reversed(calls))

    def worker():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            while True:
                with lock:
                    if not queue:
                        return
                    method, path, body, headers = queue.pop()
                start = time.perf_counter()
                try:
                    conn.request(method, path, body=body, headers=headers)
                    response = conn.getresponse()
                except (http.client.HTTPException, OSError):  # the server closed an idle connection
                    conn.close()
                    conn.request(method, path, body=body, headers=headers)
                    response = conn.getresponse()
                response.read()
                elapsed = (time.perf_counter() - start) * 1000
                with lock:
                    latencies.append(elapsed)
                    statuses.append(response.status)
        finally:
            conn.close()

    threads = [threading.Thread(target=worker) for _ in range(CONCURRENCY)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - start, latencies, statuses


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def run(scale: str) -> list[dict]:
    n = SIZES.get(scale, SIZES["full"])
    secret = build(n)
    from django.db import connections

    connections.close_all()
    port = free_port()
    server = start_server(port)
    try:
        load(port, [("GET", "/api/v1/ping/", None, {})] * 100)  # warm up both workers
        ping_seconds, ping_lat, ping_status = load(port, [("GET", "/api/v1/ping/", None, {})] * n)
        auth = {"Authorization": f"Bearer {secret}", "Content-Type": "application/json"}

        def event(i: int, **extra) -> tuple:
            body = json.dumps({"id": f"evt_b{i}", "type": "payment_failed", "invoice": f"bi{i}",
                               "decline_code": "insufficient_funds", **extra}).encode()
            return ("POST", "/api/v1/payment-events/", body, {**auth, "Idempotency-Key": f"bench-{i}"})

        seconds, latencies, statuses = load(port, [event(i) for i in range(n)])
        full_seconds, full_latencies, full_statuses = load(
            port, [event(i, occurred_at="2026-01-31T10:00:00Z") for i in range(n, 2 * n)])
    finally:
        server.terminate()
        server.wait(timeout=30)
    from integrations import events

    with count_queries() as counter, Timer() as t:
        applied = events.drain()
    apply_seconds = t.seconds
    bad = [s for s in statuses + full_statuses if s != 202] + [s for s in ping_status if s != 200]
    if bad:
        raise RuntimeError(f"{len(bad)} requests failed, e.g. status {bad[0]}")
    from django.conf import settings

    from dunning.models import DunningCase
    from integrations.models import InboundEvent

    if DunningCase.objects.count() != 2 * n or InboundEvent.objects.filter(status="applied").count() != 2 * n:
        raise RuntimeError("not every event opened a case")
    rate = n / seconds
    ping_rate = n / ping_seconds
    return [
        row("payment events ingested (plain payment_failed, gunicorn 2 workers)", rate, "events/s",
            target=">= 300 events/s", ratio_to=f"bare Django view ({ping_rate:,.0f} req/s)", ratio=rate / ping_rate,
            note=f"{n:,} events, {CONCURRENCY} concurrent clients, {THREADS} threads per worker; 202 Accepted"),
        row("payment event latency p50", statistics.median(latencies), "ms"),
        row("payment event latency p99", percentile(latencies, 99), "ms", target="< 100 ms"),
        row("bare view latency p50", statistics.median(ping_lat), "ms"),
        row("payment events with occurred_at", n / full_seconds, "events/s",
            ratio_to="plain events", ratio=(n / full_seconds) / rate,
            note=f"p50 {statistics.median(full_latencies):.1f} ms, p99 {percentile(full_latencies, 99):.1f} ms"),
        row("payment events applied by one worker process (cases opened)", applied / apply_seconds, "events/s",
            note=f"{applied:,} pending events in batches of {settings.PAYMENT_EVENTS_BATCH}"),
        row("queries per 1,000 events applied", counter.count * 1000 / applied, "queries"),
        row("PostgreSQL commit latency on this machine (context)", commit_latency_ms(), "ms",
            note="one INSERT + COMMIT round trip"),
    ]


def commit_latency_ms() -> float:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE IF NOT EXISTS bench_commit_probe (x int)")
    samples = []
    for _ in range(30):
        start = time.perf_counter()
        with connection.cursor() as cursor:
            cursor.execute("INSERT INTO bench_commit_probe VALUES (1)")
        samples.append((time.perf_counter() - start) * 1000)
    with connection.cursor() as cursor:
        cursor.execute("DROP TABLE bench_commit_probe")
    return statistics.median(samples)
