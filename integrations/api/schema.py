"""drf-spectacular post-processing: every operation documents the error responses it can give."""

from __future__ import annotations

ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["status", "code", "message", "fields"],
            "properties": {
                "status": {"type": "integer"},
                "code": {"type": "string", "example": "validation_error"},
                "message": {"type": "string"},
                "fields": {
                    "type": "object",
                    "additionalProperties": {"type": "array", "items": {"type": "string"}},
                    "description": "Messages per invalid field (validation errors only).",
                },
            },
        }
    },
}
DESCRIPTIONS = {
    "400": "Invalid request: see error.fields for each invalid field.",
    "401": "No API key, or an unknown or revoked one.",
    "403": "The key's scope does not allow this (writing needs a read-write key).",
    "404": "No such object.",
    "409": "Conflict: an illegal state transition, or an Idempotency-Key reused with a different request.",
    "429": "Too many requests for this key; retry after the Retry-After header's seconds.",
}


def add_error_responses(result, generator, request, public):
    result.setdefault("components", {}).setdefault("schemas", {})["Error"] = ERROR_SCHEMA
    ref = {"$ref": "#/components/schemas/Error"}
    for path, operations in result.get("paths", {}).items():
        for method, operation in operations.items():
            if method not in ("get", "post", "put", "patch", "delete"):
                continue
            codes = ["401", "403", "429"]
            if method != "get" or "{" in path or "parameters" in operation:
                codes.append("400")
            if "{" in path:
                codes.append("404")
            if method == "post":
                codes += ["400", "409"]
            responses = operation.setdefault("responses", {})
            for code in codes:
                responses.setdefault(code, {"description": DESCRIPTIONS[code],
                                            "content": {"application/json": {"schema": ref}}})
    return result
