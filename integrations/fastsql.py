"""Plain SQL for the few statements every API request runs, on PostgreSQL.

Django's psycopg cursors bind parameters on the client: each value is quoted into the SQL text in
Python, which showed up as a tenth of the time of a payment event request. These cursors bind on the
server instead (the values travel apart from the SQL), on Django's own connection and transaction.
Statements are not prepared, so connection poolers in transaction mode (PgBouncer) keep working.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from django.db import connection


@contextmanager
def server_cursor(*, health_check: bool = True) -> Iterator[psycopg.Cursor]:
    if health_check:
        connection.close_if_health_check_failed()  # what Django's cursor() does before a request's first query
    connection.ensure_connection()
    with connection.wrap_database_errors, psycopg.Cursor(connection.connection) as cursor:
        yield cursor


def fetchone(sql: str, params: list, *, health_check: bool = True) -> tuple | None:
    """The first row of one statement. ``health_check=False`` skips the check Django makes of a reused
    connection before a request's first query (CONN_HEALTH_CHECKS, one round trip): for a caller that
    handles a broken connection itself."""
    with server_cursor(health_check=health_check) as cursor:
        cursor.execute(sql, params, prepare=False)
        return cursor.fetchone()
