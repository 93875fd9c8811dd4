from __future__ import annotations

from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.pagination import CursorPagination


class Cursor(CursorPagination):
    """Stable pages however fast rows are added; ?ordering= picks the order, ?page_size= the size."""

    ordering = "-id"
    page_size_query_param = "page_size"
    max_page_size = 500

    def decode_cursor(self, request):
        try:
            return super().decode_cursor(request)
        except NotFound:
            # A malformed cursor is a bad request, not a missing page.
            raise ValidationError({self.cursor_query_param: [str(self.invalid_cursor_message)]}) from None
