"""``field__any=[...]``: the ``in`` lookup, sent to PostgreSQL as ``= ANY(%s)`` with one array parameter.

Django renders ``pk__in=ids`` as ``IN (%s, %s, ...)``: one placeholder per value, each value prepared
by the field in Python, and a statement text that changes with the list's length (psycopg re-parses
it on every execution instead of caching it). The engine filters by the ids of a whole batch several
times per batch; with ``__any`` each list is one parameter. Other databases get the ordinary ``IN``.
Meant for integer keys (ids and foreign keys).
"""

from __future__ import annotations

from django.core.exceptions import EmptyResultSet
from django.db.models import Field
from django.db.models.fields.related import ForeignObject
from django.db.models.lookups import In


class AnyOf(In):
    lookup_name = "any"

    def get_prep_lookup(self):
        if self.rhs_is_direct_value():
            # Integers as they are (int() is what an integer field's get_prep_value does).
            self.rhs = [int(v) for v in self.rhs if v is not None]
            return self.rhs
        return super().get_prep_lookup()

    def as_postgresql(self, compiler, connection):
        if not self.rhs_is_direct_value():
            return super().as_sql(compiler, connection)
        if not self.rhs:
            raise EmptyResultSet
        lhs_sql, lhs_params = self.process_lhs(compiler, connection)
        db_type = self.lhs.output_field.db_type(connection) or "bigint"
        if "int" not in db_type and "serial" not in db_type:
            return super().as_sql(compiler, connection)
        return f"{lhs_sql} = ANY(%s::bigint[])", (*lhs_params, list(dict.fromkeys(self.rhs)))


Field.register_lookup(AnyOf)
ForeignObject.register_lookup(AnyOf)  # foreign keys take their lookups from ForeignObject down
