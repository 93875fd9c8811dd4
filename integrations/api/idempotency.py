"""``Idempotency-Key`` on every POST, as Stripe does it.

The first response (status and body, errors included) is stored and replayed for the same key; the
same key with a different request is a 409; a request still in progress with that key is a 409 too.
Keys are scoped to the API key and kept for API_IDEMPOTENCY_HOURS. A server error is not stored, so
the client may retry it with the same key.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.utils import timezone
from psycopg.types.json import Jsonb
from rest_framework import exceptions, status
from rest_framework.response import Response

from core import jsonb
from integrations.api.errors import Conflict, error_body
from integrations.models import ApiKey, IdempotencyRecord

HEADER = "Idempotency-Key"
KEY_PATTERN = r"^[!-~]+$"  # printable ASCII without spaces, e.g. a UUID
KEY_RE = re.compile(KEY_PATTERN)
ABANDONED_AFTER = timedelta(minutes=5)


class Replay(exceptions.APIException):
    """Raised in initial() to answer with the stored response instead of running the view."""

    def __init__(self, record: IdempotencyRecord):
        self.record = record
        super().__init__()


def request_hash(request) -> str:
    return body_hash(request.method, request.path, request.body)


def body_hash(method: str, path: str, body: bytes | None) -> str:
    """What tells two requests with one Idempotency-Key apart: method, path and the JSON body
    (canonical: key order and spacing do not count)."""
    body = body or b""
    try:
        canonical = json.dumps(json.loads(body), sort_keys=True, separators=(",", ":")).encode()
    except (ValueError, UnicodeDecodeError, RecursionError):
        canonical = body
    return hashlib.sha256(method.encode() + b" " + path.encode() + b"\n" + canonical).hexdigest()


def valid_key(value: str) -> bool:
    return len(value) <= 255 and KEY_RE.match(value) is not None


def key_of(request) -> str:
    """The request's Idempotency-Key, or a 400 naming the header."""
    key_value = request.headers.get(HEADER, "").strip()
    if not key_value:
        raise exceptions.ValidationError({HEADER: ["This header is required on every POST (any unique string, "
                                                   "e.g. a UUID), so that a retried request is not applied twice."]})
    if not valid_key(key_value):
        raise exceptions.ValidationError({HEADER: ["At most 255 printable ASCII characters without spaces."]})
    return key_value


def begin(request) -> IdempotencyRecord:
    key_value = key_of(request)
    api_key: ApiKey = request.auth
    digest = request_hash(request)
    now = timezone.now()
    for _round in range(2):
        record = _claim(api_key, key_value, request, digest, now)
        if record is not None:
            return record
        existing = IdempotencyRecord.objects.filter(api_key=api_key, key=key_value).first()
        if existing is None:
            continue
        expired = existing.created_at < now - timedelta(hours=settings.API_IDEMPOTENCY_HOURS)
        abandoned = existing.status_code is None and existing.created_at < now - ABANDONED_AFTER
        if expired or abandoned:
            IdempotencyRecord.objects.filter(pk=existing.pk, created_at=existing.created_at).delete()
            continue
        if existing.request_hash != digest:
            raise Conflict("This Idempotency-Key was already used with a different request.",
                           code="idempotency_key_reused")
        if existing.status_code is None:
            raise Conflict("A request with this Idempotency-Key is still in progress; retry shortly.",
                           code="idempotency_in_progress")
        raise Replay(existing)
    raise Conflict("This Idempotency-Key is being used by another request.", code="idempotency_in_progress")


def _claim(api_key: ApiKey, key_value: str, request, digest: str, now) -> IdempotencyRecord | None:
    """Insert the record, or return None if the key exists. A concurrent request with the same key that
    has not committed yet makes this wait for it (unique index), so the loser then sees its response."""
    record = IdempotencyRecord(api_key=api_key, key=key_value, method=request.method, path=request.path[:255],
                               request_hash=digest, created_at=now)
    if connection.vendor == "postgresql":
        # ON CONFLICT DO NOTHING: no error, so no savepoint round trips inside the request's transaction.
        table = IdempotencyRecord._meta.db_table
        with connection.cursor() as cursor:
            cursor.execute(
                f"INSERT INTO {table} (api_key_id, key, method, path, request_hash, created_at) "  # noqa: S608
                "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (api_key_id, key) DO NOTHING RETURNING id",
                [api_key.pk, key_value, record.method, record.path, digest, now])
            found = cursor.fetchone()
        if found is None:
            return None
        record.pk = found[0]
        record._state.adding = False
        return record
    try:
        with transaction.atomic():
            record.save(force_insert=True)
            return record
    except IntegrityError:
        return None


def finish(record: IdempotencyRecord, response: Response) -> None:
    if response.status_code >= 500:
        record.delete()
        return
    if connection.vendor == "postgresql":
        # Every POST ends here: plain SQL, as in _claim().
        with connection.cursor() as cursor:
            cursor.execute(f"UPDATE {IdempotencyRecord._meta.db_table} SET status_code = %s, "  # noqa: S608
                           "response_body = %s WHERE id = %s",
                           [response.status_code, Jsonb(response.data, dumps=jsonb.dumps), record.pk])
        return
    IdempotencyRecord.objects.filter(pk=record.pk).update(status_code=response.status_code,
                                                          response_body=response.data)


def replay_response(record: IdempotencyRecord) -> Response:
    return Response(record.response_body, status=record.status_code, headers={"Idempotent-Replayed": "true"})


class IdempotentMixin:
    """For API views: every POST goes through begin()/finish().

    By default the whole POST runs in one transaction with its idempotency record: a concurrent request
    with the same key waits on the record's unique index, then replays the committed response; one
    commit per request. Views whose handler calls a payment gateway set ``atomic_post = False`` so that
    the call happens outside any transaction (the record is then committed first, as "in progress").
    """

    _idempotency_record = None
    atomic_post = True

    def dispatch(self, request, *args, **kwargs):
        if request.method == "POST" and self.atomic_post:
            with transaction.atomic():
                return super().dispatch(request, *args, **kwargs)
        return super().dispatch(request, *args, **kwargs)

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        # Only for views that take a POST: any other gets its 405 from DRF, untouched.
        if request.method == "POST" and hasattr(self, "post"):
            self._idempotency_record = begin(request)

    def handle_exception(self, exc):
        if isinstance(exc, Replay):
            return replay_response(exc.record)
        try:
            return super().handle_exception(exc)
        except Exception:
            # A server error: forget the key so that the client's retry runs the request again.
            if self._idempotency_record is not None:
                self._idempotency_record.delete()
                self._idempotency_record = None
            raise

    def finalize_response(self, request, response, *args, **kwargs):
        response = super().finalize_response(request, response, *args, **kwargs)
        record, self._idempotency_record = self._idempotency_record, None
        if record is not None:
            finish(record, response)
        return response


__all__ = ["HEADER", "IdempotentMixin", "error_body", "status"]
