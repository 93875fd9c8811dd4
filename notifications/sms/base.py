from __future__ import annotations

from django.conf import settings
from django.utils.module_loading import import_string


class SmsError(Exception):
    """A failed send. ``permanent`` means retrying cannot help (invalid or unsubscribed number)."""

    def __init__(self, message: str, *, permanent: bool, opted_out: bool = False):
        super().__init__(message)
        self.permanent = permanent
        self.opted_out = opted_out


class SmsBackend:
    """Send one text message; return the provider's message id.

    A backend whose provider deduplicates sends by an idempotency key sets ``idempotent = True`` and
    takes ``idempotency_key`` in ``send``: the same key sent twice must reach the customer once. The
    sender then retries a message whose fate a crash left unknown instead of asking staff.
    """

    idempotent = False

    def send(self, to: str, body: str, *, reference: str = "") -> str:  # pragma: no cover - interface
        raise NotImplementedError


_cache: dict[str, SmsBackend] = {}


def get_backend(path: str | None = None) -> SmsBackend:
    path = path or settings.SMS_BACKEND
    if path not in _cache:
        _cache[path] = import_string(path)()
    return _cache[path]


def send_sms(to: str, body: str, *, reference: str = "", idempotency_key: str = "") -> str:
    backend = get_backend()
    if backend.idempotent:
        return backend.send(to, body, reference=reference, idempotency_key=idempotency_key)
    return backend.send(to, body, reference=reference)
