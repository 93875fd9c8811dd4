from __future__ import annotations

from rest_framework.pagination import CursorPagination


class Cursor(CursorPagination):
    """Stable pages however fast rows are added; ?ordering= picks the order, ?page_size= the size."""

    ordering = "-id"
    page_size_query_param = "page_size"
    max_page_size = 500
