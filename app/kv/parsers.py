"""A strict JSON parser: UTF-8 only, no NaN/Infinity, bounded size and nesting."""

from __future__ import annotations

from django.conf import settings
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.parsers import BaseParser

from .consistency import loads_strict


class ValueTooLarge(Exception):
    pass


class StrictJSONParser(BaseParser):
    media_type = "application/json"

    def parse(self, stream, media_type=None, parser_context=None):
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        request = (parser_context or {}).get("request")
        length = request.META.get("CONTENT_LENGTH") if request is not None else None
        if length and length.isdigit() and int(length) > limit:
            raise ValueTooLarge(f"the body is larger than {limit} bytes")
        raw = stream.read(limit + 1) if stream is not None else b""
        if len(raw) > limit:
            raise ValueTooLarge(f"the body is larger than {limit} bytes")
        return loads_strict(raw)


class JSONOnlyNegotiation(DefaultContentNegotiation):
    """Parsers are chosen as usual (so a wrong Content-Type is a 415); the answer is always
    JSON, whatever Accept says, without parsing Accept on every request."""

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type
