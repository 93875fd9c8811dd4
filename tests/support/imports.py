"""Factories and helpers for import and API tests."""

from __future__ import annotations

import csv
import io

from integrations.models import ApiKey

NATIVE_HEADER = ["external_id", "number", "customer_external_id", "currency", "amount_due", "amount_paid",
                 "issued_at", "due_date", "status", "payment_failed", "decline_code"]


def native_csv(rows: list[dict], header: list[str] | None = None, delimiter: str = ",") -> str:
    header = header or NATIVE_HEADER
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=header, delimiter=delimiter, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow(row)
    return out.getvalue()


def invoice_row(n: int, customer: str = "cus_a", **overrides) -> dict:
    row = {"external_id": f"in_{n}", "number": f"INV-{n}", "customer_external_id": customer, "currency": "USD",
           "amount_due": "100.00", "amount_paid": "0", "issued_at": "2026-03-01", "due_date": "2026-03-31",
           "status": "", "payment_failed": "", "decline_code": ""}
    row.update(overrides)
    return row


def api_key(scope: str = ApiKey.Scope.READ_WRITE, name: str = "billing system") -> tuple[ApiKey, str]:
    return ApiKey.issue(name, scope)
