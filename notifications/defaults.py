"""Shipped message templates, one file per code, channel and language:
notifications/default_templates/<locale>/<code>.<channel>.txt, starting with a ``Subject:`` line
for email. Loading never overwrites a template staff have edited."""

from __future__ import annotations

from pathlib import Path

from notifications.models import MessageTemplate

DEFAULTS_DIR = Path(__file__).resolve().parent / "default_templates"


def iter_default_templates():
    for path in sorted(DEFAULTS_DIR.glob("*/*.txt")):
        locale = path.parent.name
        code, channel = path.stem.rsplit(".", 1)
        text = path.read_text(encoding="utf-8")
        subject = ""
        if text.startswith("Subject:"):
            first, text = text.split("\n", 1)
            subject = first[len("Subject:"):].strip()
        html_path = path.with_suffix(".html")
        body_html = html_path.read_text(encoding="utf-8") if html_path.exists() else ""
        yield {"code": code, "channel": channel, "locale": locale, "subject": subject,
               "body_text": text, "body_html": body_html}


def load_default_templates() -> tuple[int, int]:
    """Create missing default templates; returns (created, kept)."""
    created = kept = 0
    for data in iter_default_templates():
        key = {k: data[k] for k in ("code", "channel", "locale")}
        _obj, was_created = MessageTemplate.objects.get_or_create(**key, defaults=data)
        created += was_created
        kept += not was_created
    return created, kept
