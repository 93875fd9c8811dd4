"""Shared helpers for the benchmarks: a scratch PostgreSQL database, timing and query counting."""

from __future__ import annotations

import contextlib
import os
import time

DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/dunning_bench"


def prepare_environment() -> str:
    """Point Django at a fresh scratch database (dropped and re-created) and migrate it."""
    url = os.environ.get("BENCH_DATABASE_URL", DEFAULT_URL)
    if not url.startswith("postgres"):
        raise SystemExit("The benchmarks run on PostgreSQL: set BENCH_DATABASE_URL=postgres://...")
    import psycopg

    base, name = url.rsplit("/", 1)
    with psycopg.connect(f"{base}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ.setdefault("DEBUG", "true")
    os.environ.setdefault("SECRET_KEY", "bench-only-secret-key-0123456789-abcdefghijklmnopqrstuvwxyz")
    os.environ.setdefault("EMAIL_BACKEND", "django.core.mail.backends.locmem.EmailBackend")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    return url


def truncate_all() -> None:
    """Empty every project table between scenarios (fast, keeps the schema)."""
    from django.apps import apps
    from django.db import connection

    tables = [m._meta.db_table for m in apps.get_models() if m._meta.app_label in
              {"customers", "billing", "dunning", "notifications", "reports", "integrations"} and not m._meta.proxy]
    existing = set(connection.introspection.table_names())
    with connection.cursor() as cur:
        cur.execute("TRUNCATE " + ", ".join(f'"{t}"' for t in tables if t in existing) + " RESTART IDENTITY CASCADE")


class QueryCounter:
    def __init__(self):
        self.count = 0

    def __call__(self, execute, sql, params, many, context):
        self.count += 1
        return execute(sql, params, many, context)


@contextlib.contextmanager
def count_queries():
    from django.db import connection

    counter = QueryCounter()
    with connection.execute_wrapper(counter):
        yield counter


class Timer:
    def __enter__(self):
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.start


def row(name: str, value: float, unit: str, *, target: str = "", ratio_to: str = "", ratio: float | None = None,
        note: str = "") -> dict:
    return {"name": name, "value": value, "unit": unit, "target": target, "ratio_to": ratio_to, "ratio": ratio,
            "note": note}
