"""Batch rows without the per-row cost of model instances: the engine's hot path (dunning.engine).

* ``instances``: model instances built from ``values_list`` rows by filling their ``__dict__``
  (what ``Model.from_db`` ends up with, without ``Model.__init__``'s per-field work); the fields not
  loaded are deferred exactly as with ``.only()``.
* ``insert_rows``: an ``INSERT`` of column tuples. On PostgreSQL it is one
  ``INSERT ... SELECT * FROM UNNEST(%s::type[], ...)`` built here, the columns a caller does not give
  filled with their model defaults (sent once, not once per row); elsewhere the rows become model
  instances and go through ``bulk_create``. Both write the same rows (tests/test_bulk_rows.py
  compares them field by field), so callers keep one code path.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence

from django.db import connections, models
from django.db.models.base import ModelState
from django.utils import timezone

# Set to False to force the portable path (tests compare the two).
FAST_INSERTS = True

# Internal types whose Python values (str, int, bool, aware datetime, date, Decimal, None) psycopg
# adapts directly: Field.get_db_prep_save returns them unchanged on PostgreSQL.
_PLAIN = {
    "AutoField", "BigAutoField", "SmallAutoField", "BigIntegerField", "IntegerField", "SmallIntegerField",
    "PositiveBigIntegerField", "PositiveIntegerField", "PositiveSmallIntegerField", "BooleanField",
    "CharField", "TextField", "SlugField", "EmailField", "URLField", "DateTimeField", "DateField",
    "DecimalField",
}


def instances(model: type[models.Model], attnames: Sequence[str], rows: Iterable[Sequence],
              using: str = "default") -> list[models.Model]:
    """Model instances with these attributes set from each row (as loaded by ``values_list``)."""
    new = model.__new__
    built = []
    for row in rows:
        obj = new(model)
        state = ModelState()
        state.adding = False
        state.db = using
        values = dict(zip(attnames, row, strict=True))
        values["_state"] = state
        obj.__dict__ = values
        built.append(obj)
    return built


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
        else:
            value = field.get_default()
        missing.append((field, value))
    return missing


def insert_rows(model: type[models.Model], columns: Sequence[str], rows: Sequence[Sequence], *,
                returning: bool = False, ignore_conflicts: bool = False, using: str = "default") -> list[int] | None:
    """Insert ``rows`` (tuples of Python values in ``columns`` order, attnames) into ``model``'s table.

    ``returning``: the new primary keys, in row order. ``ignore_conflicts``: rows that violate a
    unique constraint are skipped (``ON CONFLICT DO NOTHING``, as ``bulk_create``).
    """
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
    arrays, casts = [], []
    for index, field in enumerate(given):
        values = [row[index] for row in rows]
        kind = field.get_internal_type()
        if kind == "JSONField":
            encoder = field.encoder
            values = [None if v is None else json.dumps(v, cls=encoder) for v in values]
        elif kind not in _PLAIN and not field.is_relation:
            values = [field.get_db_prep_save(v, connection) for v in values]
        arrays.append(values)
        casts.append(f"(%s)::{_db_type(field, connection)}[]")
    constants, constant_params = [], []
    for field, value in missing:
        constants.append(f"(%s)::{_db_type(field, connection)}")
        constant_params.append(field.get_db_prep_save(value, connection))
    names = ", ".join(quote(f.column) for f in [*given, *(f for f, _v in missing)])
    select = ", ".join(["u.*", *constants])
    sql = (f"INSERT INTO {quote(model._meta.db_table)} ({names}) "  # noqa: S608 (names from the model)
           f"SELECT {select} FROM UNNEST({', '.join(casts)}) AS u")
    if ignore_conflicts:
        sql += " ON CONFLICT DO NOTHING"
    if returning:
        sql += f" RETURNING {quote(model._meta.pk.column)}"
    with connection.cursor() as cursor:
        cursor.execute(sql, [*constant_params, *arrays])  # in the order of the placeholders
        if returning:
            return [r[0] for r in cursor.fetchall()]
    return None


def _db_type(field: models.Field, connection) -> str:
    # Without length parameters, as Django's own UNNEST insert (varchar[], not varchar(50)[]).
    return field.db_type(connection).split("(")[0]


def _portable(model, columns, rows, *, returning, ignore_conflicts, using):
    # Model.__init__ fills the other fields' defaults; bulk_create's pre_save the auto_now ones.
    objs = [model(**dict(zip(columns, row, strict=True))) for row in rows]
    model._default_manager.db_manager(using).bulk_create(objs, ignore_conflicts=ignore_conflicts)
    return [obj.pk for obj in objs] if returning else None
