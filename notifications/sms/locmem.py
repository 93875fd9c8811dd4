from __future__ import annotations

import itertools

from notifications.sms.base import SmsBackend

# Tests read and clear this list, like django.core.mail.outbox.
outbox: list[dict] = []
_ids = itertools.count(1)


class LocmemSmsBackend(SmsBackend):
    def send(self, to: str, body: str, *, reference: str = "") -> str:
        message_id = f"locmem-{next(_ids)}"
        outbox.append({"id": message_id, "to": to, "body": body, "reference": reference})
        return message_id
