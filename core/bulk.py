"""Batch inserts without the per-row cost of model instances: the engine's hot path (dunning.engine).

``insert_rows``: an ``INSERT`` of column tuples. On PostgreSQL it is one
``INSERT ... SELECT ... FROM json_to_recordset(%s::json)`` built here: the rows travel as one JSON
document (one json.dumps in C instead of psycopg rendering an array per column element by element,
and json_to_recordset is also cheaper for the server than UNNEST of one array per column); the
columns a caller does not give are filled with their model defaults, sent once. Elsewhere, or with
FAST_INSERTS off, the rows become model instances and go through ``bulk_create``. Both write the
same rows (tests/test_bulk_rows.py compares them field by field), so callers keep one code path.
Other inserts use ``bulk_create`` as they are.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence

from django.db import connections, models
from django.utils import timezone

# Set to False to force the portable path (tests compare the two).
FAST_INSERTS = True

# Internal types whose values go into the JSON document as they are (str, int, bool, None; datetimes,
# dates and Decimals as text, see _TEXT_IN_JSON): Field.get_db_prep_save returns them unchanged on
# PostgreSQL. Other fields' values go through get_db_prep_save first.
_PLAIN = {
    "AutoField", "BigAutoField", "SmallAutoField", "BigIntegerField", "IntegerField", "SmallIntegerField",
    "PositiveBigIntegerField", "PositiveIntegerField", "PositiveSmallIntegerField", "BooleanField",
    "CharField", "TextField", "SlugField", "EmailField", "URLField", "DateTimeField", "DateField",
    "DecimalField",
}


# Callable defaults whose one value serves every row of a batch: an empty container, the batch's time.
SHARED_DEFAULTS = (dict, list, timezone.now)


def _fields_by_attname(model: type[models.Model]) -> dict[str, models.Field]:
    return {f.attname: f for f in model._meta.concrete_fields}


def _defaults(model: type[models.Model], given: Sequence[str], now) -> list[tuple[models.Field, object]]:
    """(field, value) of every concrete column the caller did not give: auto_now(_add) -> now, else
    the field's default, as Model.__init__ and pre_save would set them."""
    missing = []
    for field in model._meta.concrete_fields:
        if field.attname in given or field.primary_key:
            continue
        if getattr(field, "auto_now", False) or getattr(field, "auto_now_add", False):
            value = now
        elif field.has_default() and callable(field.default) and field.default not in SHARED_DEFAULTS:
            # One value is sent for the whole batch: a default computed per row (a secret, a UUID)
            # would repeat. The caller must give such a column.
            raise TypeError(f"insert_rows: give {model.__name__}.{field.attname} (its default is computed per row)")
        else:
            value = field.get_default()
        missing.append((field, value))
    return missing


def insert_rows(model: type[models.Model], columns: Sequence[str], rows: Sequence[Sequence], *,
                returning: bool = False, ignore_conflicts: bool = False, using: str = "default") -> list[int] | None:
    """Insert ``rows`` (tuples of Python values in ``columns`` order, attnames) into ``model``'s table.

    ``returning``: the new primary keys, in row order. ``ignore_conflicts``: rows that violate a
    unique constraint are skipped (``ON CONFLICT DO NOTHING``, as ``bulk_create``). Not both.

    On PostgreSQL a given ``auto_now``/``auto_now_add`` column is stored as given (``bulk_create``
    sets it to the current time), and only plain column types are supported (TypeError otherwise).
    """
    if returning and ignore_conflicts:
        raise ValueError("insert_rows: skipped rows have no key, so returning and ignore_conflicts do not mix")
    if not rows:
        return [] if returning else None
    connection = connections[using]
    if connection.vendor != "postgresql" or not FAST_INSERTS:
        return _portable(model, columns, rows, returning=returning, ignore_conflicts=ignore_conflicts,
                         using=using)
    fields = _fields_by_attname(model)
    given = [fields[name] for name in columns]
    missing = _defaults(model, columns, timezone.now())
    quote = connection.ops.quote_name
    record, convert = [], []
    for index, field in enumerate(given):
        kind = field.get_internal_type()
        record.append(f"c{index} {_db_type(field, connection)}")
        if kind == "JSONField":
            # Nested in the document as it is (json_to_recordset turns a JSON null into SQL NULL, as
            # Django stores None); a custom encoder's output is what Django would have stored.
            if field.encoder is not None:
                convert.append((index, lambda v, encoder=field.encoder: json.loads(json.dumps(v, cls=encoder))))
        elif kind in _TEXT_IN_JSON:
            convert.append((index, _as_text))
        elif kind not in _PLAIN and not field.is_relation:
            # Arrays, binary data, ranges... have no plain text form here: use bulk_create for them.
            raise TypeError(f"insert_rows: {model.__name__}.{field.attname} ({kind}) is not supported")
    keys = [f"c{index}" for index in range(len(given))]
    documents = [dict(zip(keys, row, strict=True)) for row in rows]
    for index, function in convert:
        key = keys[index]
        last = text = None  # most rows of a batch share one timestamp object
        for document in documents:
            value = document[key]
            if value is not None:
                if value is not last:
                    last, text = value, function(value)
                document[key] = text
    constants, constant_params = [], []
    for field, value in missing:
        constants.append(f"(%s)::{_db_type(field, connection)}")
        constant_params.append(field.get_db_prep_save(value, connection))
    names = ", ".join(quote(f.column) for f in [*given, *(f for f, _v in missing)])
    select = ", ".join([*(f"r.{key}" for key in keys), *constants])
    # Rows come out of json_to_recordset in the array's order, so RETURNING gives the keys in row
    # order (the assumption Django's own UNNEST insert makes).
    sql = (f"INSERT INTO {quote(model._meta.db_table)} ({names}) "  # noqa: S608 (names from the model)
           f"SELECT {select} FROM json_to_recordset(%s::json) AS r({', '.join(record)})")
    if ignore_conflicts:
        sql += " ON CONFLICT DO NOTHING"
    if returning:
        sql += f" RETURNING {quote(model._meta.pk.column)}"
    with connection.cursor() as cursor:
        # In the order of the placeholders: the constants, then the rows as one JSON document.
        cursor.execute(sql, [*constant_params, json.dumps(documents)])
        if returning:
            return [r[0] for r in cursor.fetchall()]
    return None


# Sent as JSON strings and read back by the column's type: isoformat() (aware datetimes) and str()
# round-trip exactly.
_TEXT_IN_JSON = {"DateTimeField", "DateField", "DecimalField"}


def _as_text(value) -> str:
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


def _db_type(field: models.Field, connection) -> str:
    # Without length parameters (varchar, not varchar(50); numeric, not numeric(14, 4)): too long a
    # value still fails when the row is stored, and nothing is truncated silently.
    return re.sub(r"\(\s*\d+\s*(,\s*\d+\s*)?\)", "", field.db_type(connection))


def _portable(model, columns, rows, *, returning, ignore_conflicts, using):
    # Model.__init__ fills the other fields' defaults; bulk_create's pre_save the auto_now ones.
    objs = [model(**dict(zip(columns, row, strict=True))) for row in rows]
    model._default_manager.db_manager(using).bulk_create(objs, ignore_conflicts=ignore_conflicts)
    return [obj.pk for obj in objs] if returning else None
