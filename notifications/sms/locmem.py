from __future__ import annotations

import itertools

from notifications.sms.base import SmsBackend

# Tests read and clear this list, like django.core.mail.outbox.
outbox: list[dict] = []
_ids = itertools.count(1)


class LocmemSmsBackend(SmsBackend):
    """Deduplicates by idempotency key, as a provider that supports one does."""

    idempotent = True

    def send(self, to: str, body: str, *, reference: str = "", idempotency_key: str = "") -> str:
        for sent in outbox:
            if idempotency_key and sent["idempotency_key"] == idempotency_key:
                return sent["id"]
        message_id = f"locmem-{next(_ids)}"
        outbox.append({"id": message_id, "to": to, "body": body, "reference": reference,
                       "idempotency_key": idempotency_key})
        return message_id
