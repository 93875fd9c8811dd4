"""REST framework's JSON parser, with a body nested too deeply to parse answered as a 400."""

from __future__ import annotations

from rest_framework import parsers
from rest_framework.exceptions import ParseError


class JSONParser(parsers.JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:  # json raises it, not a ValueError, for e.g. 100,000 nested "["
            raise ParseError("JSON parse error - nested too deeply") from None
