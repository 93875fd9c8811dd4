"""``field__any=[...]``: the ``in`` lookup, sent to PostgreSQL as ``= ANY(%s)`` with one array parameter.

Django renders ``pk__in=ids`` as ``IN (%s, %s, ...)``: one placeholder per value, each value prepared
by the field in Python, and a statement text that changes with the list's length (psycopg re-parses
it on every execution instead of caching it). The engine filters by the ids of a whole batch several
times per batch; with ``__any`` each list is one parameter. Other databases get the ordinary ``IN``.
The array form is used for integer fields (ids and foreign keys); other fields get the ordinary ``IN``.
"""

from __future__ import annotations

from django.core.exceptions import EmptyResultSet
from django.db.models import IntegerField
from django.db.models.fields.related import ForeignObject
from django.db.models.lookups import In

_INTEGER_TYPES = {"AutoField", "BigAutoField", "SmallAutoField", "IntegerField", "BigIntegerField",
                  "SmallIntegerField", "PositiveIntegerField", "PositiveBigIntegerField", "PositiveSmallIntegerField"}


class AnyOf(In):
    lookup_name = "any"

    def get_prep_lookup(self):
        if self.rhs_is_direct_value() and self._integer_key():
            # Integers as they are (int() is what an integer field's get_prep_value does).
            self.rhs = [int(getattr(v, "pk", v)) for v in self.rhs if v is not None]  # ids or instances
            return self.rhs
        return super().get_prep_lookup()

    def _integer_key(self) -> bool:
        field = self.lhs.output_field
        target = field.target_field if field.is_relation else field
        return target.get_internal_type() in _INTEGER_TYPES

    def as_postgresql(self, compiler, connection):
        if not self.rhs_is_direct_value() or not self._integer_key():
            return super().as_sql(compiler, connection)
        if not self.rhs:
            raise EmptyResultSet
        lhs_sql, lhs_params = self.process_lhs(compiler, connection)
        return f"{lhs_sql} = ANY(%s::bigint[])", (*lhs_params, list(dict.fromkeys(self.rhs)))


def register() -> None:
    """Make ``__any`` available (core.apps.CoreConfig.ready). Integer columns and foreign keys only: on
    other fields (a JSONField's "any" key) the name stays free."""
    IntegerField.register_lookup(AnyOf)  # AutoField, BigAutoField and the other integer fields inherit it
    ForeignObject.register_lookup(AnyOf)  # foreign keys take their lookups from ForeignObject down
