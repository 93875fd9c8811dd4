"""Issue 6: invoice import from CSV with full validation, on PostgreSQL.

A file of N invoice rows (1,000 customers; open invoices not yet due and paid ones, so the figure is the
import itself, not dunning) is imported by a fresh process through integrations.imports (validate every
row, then bulk writes). Reported: rows per second and that process's peak memory (RSS), the ratio to
django-import-export's default row-by-row import measured on a 5,000-row sample, and the ratio to
PostgreSQL COPY of the same file into a text staging table (the floor), plus a re-import (all unchanged).
"""

from __future__ import annotations

import csv
import datetime
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.common import Timer, row, truncate_all

SIZES = {"small": (10_000, 1_000), "full": (100_000, 5_000)}
ROOT = Path(__file__).resolve().parent.parent
HEADER = ["external_id", "number", "customer_external_id", "currency", "amount_due", "amount_paid", "issued_at",
          "due_date", "status", "auto_collect", "payment_failed", "decline_code"]


def write_file(path: Path, n: int, customers: int) -> None:
    today = datetime.date.today()
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(HEADER)
        for i in range(n):
            paid = i % 3 == 0
            amount = f"{(i % 500) + 9}.{i % 100:02d}"
            writer.writerow([f"in_{i:07d}", f"INV-{i:07d}", f"cus_{i % customers:05d}", "USD", amount,
                             amount if paid else "0", (today - datetime.timedelta(days=i % 20)).isoformat(),
                             (today + datetime.timedelta(days=30 - i % 20)).isoformat(), "paid" if paid else "open",
                             "true", "false", ""])


def build_customers(count: int) -> None:
    from customers.models import Customer

    truncate_all()
    Customer.objects.bulk_create(Customer(external_id=f"cus_{i:05d}", name=f"Customer {i}", currency="USD")
                                 for i in range(count))


def copy_floor(path: Path) -> float:
    from django.db import connection

    columns = ", ".join(f"{c} text" for c in HEADER)
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE TEMP TABLE bench_invoice_copy ({columns})")
        with Timer() as timer, cursor.cursor.copy("COPY bench_invoice_copy FROM STDIN (FORMAT csv, HEADER true)") as cp:
            with path.open("rb") as fh:
                while chunk := fh.read(1 << 20):
                    cp.write(chunk)
        cursor.execute("DROP TABLE bench_invoice_copy")
    return timer.seconds


def import_export_default(path: Path, sample: int) -> float:
    """django-import-export's default import (row by row, one FK query per row) on the first rows."""
    import tablib
    from import_export import fields, resources, widgets

    from billing.models import Invoice
    from customers.models import Customer

    class DefaultInvoiceResource(resources.ModelResource):
        customer_external_id = fields.Field(attribute="customer", column_name="customer_external_id",
                                            widget=widgets.ForeignKeyWidget(Customer, field="external_id"))

        class Meta:
            model = Invoice
            import_id_fields = ("external_id",)
            fields = ("external_id", "number", "customer_external_id", "currency", "amount_due", "amount_paid",
                      "issued_at", "due_date", "status", "auto_collect")

    with path.open(encoding="utf-8") as fh:
        lines = [next(fh) for _ in range(sample + 1)]
    dataset = tablib.Dataset().load("".join(lines), format="csv")
    with Timer() as timer:
        result = DefaultInvoiceResource().import_data(dataset, dry_run=False)
    if result.has_errors() or result.has_validation_errors():
        raise RuntimeError("the import-export baseline failed")
    Invoice.objects.all().delete()
    return timer.seconds


CHILD = """
import json, os, resource, sys, time
import django
django.setup()
from billing.imports import ImportOptions, file_opener
from integrations.imports import import_invoices
start = time.perf_counter()
report = import_invoices(file_opener(sys.argv[1]), ImportOptions())
seconds = time.perf_counter() - start
# The peak of this process image: /proc's VmHWM on Linux. (ru_maxrss carries over what the parent
# process held when it forked this one, so after the other benchmarks it reported their size.)
try:
    with open("/proc/self/status") as status:
        rss_kb = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
except OSError:
    rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"seconds": seconds, "rss_kb": rss_kb,
                  "new": report.new, "unchanged": report.unchanged, "invalid": report.invalid,
                  "written": report.written}))
"""


def import_in_child(path: Path) -> dict:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": os.environ.get("DJANGO_SETTINGS_MODULE", "config.settings")}
    out = subprocess.run([sys.executable, "-c", CHILD, str(path)], cwd=ROOT, env=env, capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(scale: str) -> list[dict]:
    n, sample = SIZES.get(scale, SIZES["full"])
    build_customers(1_000)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "invoices.csv"
        write_file(path, n, 1_000)
        copy_seconds = copy_floor(path)
        baseline_seconds = import_export_default(path, sample)
        first = import_in_child(path)
        if not first["written"] or first["new"] != n:
            raise RuntimeError(f"the import did not write every row: {first}")
        again = import_in_child(path)
    rate = n / first["seconds"]
    baseline_rate = sample / baseline_seconds
    copy_rate = n / copy_seconds
    return [
        row(f"import {n:,} invoice rows (validate + bulk write)", rate, "rows/s", target=">= 5,000 rows/s",
            ratio_to=f"import-export default ({sample:,}-row sample, {baseline_rate:,.0f} rows/s)",
            ratio=rate / baseline_rate),
        row("import vs PostgreSQL COPY of the same file", rate, "rows/s",
            ratio_to=f"COPY ({copy_rate:,.0f} rows/s)", ratio=rate / copy_rate),
        row("peak memory of the importing process", first["rss_kb"] / 1024, "MB", target="< 300 MB",
            note="RSS of a fresh process: Django + the import"),
        row(f"re-import of the same {n:,} rows (all unchanged)", n / again["seconds"], "rows/s",
            note=f"unchanged={again['unchanged']}, peak {again['rss_kb'] / 1024:.0f} MB"),
    ]
