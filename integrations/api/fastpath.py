"""``POST /api/v1/payment-events/`` for a plain ``payment_failed``, answered without REST framework's
pipeline.

This is the API's busiest request: a billing system reports every failed charge. On PostgreSQL it is
one SQL statement (``events.queue_failure_with_key``), but REST framework's request wrapping, content
negotiation, authentication, permission and throttle classes and serializer validation cost several
times that statement in Python. So the common case is answered here, by the same rules taken from
the same places:

- the API key: ``auth.verified_key_for`` and a read-write scope, which the statement checks again
  (revocation is immediate);
- the throttle: ``auth.hit``, counted once even when the request goes on to the full pipeline;
- the ``Idempotency-Key``: ``idempotency.valid_key`` and ``idempotency.body_hash``;
- the input: ``PaymentEventInput``'s own declared fields (lengths, blanks), for string values that
  REST framework would keep as they are;
- the stored event and the body: ``events.pending_failure`` and ``PaymentEventSerializer``.

Everything else returns None and goes on to the full pipeline, which answers as it always has: a
missing or bad key, a throttled client, any field that is absent, blank, too long, not a string, with
spaces to trim, or other than the plain ones (``amount``, ``occurred_at``, ``payment_method``...), a
repeated event id, an unknown invoice, a used Idempotency-Key, an Accept header or query string
that asks for something else than compact JSON, SQLite. Tests compare the two paths' answers byte
for byte, and check that every body this path accepts is one the serializer accepts with the same
values.
"""

from __future__ import annotations

import json

from django.core.exceptions import RequestDataTooBig
from django.core.validators import MaxLengthValidator, ProhibitNullCharactersValidator
from django.db import InterfaceError, OperationalError, connection
from django.http import HttpRequest, HttpResponse
from rest_framework import serializers
from rest_framework.authentication import get_authorization_header
from rest_framework.renderers import JSONRenderer
from rest_framework.validators import ProhibitSurrogateCharactersValidator

from integrations import events
from integrations.api import auth, idempotency
from integrations.api.serializers import PaymentEventInput, PaymentEventSerializer
from integrations.models import PaymentEvent

# The input fields this path takes, with (max_length, allow_blank) from PaymentEventInput: only plain
# CharFields that trim whitespace and have no validators of their own beyond those REST framework adds.
PLAIN = ("id", "invoice", "decline_code", "message", "reference")
REQUIRED = ("id", "invoice")  # invoice: required for payment_failed by PaymentEventInput.validate


KNOWN_VALIDATORS = (MaxLengthValidator, ProhibitNullCharactersValidator, ProhibitSurrogateCharactersValidator)


def _rules() -> dict[str, tuple[int | None, bool]]:
    rules = {}
    for name in PLAIN:
        field = PaymentEventInput._declared_fields.get(name)
        if (type(field) is serializers.CharField and field.trim_whitespace and field.min_length is None
                and all(type(v) in KNOWN_VALIDATORS for v in field.validators)):
            rules[name] = (field.max_length, field.allow_blank)
    return rules


RULES = _rules()
RESPONSE_HEADERS = {"Allow": "GET, POST, HEAD, OPTIONS"}  # as REST framework sends them (tests compare)
_renderer = JSONRenderer()


def _plain(value, max_length: int | None, allow_blank: bool) -> bool:
    """A string REST framework's CharField keeps unchanged and accepts."""
    if not isinstance(value, str) or value != value.strip() or "\x00" in value:
        return False
    if not value and not allow_blank:
        return False
    if max_length is not None and len(value) > max_length:
        return False
    try:
        value.encode("utf-8")  # lone surrogates (from JSON "\ud800" escapes) are refused by the serializer
    except UnicodeEncodeError:
        return False
    return True


def parse(request: HttpRequest) -> dict | None:
    """The event's fields if the request's body is a plain payment_failed this path can take, else None."""
    if request.content_type != "application/json" or any(
        k != "charset" or v.lower() != "utf-8" for k, v in request.content_params.items()
    ):
        return None
    try:
        data = json.loads(request.body.decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError, RequestDataTooBig):
        return None  # the full pipeline answers, as for any other body it refuses
    return plain_event(data)


# Accept headers that REST framework's negotiation answers with compact JSON (its only renderer).
PLAIN_ACCEPT = {"", "*/*", "application/*", "application/json"}


def negotiates_plain_json(request: HttpRequest) -> bool:
    """No query string (``?format=`` overrides negotiation) and an Accept header that selects compact
    JSON; anything else (``text/html``: 406, ``; indent=4``...) is left to the full pipeline."""
    return not request.META.get("QUERY_STRING") and request.META.get("HTTP_ACCEPT", "").strip() in PLAIN_ACCEPT


def plain_event(data) -> dict | None:
    """``data`` (parsed JSON) if it is a payment_failed with only plain string fields that
    PaymentEventInput accepts and keeps unchanged, else None."""
    if not isinstance(data, dict) or data.get("type") != PaymentEvent.Kind.PAYMENT_FAILED:
        return None
    for name in REQUIRED:
        if name not in data:
            return None
    for name, value in data.items():
        if name == "type":
            continue
        rule = RULES.get(name)
        if rule is None or not _plain(value, *rule):
            return None
    return data


def accept_payment_failed(request: HttpRequest) -> HttpResponse | None:
    """The 202 for a plain payment_failed on PostgreSQL, or None for the full pipeline to answer."""
    if connection.vendor != "postgresql":
        return None
    # The header split as ApiKeyAuthentication splits it (bytes: ASCII whitespace only).
    header = get_authorization_header(request).split()
    idem_key = request.headers.get(idempotency.HEADER, "").strip()
    if len(header) != 2 or header[0].lower() != b"bearer" or not header[1].isascii() or not idem_key:
        return None
    if not idempotency.valid_key(idem_key) or not negotiates_plain_json(request):
        return None
    # The key before the body: without a valid key, nothing is parsed (the full pipeline answers 401).
    key = auth.verified_key_for(header[1].decode("ascii"))
    if key is None:
        return None
    if not key.can_write:
        auth.forget_key(key)  # the full pipeline reads the key again and answers (403, or on if upgraded)
        return None
    data = parse(request)
    if data is None:
        return None
    allowed, retry_after = auth.hit(auth.throttle_ident(key))
    request.api_throttle_hit = (allowed, retry_after)  # counted: the full pipeline must not count it again
    if not allowed:
        return None
    fields = {name: value for name, value in data.items() if name not in ("id", "type")}
    event = events.pending_failure(data["id"], fields, key)
    body = PaymentEventSerializer(event).data
    claim = events.Claim(idem_key, idempotency.body_hash("POST", request.path, request.body), "POST", request.path)
    try:
        # Without Django's health check of the reused connection (a round trip per request): a
        # connection that died since the last request fails this statement instead, which then
        # wrote nothing (or, if it broke after the commit, the full pipeline replays the stored 202).
        queued = events.queue_failure_with_key(event, claim, body, health_check=False)
    except (InterfaceError, OperationalError):
        # Only a dead connection is handed on; any other database error (a timeout, a deadlock) is
        # the server error the full pipeline would also give, without running the statement twice.
        if connection.in_atomic_block or connection.is_usable():
            raise
        connection.close()  # the full pipeline connects again
        return None
    if queued is None:
        # A repeat, an unknown invoice, a used Idempotency-Key, or a key revoked or changed since this
        # process read it: the full pipeline answers, with the key read afresh.
        auth.forget_key(key)
        return None
    auth.note_use(key, queued.key_last_used_at)
    return HttpResponse(_renderer.render(body), status=202, content_type="application/json",
                        headers=RESPONSE_HEADERS)
