"""config.pg_arrays.FastListDumper renders exactly what psycopg's own ListDumper renders."""

import datetime
import json
from decimal import Decimal

import psycopg
import pytest
from psycopg.adapt import AdaptersMap, PyFormat, Transformer
from psycopg.types.array import ListDumper
from psycopg.types.json import Jsonb

from config.pg_arrays import FastListDumper

TRICKY = [
    "", "plain", "with space", 'a "quoted" word', "back\\slash", '\\"both\\"', "NULL", "null", "{braces}",
    "comma, here", "tab\there", "new\nline", "unicode é ü ✓", "\u2003em space", "semi;colon", None,
    json.dumps({"name": 'O"Brien \\ co', "list": [1, "two"], "nested": {"x": None}}),
]


class _Context:
    def __init__(self, adapters):
        self.adapters = adapters
        self.connection = None


def transformers():
    fast = AdaptersMap(psycopg.adapters)
    fast.register_dumper(list, FastListDumper)
    return Transformer(), Transformer(_Context(fast))


@pytest.mark.parametrize("values", [
    TRICKY,
    [[s, s] for s in TRICKY if s is not None],  # nested lists
    [Jsonb({"k": s, "n": i}) for i, s in enumerate(TRICKY)],
    [1, 2, None, 3],
    [Decimal("49.00"), Decimal("-1.5"), None],
    [datetime.datetime(2026, 6, 1, 12, tzinfo=datetime.UTC), None],
    [],
    [None, None],
])
def test_same_bytes_as_psycopg(values):
    default, fast = transformers()
    expected = default.get_dumper(values, PyFormat.TEXT)
    got = fast.get_dumper(values, PyFormat.TEXT)
    assert isinstance(got, FastListDumper) and type(expected) is ListDumper
    assert bytes(got.dump(values)) == bytes(expected.dump(values))


def test_registered_on_postgresql_connections(db):
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL only")
    connection.ensure_connection()
    with connection.cursor() as cur:
        assert issubclass(cur.cursor.adapters.get_dumper(list, PyFormat.TEXT), FastListDumper)
        # A round trip of the awkward values through an UNNEST, as Django's bulk insert sends them.
        cur.execute("SELECT x FROM UNNEST(%s::text[]) WITH ORDINALITY AS t(x, i) ORDER BY i", [TRICKY])
        assert [row[0] for row in cur.fetchall()] == TRICKY
