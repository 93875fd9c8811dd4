"""Import invoices from a large CSV or XLSX file: streamed, validated first, written in bulk."""

from __future__ import annotations

import sys

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from billing.imports import FORMATS, ImportOptions, file_opener
from integrations.imports import import_invoices


def count_lines(path: str) -> int:
    lines = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            lines += chunk.count(b"\n")
    return lines


class Command(BaseCommand):
    help = "Import invoices (native columns or a Stripe export). Nothing is written if any row is invalid."

    def add_arguments(self, parser):
        parser.add_argument("file")
        parser.add_argument("--format", choices=FORMATS, default="native")
        parser.add_argument("--dry-run", action="store_true", help="Validate and report; write nothing.")
        parser.add_argument("--valid-only", action="store_true",
                            help="Import the valid rows even when some are invalid.")
        parser.add_argument("--date-format", default="", help="The file's date format, e.g. %%d/%%m/%%Y.")
        numbers = parser.add_mutually_exclusive_group()
        numbers.add_argument("--decimal-comma", dest="decimal_comma", action="store_const", const=True,
                             help="Amounts are written 1.234,56 (default: refuse amounts like 1,234 or 1.234).")
        numbers.add_argument("--decimal-point", dest="decimal_comma", action="store_const", const=False,
                             help="Amounts are written 1,234.56.")
        parser.add_argument("--encoding", default="", help="Force an encoding (default: detect).")
        parser.add_argument("--delimiter", default="", help="Force a delimiter (default: detect).")
        parser.add_argument("--skipped", default="", help="Write the invalid rows with a reason column here.")
        parser.add_argument("--no-progress", action="store_true")

    def handle(self, *args, **opts):
        path = opts["file"]
        try:
            total = count_lines(path)
        except OSError as exc:
            raise CommandError(f"Cannot read {path}: {exc}") from None
        options = ImportOptions(format=opts["format"], dry_run=opts["dry_run"], valid_only=opts["valid_only"],
                                date_format=opts["date_format"], encoding=opts["encoding"],
                                delimiter=opts["delimiter"], decimal_comma=opts["decimal_comma"])
        bars: dict[str, tqdm] = {}
        done: dict[str, int] = {}

        def progress(phase: str, processed: int) -> None:
            if opts["no_progress"]:
                return
            if phase not in bars:
                bars[phase] = tqdm(total=total if phase != "dunning" else None, desc=phase, unit="rows",
                                   file=sys.stderr, leave=True)
                done[phase] = 0
            bars[phase].update(processed - done[phase])
            done[phase] = processed

        report = import_invoices(file_opener(path), options, actor="import:command", progress=progress)
        for bar in bars.values():
            bar.close()
        out = self.stdout
        if report.file_error:
            raise CommandError(report.file_error)
        out.write(f"rows: {report.total}  new: {report.new}  updated: {report.updated}  "
                  f"unchanged: {report.unchanged}  invalid: {report.invalid}")
        if report.unknown_columns:
            out.write("unknown columns (ignored): " + ", ".join(report.unknown_columns))
        for error in report.errors:
            out.write(f"line {error.line}: {error.column or '-'}: {error.reason}")
        if opts["skipped"] and report.invalid:
            with open(opts["skipped"], "w", newline="", encoding="utf-8") as fh:
                fh.write(report.skipped_csv())
            out.write(f"invalid rows written to {opts['skipped']}")
        for warning in report.warnings:
            out.write(warning)
        if opts["dry_run"] and report.invalid:
            raise CommandError(f"dry run: {report.invalid} invalid row(s), {report.error_count} error(s); "
                               "nothing written")
        if opts["dry_run"]:
            out.write("dry run: nothing written")
        elif report.written:
            out.write(self.style.SUCCESS(f"written: {report.written_rows} rows; "
                                         f"dunning cases opened: {report.cases_opened}"))
        else:
            raise CommandError("Nothing was imported: fix the invalid rows or pass --valid-only")

