"""One JSON shape for every error: {"error": {"status", "code", "message", "fields"}}."""

from __future__ import annotations

from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.views import exception_handler as drf_handler

from dunning.errors import DunningError


class Conflict(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_code = "conflict"
    default_detail = "The request conflicts with the current state."


def _flatten(detail) -> str:
    if isinstance(detail, list):
        return " ".join(_flatten(d) for d in detail)
    if isinstance(detail, dict):
        return " ".join(f"{k}: {_flatten(v)}" for k, v in detail.items())
    return str(detail)


def error_body(status_code: int, code: str, message: str, fields: dict | None = None) -> dict:
    return {"error": {"status": status_code, "code": code, "message": message, "fields": fields or {}}}


def exception_handler(exc, context):
    if isinstance(exc, DunningError):
        exc = Conflict(str(exc), code="invalid_transition")
    elif isinstance(exc, DjangoValidationError):
        exc = exceptions.ValidationError(exc.message_dict if hasattr(exc, "error_dict") else exc.messages)
    elif isinstance(exc, Http404):
        exc = exceptions.NotFound()
    response = drf_handler(exc, context)
    if response is None:
        return None
    detail = exc.detail if isinstance(exc, exceptions.APIException) else str(exc)
    fields: dict = {}
    if isinstance(exc, exceptions.ValidationError):
        code = "validation_error"
        if isinstance(detail, dict):
            fields = {k: [str(m) for m in (v if isinstance(v, list) else [v])] if not isinstance(v, dict)
                      else [_flatten(v)] for k, v in detail.items()}
            message = fields.pop("non_field_errors", None)
            message = " ".join(message) if message else "Some fields are invalid."
        else:
            message = _flatten(detail)
    else:
        code = getattr(detail, "code", None) or getattr(exc, "default_code", "error")
        message = _flatten(detail)
    response.data = error_body(response.status_code, str(code), message, fields)
    return response

