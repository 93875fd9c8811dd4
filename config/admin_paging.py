"""A paginator for admin changelists on large tables: it never counts past a cap.

``COUNT(*)`` over a million rows costs a full index scan on every page view. Counting a LIMITed
subquery stops at CAP+1 rows; beyond that the page shows "10,000+" results and links to the first
CAP/per_page pages (filters and search narrow it down).
"""

from __future__ import annotations

from django.core.paginator import Paginator
from django.utils.functional import cached_property

CAP = 10_000


class CappedCountPaginator(Paginator):
    cap = CAP

    @cached_property
    def count(self) -> int:
        try:
            return self.object_list.order_by()[: self.cap + 1].count()
        except (AttributeError, TypeError):
            return len(self.object_list)

    @property
    def capped(self) -> bool:
        return self.count > self.cap
