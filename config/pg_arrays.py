"""A faster text dumper for Python lists on PostgreSQL connections (psycopg 3).

Django 5.2 bulk-inserts on PostgreSQL with ``INSERT ... SELECT * FROM UNNEST(%s::type[], ...)``: each
column is one list parameter, and with client-side binding (the default) psycopg renders it as an
array literal. psycopg's ListDumper escapes every element that needs quotes with
``re.sub(rb'(["\\])', rb"\\\1", ...)``, which expands the replacement template once per match: a JSON
element has dozens of double quotes, so dumping the context column of 333 outbox rows took about
45 ms, most of the engine's per-batch cost of its outbox and timeline inserts. ``bytes.replace``
produces the same bytes about 20 times faster (tests/test_pg_arrays.py compares the two).
"""

from __future__ import annotations

from psycopg.types.array import ListDumper


class FastListDumper(ListDumper):
    """psycopg's ListDumper with the element escaping done by bytes.replace (identical output)."""

    def _dump_list(self, obj, tokens, needs_quotes) -> None:
        if not obj:
            tokens.append(b"{}")
            return
        dump = self.sub_dumper.dump if self.sub_dumper else self._dump_item
        delimiter = self.delimiter
        tokens.append(b"{")
        for item in obj:
            if item is None:
                tokens.append(b"NULL")
            elif isinstance(item, list):
                self._dump_list(item, tokens, needs_quotes)
            elif (ad := dump(item)) is None:
                tokens.append(b"NULL")
            else:
                if needs_quotes(ad):
                    # Backslashes first, then double quotes: what re.sub(rb'(["\\])', rb"\\\1") does.
                    ad = b'"' + bytes(ad).replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
                tokens.append(ad)
            tokens.append(delimiter)
        tokens[-1] = b"}"


def register(sender, connection, **kwargs) -> None:
    """connection_created receiver: use FastListDumper on every new psycopg 3 connection."""
    if connection.vendor != "postgresql":
        return
    adapters = getattr(connection.connection, "adapters", None)  # psycopg 2 connections have none
    if adapters is not None:
        adapters.register_dumper(list, FastListDumper)
