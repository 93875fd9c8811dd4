from __future__ import annotations

import json
import logging
import uuid
from pathlib import Path

from django.conf import settings
from django.utils import timezone

from notifications.sms.base import SmsBackend

logger = logging.getLogger("notifications.sms")


class ConsoleSmsBackend(SmsBackend):
    """Nothing leaves the machine: each message is logged and written as a JSON file."""

    def send(self, to: str, body: str, *, reference: str = "") -> str:
        message_id = f"console-{uuid.uuid4().hex}"
        logger.info("SMS to %s (%s): %s", to, message_id, body)
        if settings.SMS_FILE_PATH:
            folder = Path(settings.SMS_FILE_PATH)
            folder.mkdir(parents=True, exist_ok=True)
            record = {"id": message_id, "to": to, "body": body, "reference": reference,
                      "at": timezone.now().isoformat()}
            (folder / f"{message_id}.json").write_text(json.dumps(record, ensure_ascii=False), encoding="utf-8")
        return message_id
