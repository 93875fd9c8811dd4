"""Invoice import: read a CSV or XLSX file, validate every row, then write with bulk operations.

The pipeline runs in two passes over a re-openable source so that memory does not grow with the file:

1. validate: every row is parsed and checked (columns, dates, amounts, currency, duplicate external ids,
   unknown customers) in chunks, with customer ids cached, and classified as new / updated / unchanged /
   invalid. Every problem is reported with its line number, column and reason.
2. write (only if no row is invalid, or if the caller asked for valid rows only): the file is read again,
   invalid lines are skipped, and rows are written with bulk_create / bulk_update in one transaction.

Upsert by external id: re-importing the same file changes nothing. Rows that must go into dunning (open,
unpaid and past due, or flagged as a failed payment) are returned to the caller, which opens the cases
(billing knows nothing of dunning; see integrations.imports).
"""

from __future__ import annotations

import codecs
import csv
import datetime
import io
import itertools
import pickle
import re
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import IO, Any

from babel.numbers import get_currency_precision
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from django.utils import timezone
from openpyxl import load_workbook

from billing.models import Invoice
from billing.money import fits_minor_unit, to_amount
from core.jsonb import without_nul
from customers.models import Customer
from customers.validators import validate_currency

CHUNK = 2000
MAX_AMOUNT = Decimal("9999999999")  # the column holds 14 digits with 4 decimal places
MAX_STORED_ERRORS = 20000

# --- Column sets ------------------------------------------------------------------------------

NATIVE_COLUMNS = {
    "external_id": "Your invoice id; the upsert key (required).",
    "number": "The invoice number shown to the customer (default: external_id).",
    "customer_external_id": "The customer's external id; the customer must exist (required).",
    "currency": "ISO 4217 code such as USD or EUR (required).",
    "amount_due": "The invoice total (required).",
    "amount_paid": "Paid so far (default 0).",
    "issued_at": "Issue date (required).",
    "due_date": "Due date (required).",
    "status": "open, paid, void or uncollectible (default: paid when fully paid, else open).",
    "auto_collect": "true if charged automatically to the saved method (default true).",
    "payment_failed": "true if a payment of this invoice failed (opens a dunning case).",
    "decline_code": "The decline code of the failed payment, e.g. insufficient_funds.",
}
REQUIRED = ("external_id", "customer_external_id", "currency", "amount_due", "issued_at", "due_date")

# Stripe's invoice export (Dashboard > Invoices > Export), columns as Stripe names them.
STRIPE_MAP = {
    "id": "external_id",
    "Number": "number",
    "Customer": "customer_external_id",
    "Currency": "currency",
    "Amount Due": "amount_due",
    "Amount Paid": "amount_paid",
    "Date (UTC)": "issued_at",
    "Due Date (UTC)": "due_date",
    "Status": "status",
    "Billing": "billing",
    "Collection Method": "billing",
    "Attempted": "attempted",
    "Attempt Count": "attempt_count",
}
# Columns of Stripe's export that carry nothing this product stores: known, so not reported as unknown.
STRIPE_IGNORED = {
    "Amount Remaining", "Application Fee", "Auto Advance", "Billing Reason", "Charge", "Closed",
    "Customer Email", "Customer Name", "Customer Description", "Description", "Discount", "Ending Balance",
    "Forgiven", "Paid", "Period End (UTC)", "Period Start (UTC)", "Receipt Number", "Starting Balance",
    "Statement Descriptor", "Subscription", "Subtotal", "Tax", "Tax Percent", "Total", "Finalized At (UTC)",
    "Payment Intent", "Hosted Invoice URL", "Invoice PDF", "Account Country", "Account Name",
    "Customer Address", "Customer Phone", "Customer Shipping", "Customer Tax Exempt", "Default Payment Method",
    "Footer", "Memo", "Next Payment Attempt (UTC)", "Webhooks Delivered At (UTC)", "Amount Shipping",
    "Livemode",
}
FORMATS = ("native", "stripe")

TRUE = {"1", "true", "yes", "y", "t", "on", "x"}
FALSE = {"0", "false", "no", "n", "f", "off", ""}
STATUSES = {s.value for s in Invoice.Status}
ISO_DATE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})(?:[T ][0-9:.]+(?:Z|[+-]\d{2}:?\d{2}| ?[+-]\d{4})?)?$")
UNIX_TS = re.compile(r"^\d{9,11}$")
# One separator with three digits after it and one to three before: a thousands separator, or a decimal one?
AMBIGUOUS_NUMBER = re.compile(r"[1-9][0-9]{0,2}[.,][0-9]{3}")
DIGITS = re.compile(r"[0-9]*")
GROUPED = {sep: re.compile(rf"[0-9]{{1,3}}(\{sep}[0-9]{{3}})+") for sep in (",", ".")}


class ImportFileError(Exception):
    """The file as a whole cannot be read (not a table, no header, wrong encoding)."""


@dataclass
class RowError:
    line: int
    column: str
    reason: str

    def as_dict(self) -> dict:
        """JSON-ready, with NUL characters replaced (PostgreSQL's jsonb refuses them)."""
        return without_nul(self._as_dict())

    def _as_dict(self) -> dict:
        return {"line": self.line, "column": self.column, "reason": self.reason}


@dataclass
class ImportOptions:
    format: str = "native"
    date_format: str = ""  # e.g. %d/%m/%Y; ISO dates are always accepted
    encoding: str = ""  # blank: detect (see detect_encoding)
    delimiter: str = ""  # blank: detect (comma, semicolon or tab)
    decimal_comma: bool | None = None  # None: decide per value
    valid_only: bool = False
    dry_run: bool = False
    # Payments found by re-importing (amount_paid went up) are left to the caller, which records them
    # as money received so that an open case is recovered (see integrations.imports).
    defer_payments: bool = False


@dataclass
class ImportReport:
    total: int = 0
    new: int = 0
    updated: int = 0
    unchanged: int = 0
    invalid: int = 0
    error_count: int = 0  # every error, also those beyond MAX_STORED_ERRORS
    errors: list[RowError] = field(default_factory=list)
    invalid_rows: dict[int, dict] = field(default_factory=dict)  # line -> original cells (for the skipped CSV)
    unknown_columns: list[str] = field(default_factory=list)
    missing_columns: list[str] = field(default_factory=list)
    file_error: str = ""
    header: list[str] = field(default_factory=list)
    source: str = ""  # csv or xlsx
    encoding: str = ""
    delimiter: str = ""
    written: bool = False
    written_rows: int = 0
    dunning_candidates: list[tuple[int, int, str]] = field(default_factory=list)  # (line, invoice id, code)
    # (line, invoice id, the amount_paid the file reports), applied by the caller as money received
    deferred_payments: list[tuple[int, int, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    cases_opened: int = 0

    @property
    def ok(self) -> bool:
        return not self.file_error and self.invalid == 0

    @property
    def invalid_lines(self) -> set[int]:
        return set(self.invalid_rows)

    def add_error(self, line: int, column: str, reason: str) -> None:
        self.error_count += 1
        if len(self.errors) < MAX_STORED_ERRORS:
            self.errors.append(RowError(line, column, reason))

    def as_dict(self) -> dict:
        """JSON-ready, with NUL characters replaced (PostgreSQL's jsonb refuses them)."""
        return without_nul(self._as_dict())

    def _as_dict(self) -> dict:
        return {
            "total": self.total, "new": self.new, "updated": self.updated, "unchanged": self.unchanged,
            "invalid": self.invalid, "error_count": self.error_count, "errors": [e.as_dict() for e in self.errors],
            "invalid_rows": {str(k): v for k, v in self.invalid_rows.items()},
            "unknown_columns": self.unknown_columns, "missing_columns": self.missing_columns,
            "file_error": self.file_error, "header": self.header, "source": self.source, "encoding": self.encoding,
            "delimiter": self.delimiter, "written": self.written, "written_rows": self.written_rows,
            "warnings": self.warnings, "cases_opened": self.cases_opened,
        }

    @classmethod
    def from_dict(cls, data: dict) -> ImportReport:
        report = cls(**{k: v for k, v in data.items() if k not in ("errors", "invalid_rows")})
        report.errors = [RowError(**e) for e in data.get("errors", [])]
        report.invalid_rows = {int(k): v for k, v in data.get("invalid_rows", {}).items()}
        return report

    def skipped_csv(self) -> str:
        """The invalid rows as they were in the file, with the line number and a reason column."""
        reasons: dict[int, list[str]] = {}
        for error in self.errors:
            reasons.setdefault(error.line, []).append(f"{error.column}: {error.reason}" if error.column
                                                      else error.reason)
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["line", *self.header, "reason"])
        for line in sorted(self.invalid_rows):
            cells = self.invalid_rows[line]
            writer.writerow([line, *(cells.get(h, "") for h in self.header), "; ".join(reasons.get(line, []))])
        return out.getvalue()


@dataclass(slots=True)
class ParsedRow:
    line: int
    external_id: str
    number: str
    customer_external_id: str
    currency: str
    amount_due: Decimal
    amount_paid: Decimal
    issued_at: datetime.date
    due_date: datetime.date
    status: str
    auto_collect: bool
    payment_failed: bool
    decline_code: str
    customer_id: int = 0


# --- Reading ------------------------------------------------------------------------------------

Opener = Callable[[], IO[bytes]]


def is_xlsx(head: bytes) -> bool:
    return head.startswith(b"PK\x03\x04")


BOMS = (  # longest first: the UTF-32-LE mark begins with the UTF-16-LE one
    (codecs.BOM_UTF32_LE, "utf-32-le"), (codecs.BOM_UTF32_BE, "utf-32-be"), (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be"),
)
SCAN_BYTES = 1 << 20


def detect_encoding(opener: Opener, declared: str = "") -> str:
    """The file's encoding, checked over the whole file (streamed); ImportFileError naming the line otherwise.

    A byte-order mark names UTF-8, UTF-16 or UTF-32; a header with every other byte NUL is UTF-16 without
    one. Else UTF-8 when the whole file decodes as UTF-8; else Windows-1252 (cp1252), which is what a file
    from Windows is, and which Latin-1 files decode to the same text (they only differ on bytes 0x80-0x9F,
    control characters in Latin-1 that real text never holds; cp1252 puts the euro sign and dashes there).
    Nothing is guessed beyond that: a file that is partly UTF-8, or has bytes no encoding here gives a
    meaning to, is refused.
    """
    with opener() as fh:
        head = fh.read(SCAN_BYTES)
        if declared:
            try:
                declared = codecs.lookup(declared).name
            except LookupError:
                raise ImportFileError(f"Unknown encoding {declared[:40]!r}") from None
        encoding = declared or _marked_encoding(head)
        if encoding:
            _scan(head, fh, encoding)
            return encoding
        return _utf8_or_windows(head, fh)


def _marked_encoding(head: bytes) -> str:
    for bom, encoding in BOMS:
        if head.startswith(bom):
            return encoding
    # An ASCII header in UTF-16 without a mark: NUL in every other byte (no CSV in UTF-8 holds a NUL).
    sample = head[:min(200, len(head) // 2 * 2)]
    if len(sample) >= 4:
        even, odd = sample[0::2], sample[1::2]
        if not odd.strip(b"\x00") and b"\x00" not in even:
            return "utf-16-le"
        if not even.strip(b"\x00") and b"\x00" not in odd:
            return "utf-16-be"
    return ""


def _chunks(head: bytes, rest: IO[bytes]) -> Iterator[bytes]:
    yield head
    while chunk := rest.read(SCAN_BYTES):
        yield chunk


def _scan(head: bytes, rest: IO[bytes], encoding: str, line: int = 1) -> None:
    """Decode the whole stream; an ImportFileError naming the first line that does not decode."""
    decoder = codecs.getincrementaldecoder(encoding)()
    for chunk in itertools.chain(_chunks(head, rest), [b""]):
        try:
            line += decoder.decode(chunk, final=not chunk).count("\n")
        except UnicodeDecodeError as exc:
            line += exc.object[:exc.start].decode(encoding, "replace").count("\n")
            bad = exc.object[exc.start:exc.end].hex(" ")
            raise ImportFileError(f"Line {line}: the file is not valid {encoding} (bytes {bad}: {exc.reason}). "
                                  "Save it as UTF-8, or name its encoding.") from None


def _utf8_or_windows(head: bytes, rest: IO[bytes]) -> str:
    decoder = codecs.getincrementaldecoder("utf-8")()
    line, first_non_ascii = 1, 0
    chunks = _chunks(head, rest)
    for chunk in chunks:
        try:
            text = decoder.decode(chunk)
        except UnicodeDecodeError as exc:
            return _windows(exc, chunks, line, first_non_ascii)
        if not first_non_ascii and not text.isascii():
            first_non_ascii = line + next(i for i, c in enumerate(text.split("\n")) if not c.isascii())
        line += text.count("\n")
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError as exc:
        return _windows(exc, iter(()), line, first_non_ascii)
    return "utf-8"


def _windows(exc: UnicodeDecodeError, rest: Iterator[bytes], line: int, first_non_ascii: int) -> str:
    """The rest of a file that stopped being UTF-8 (at exc, in the text from this line on): cp1252, or refused."""
    valid = exc.object[:exc.start]
    if not first_non_ascii and not valid.isascii():
        first_non_ascii = line + valid[:next(i for i, b in enumerate(valid) if b > 0x7F)].count(b"\n")
    line += valid.count(b"\n")
    data = exc.object[exc.start:]
    if first_non_ascii:
        raise ImportFileError(f"The file mixes encodings: line {first_non_ascii} is UTF-8, line {line} is not. "
                              "Save it as UTF-8.")
    control_bytes = False
    for chunk in itertools.chain([data], rest):
        control_bytes = control_bytes or re.search(rb"[\x80-\x9f]", chunk) is not None
        try:
            chunk.decode("cp1252")
        except UnicodeDecodeError as exc:
            line += chunk[:exc.start].count(b"\n")
            raise ImportFileError(f"Line {line}: the file is neither UTF-8 nor Windows-1252 (byte "
                                  f"{chunk[exc.start]:#04x}). Save it as UTF-8, or name its encoding.") from None
        line += chunk.count(b"\n")
    return "cp1252" if control_bytes else "latin-1"


def sniff_delimiter(header_line: str) -> str:
    counts = {d: header_line.count(d) for d in (",", ";", "\t")}
    best = max(counts, key=counts.get)
    return best if counts[best] else ","


def _csv_rows(opener: Opener, options: ImportOptions, report: ImportReport) -> Iterator[tuple[int, list[str]]]:
    encoding = report.encoding or detect_encoding(opener, options.encoding)
    report.encoding = encoding
    with opener() as raw:
        text = io.TextIOWrapper(raw, encoding=encoding, errors="strict", newline="")
        first = text.readline()
        first = first.removeprefix("\ufeff")  # the byte-order mark of UTF-16 and UTF-32, or a doubled one
        delimiter = options.delimiter or sniff_delimiter(first)
        report.delimiter = delimiter
        lines = _chain_first(first, text)
        reader = csv.reader(lines, delimiter=delimiter)
        try:
            for row in reader:
                yield reader.line_num, row
        except csv.Error as exc:
            raise ImportFileError(f"Line {reader.line_num + 1}: the file is not valid CSV ({exc})") from None
        except UnicodeDecodeError as exc:
            raise ImportFileError(f"The file is not valid {encoding}: {exc.reason}") from None


def _chain_first(first: str, rest: IO[str]) -> Iterator[str]:
    yield first
    yield from rest


def _xlsx_rows(opener: Opener) -> Iterator[tuple[int, list[Any]]]:
    with opener() as fh:
        try:
            workbook = load_workbook(fh, read_only=True, data_only=True)
        except Exception as exc:  # openpyxl raises many types for a damaged workbook
            raise ImportFileError(f"The file is not a readable XLSX workbook ({type(exc).__name__})") from None
        try:
            sheet = workbook.worksheets[0]
            rows = enumerate(sheet.iter_rows(values_only=True), start=1)
            while True:
                try:
                    number, values = next(rows)
                except StopIteration:
                    return
                except Exception as exc:  # a damaged sheet fails while streaming, in many ways
                    raise ImportFileError(f"The workbook could not be read ({type(exc).__name__})") from None
                yield number, [_cell(v) for v in values]
        finally:
            workbook.close()


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, datetime.datetime):
        return value.date()
    if isinstance(value, float):
        # A number cell holds a binary float; Excel keeps 15 significant digits, so 0.1 + 0.2 is 0.3.
        return Decimal(f"{value:.15g}")
    return value if isinstance(value, datetime.date) else str(value)


def iter_table(opener: Opener, options: ImportOptions, report: ImportReport) -> Iterator[tuple[int, list[Any]]]:
    with opener() as fh:
        head = fh.read(4)
    report.source = "xlsx" if is_xlsx(head) else "csv"
    rows = _xlsx_rows(opener) if report.source == "xlsx" else _csv_rows(opener, options, report)
    for line, cells in rows:
        if any(str(c).strip() for c in cells):
            yield line, cells


# --- Header mapping -----------------------------------------------------------------------------

def map_header(header: list[str], fmt: str, report: ImportReport) -> dict[int, str]:
    """Column index -> canonical field name; unknown and missing columns go into the report."""
    report.header = [str(h) for h in header]
    mapping: dict[int, str] = {}
    if fmt == "stripe":
        known = {k.lower(): v for k, v in STRIPE_MAP.items()}
        ignored = {k.lower() for k in STRIPE_IGNORED}
    else:
        known = {k: k for k in NATIVE_COLUMNS}
        ignored = set()
    seen: set[str] = set()
    for index, name in enumerate(report.header):
        key = name.strip().lower()
        if key in known:
            target = known[key]
            if target in seen and target != "billing":
                report.file_error = f"The column {name!r} appears twice"
            seen.add(target)
            mapping[index] = target
        elif key not in ignored:
            report.unknown_columns.append(name)
    required = REQUIRED if fmt == "native" else tuple(r for r in REQUIRED if r != "due_date")
    report.missing_columns = [c for c in required if c not in seen]
    if fmt == "stripe":
        reverse = {v: k for k, v in STRIPE_MAP.items()}
        report.missing_columns = [reverse.get(c, c) for c in report.missing_columns]
    return mapping


# --- Field parsing ------------------------------------------------------------------------------

def parse_decimal(value: Any, decimal_comma: bool | None) -> Decimal:
    """An amount as written in the file. decimal_comma: True for 1.234,56, False for 1,234.56, None when the file
    does not say: then a value whose separator could be either (1,234 or 1.234) is refused, not guessed."""
    if isinstance(value, int | Decimal) and not isinstance(value, bool):  # a spreadsheet's number cell
        if not Decimal(value).is_finite():
            raise ValueError(f"{value} is not a number")
        return _checked(Decimal(value))
    text = str(value).strip()
    for space in ("\u00a0", "\u202f", " ", "'"):  # thousands separators that cannot be a decimal one
        text = text.replace(space, "")
    if not text:
        raise ValueError("is empty")
    sign = text[0] if text[0] in "+-" else ""
    digits = text[len(sign):]
    if decimal_comma is None and AMBIGUOUS_NUMBER.fullmatch(digits):
        raise ValueError(f"{value!s:.40} is ambiguous ({digits.replace(',', '').replace('.', '')} or "
                         f"{digits.replace(',', '.')}?): declare the file's number format (decimal comma or "
                         "decimal point)")
    point = _decimal_separator(digits, decimal_comma)
    group = "." if point == "," else ","
    whole, _, fraction = digits.partition(point)
    whole_ok = GROUPED[group].fullmatch(whole) if group in whole else DIGITS.fullmatch(whole)
    if not (whole_ok and DIGITS.fullmatch(fraction) and (whole or fraction)):
        raise ValueError(f"{value!s:.40} is not a number" + (
            "" if decimal_comma is None else f" written with a decimal {'comma' if decimal_comma else 'point'}"))
    return _checked(Decimal(f"{sign}{whole.replace(group, '') or '0'}.{fraction or '0'}"))


def _decimal_separator(digits: str, decimal_comma: bool | None) -> str:
    if decimal_comma is not None:
        return "," if decimal_comma else "."
    if "," in digits and "." in digits:
        return "," if digits.rfind(",") > digits.rfind(".") else "."  # 1.234,56 or 1,234.56
    for separator in (",", "."):
        if digits.count(separator) > 1:  # 1,234,567: a thousands separator; the other is the decimal one
            return "." if separator == "," else ","
    return "," if "," in digits else "."  # one separator, not three digits after it (see AMBIGUOUS_NUMBER)


def _checked(amount: Decimal) -> Decimal:
    if amount < 0:
        raise ValueError("cannot be negative")
    if amount > MAX_AMOUNT:
        raise ValueError("is too large")
    return amount


def parse_date(value: Any, date_format: str) -> datetime.date:
    if isinstance(value, datetime.date):
        return value
    text = str(value).strip()
    if not text:
        raise ValueError("is empty")
    match = ISO_DATE.match(text)
    if match:
        try:
            return datetime.date(int(match[1]), int(match[2]), int(match[3]))
        except ValueError:
            raise ValueError(f"{text[:40]} is not a real date") from None
    if date_format:
        try:
            return datetime.datetime.strptime(text, date_format).date()
        except ValueError:
            raise ValueError(f"{text[:40]} is neither an ISO date nor in the format {date_format}") from None
    if UNIX_TS.match(text):  # Stripe's API exports use Unix timestamps
        return datetime.datetime.fromtimestamp(int(text), tz=datetime.UTC).date()
    raise ValueError(f"{text[:40]} is not an ISO date (YYYY-MM-DD); declare the file's date format")


def parse_bool(value: Any) -> bool:
    text = str(value).strip().lower()
    if text in TRUE:
        return True
    if text in FALSE:
        return False
    raise ValueError(f"{text[:20]} is not true or false")


def _text(values: dict, name: str, limit: int, errors: list, required: bool = False) -> str:
    text = str(values.get(name, "")).strip()
    if "\x00" in text:
        errors.append((name, "contains a NUL character"))
        return ""
    if required and not text:
        errors.append((name, "is required"))
    elif len(text) > limit:
        errors.append((name, f"is longer than {limit} characters"))
    return text


def parse_row(line: int, values: dict[str, Any], options: ImportOptions) -> tuple[ParsedRow | None, list]:
    """One row's fields, or the list of (column, reason) problems with it."""
    errors: list[tuple[str, str]] = []
    external_id = _text(values, "external_id", 100, errors, required=True)
    number = _text(values, "number", 100, errors) or external_id
    customer = _text(values, "customer_external_id", 100, errors, required=True)
    currency = _text(values, "currency", 3, errors, required=True).upper()
    if currency:
        try:
            validate_currency(currency)
        except ValidationError:
            errors.append(("currency", f"{currency} is not an ISO 4217 currency code"))
            currency = ""
    amounts = {}
    for name, required in (("amount_due", True), ("amount_paid", False)):
        raw = values.get(name, "")
        if not str(raw).strip() and not required:
            amounts[name] = Decimal("0")
            continue
        try:
            amount = parse_decimal(raw, options.decimal_comma)
        except ValueError as exc:
            errors.append((name, str(exc)))
            continue
        if currency and not fits_minor_unit(amount, currency):
            places = get_currency_precision(currency)
            errors.append((name, f"{str(raw).strip()[:40]} has more decimals than {currency} allows "
                                 f"({places or 'none'}); it is not rounded"))
            continue
        amounts[name] = to_amount(amount, currency) if currency else amount
    dates = {}
    for name in ("issued_at", "due_date"):
        raw = values.get(name, "")
        if name == "due_date" and options.format == "stripe" and not str(raw).strip():
            continue  # Stripe leaves it blank for automatically charged invoices: due when issued
        try:
            dates[name] = parse_date(raw, options.date_format)
        except ValueError as exc:
            errors.append((name, str(exc)))
    if "issued_at" in dates and "due_date" not in dates and not any(e[0] == "due_date" for e in errors):
        dates["due_date"] = dates["issued_at"]
    if len(dates) == 2 and dates["due_date"] < dates["issued_at"]:
        errors.append(("due_date", "is before the issue date"))
    status, auto_collect, failed = "", True, False
    try:
        status, auto_collect, failed = _status_fields(values, options)
    except ValueError as exc:
        column, reason = exc.args
        errors.append((column, reason))
    decline_code = _text(values, "decline_code", 64, errors)
    if errors:
        return None, errors
    amount_due, amount_paid = amounts["amount_due"], amounts["amount_paid"]
    if not status:
        status = Invoice.Status.PAID if amount_paid >= amount_due and amount_due > 0 else Invoice.Status.OPEN
    return ParsedRow(
        line=line, external_id=external_id, number=number, customer_external_id=customer, currency=currency,
        amount_due=amount_due, amount_paid=amount_paid, issued_at=dates["issued_at"], due_date=dates["due_date"],
        status=status, auto_collect=auto_collect, payment_failed=failed, decline_code=decline_code,
    ), []


def _status_fields(values: dict, options: ImportOptions) -> tuple[str, bool, bool]:
    status = str(values.get("status", "")).strip().lower()
    if options.format == "stripe":
        if status == "draft":
            raise ValueError("Status", "draft invoices are not imported")
        billing = str(values.get("billing", "")).strip().lower()
        auto = billing != "send_invoice"
        try:
            attempted = parse_bool(values.get("attempted", ""))
            count = int(str(values.get("attempt_count", "") or "0").strip() or 0)
        except ValueError:
            raise ValueError("Attempt Count", "is not a number") from None
        if status and status not in STATUSES:
            raise ValueError("Status", f"{status[:20]} is not one of {', '.join(sorted(STATUSES))}")
        return status, auto, status == "open" and (attempted or count > 0)
    if status and status not in STATUSES:
        raise ValueError("status", f"{status[:20]} is not one of {', '.join(sorted(STATUSES))}")
    try:
        auto = parse_bool(values.get("auto_collect", "true") or "true")
    except ValueError as exc:
        raise ValueError("auto_collect", str(exc)) from None
    try:
        failed = parse_bool(values.get("payment_failed", ""))
    except ValueError as exc:
        raise ValueError("payment_failed", str(exc)) from None
    return status, auto, failed


# --- The pipeline -------------------------------------------------------------------------------

COMPARED = ("number", "customer_id", "currency", "amount_due", "amount_paid", "issued_at", "due_date", "status",
            "auto_collect")


class _Reader:
    """Yields chunks of (line, cells-by-header, values-by-field) from the file."""

    def __init__(self, opener: Opener, options: ImportOptions, report: ImportReport):
        self.opener, self.options, self.report = opener, options, report

    def chunks(self) -> Iterator[list[tuple[int, dict, dict]]]:
        rows = iter_table(self.opener, self.options, self.report)
        try:
            _line, header = next(rows)
        except StopIteration:
            raise ImportFileError("The file is empty") from None
        if not self.report.header:
            mapping = map_header(header, self.options.format, self.report)
        else:
            mapping = map_header(header, self.options.format, ImportReport())
        self.mapping = mapping
        if self.report.file_error:
            raise ImportFileError(self.report.file_error)
        if self.report.missing_columns:
            raise ImportFileError("Missing required column(s): " + ", ".join(self.report.missing_columns))
        width = len(header)
        names = [str(h) for h in header]
        # A CSV row with fewer cells than the header lost some (its values may sit under the wrong columns):
        # refused. A sheet leaves trailing empty cells out, so a short XLSX row is only short of blanks.
        pad = self.report.source == "xlsx"
        chunk: list[tuple[int, dict, dict]] = []
        for line, cells in rows:
            cells = list(cells)
            short = width - len(cells)
            cells += [""] * short
            if short > 0 and not pad:
                problem = (names[width - short], f"is missing: the row has {width - short} cells, the header {width}")
            elif len(cells) > width and any(str(c).strip() for c in cells[width:]):
                problem = ("", "has more cells than the header")
            else:
                problem = None
            values = {target: cells[index] for index, target in mapping.items()}
            # The original cells are only turned into a dict for invalid rows (the skipped-rows CSV).
            chunk.append((line, (names, cells, problem), values))
            if len(chunk) >= CHUNK:
                yield chunk
                chunk = []
        if chunk:
            yield chunk


def run_import(opener: Opener, options: ImportOptions | None = None,
               progress: Callable[[str, int], None] | None = None) -> ImportReport:
    """Validate the whole file, then (unless dry-run, or rows are invalid without valid_only) write it.

    The valid rows of the first pass are spooled to a temporary file (pickled chunks), so the write
    pass neither parses the file again nor holds it in memory.
    """
    options = options or ImportOptions()
    if options.format not in FORMATS:
        raise ValueError(f"Unknown format {options.format!r}; use one of {FORMATS}")
    report = ImportReport()
    customers: dict[str, int] = {}
    seen: set[str] = set()
    today = timezone.now().date()
    with tempfile.TemporaryFile() as spool:
        try:
            for chunk in _Reader(opener, options, report).chunks():
                classified = _validate_chunk(chunk, options, report, customers, seen)
                if not options.dry_run:
                    changed = [_spooled(row, kind, current, today) for row, kind, current in classified
                               if kind != "unchanged"]
                    if changed:
                        pickle.dump(changed, spool, protocol=pickle.HIGHEST_PROTOCOL)
                if progress:
                    progress("validate", report.total)
        except ImportFileError as exc:
            report.file_error = str(exc)
            return report
        if options.dry_run or report.file_error or (report.invalid and not options.valid_only):
            return report
        if report.new + report.updated == 0:
            report.written = True
            return report
        spool.seek(0)
        try:
            _write(_unspool(spool), options, report, progress)
        except ImportFileError as exc:
            report.file_error = str(exc)
    return report


def _spooled(row: ParsedRow, kind: str, current: dict | None, today: datetime.date) -> tuple:
    """A valid row as plain strings and numbers: cheap to pickle, and what COPY takes as text."""
    return (kind == "new", row.line, row.external_id, row.number, row.customer_id, row.currency, str(row.amount_due),
            str(row.amount_paid), row.issued_at.isoformat(), row.due_date.isoformat(), row.status, row.auto_collect,
            _needs_dunning(row, today), row.decline_code,
            current["id"] if current else None, current["status"] if current else None,
            str(current["amount_paid"]) if current else None)


def _unspool(spool) -> Iterator[list]:
    while True:
        try:
            yield pickle.load(spool)  # noqa: S301 - our own temporary file, written above
        except EOFError:
            return


def _validate_chunk(chunk, options: ImportOptions, report: ImportReport, customers: dict[str, int],
                    seen: set[str]) -> list[tuple[ParsedRow, str]]:
    """Classify every row of a chunk; returns (row, 'new'|'updated'|'unchanged') for the valid ones."""
    parsed: list[ParsedRow] = []
    for line, original, values in chunk:
        report.total += 1
        row, problems = parse_row(line, values, options)
        if original[2]:
            problems.insert(0, original[2])
        if row is not None and not problems:
            if row.external_id in seen:
                problems.append(("external_id", f"{row.external_id} appears earlier in the file"))
            seen.add(row.external_id)
        if problems:
            _invalid(report, line, original, problems)
            continue
        parsed.append(row)
    _resolve_customers(parsed, customers)
    existing = _existing([r.external_id for r in parsed])
    out = []
    originals = {line: original for line, original, _values in chunk}
    for row in parsed:
        row.customer_id = customers.get(row.customer_external_id, 0)
        if not row.customer_id:
            _invalid(report, row.line, originals[row.line],
                     [("customer_external_id", f"no customer with external id {row.customer_external_id}")])
            continue
        current = existing.get(row.external_id)
        if current is None:
            kind = "new"
        elif all(getattr(row, name) == current[name] for name in COMPARED):
            kind = "unchanged"
        else:
            kind = "updated"
        setattr(report, kind, getattr(report, kind) + 1)
        out.append((row, kind, current))
    return out


def _existing(external_ids: list[str]) -> dict[str, dict]:
    """The invoices already stored for these external ids, keyed by external id (one query)."""
    if not external_ids:
        return {}
    if connection.vendor == "postgresql":
        # One array parameter instead of thousands of placeholders: far cheaper to send.
        table = Invoice._meta.db_table
        columns = ["id", "external_id", *COMPARED]
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT {', '.join(columns)} FROM {table} WHERE external_id = ANY(%s)",  # noqa: S608
                           [external_ids])
            return {r[1]: dict(zip(columns, r, strict=True)) for r in cursor.fetchall()}
    return {inv["external_id"]: inv
            for inv in Invoice.objects.filter(external_id__in=external_ids).values("id", "external_id", *COMPARED)}


def _invalid(report: ImportReport, line: int, original: tuple, problems: list) -> None:
    report.invalid += 1
    if len(report.invalid_rows) < MAX_STORED_ERRORS:
        names, cells, _problem = original
        report.invalid_rows[line] = {name: str(cells[i]) for i, name in enumerate(names)}
    for column, reason in problems:
        report.add_error(line, column, reason)


def _resolve_customers(rows: list[ParsedRow], cache: dict[str, int]) -> None:
    wanted = {r.customer_external_id for r in rows} - cache.keys()
    if wanted:
        found = dict(Customer.objects.filter(external_id__in=wanted).values_list("external_id", "id"))
        for key in wanted:
            cache[key] = found.get(key, 0)


def _needs_dunning(row: ParsedRow, today: datetime.date) -> bool:
    return (row.status == Invoice.Status.OPEN and row.amount_paid < row.amount_due
            and (row.due_date < today or row.payment_failed))


INSERT_COLUMNS = ("external_id", "number", "customer_id", "currency", "amount_due", "amount_paid", "issued_at",
                  "due_date", "status", "auto_collect", "paid_at", "created_at", "updated_at")


def _insert(rows: list[tuple]) -> None:
    """New rows (tuples in INSERT_COLUMNS order): COPY on PostgreSQL, the fastest bulk path; bulk_create
    elsewhere. Constraints (unique external id, amounts) are enforced by the database either way."""
    if connection.vendor != "postgresql":
        invoices = []
        for values in rows:
            invoice = Invoice(**dict(zip(INSERT_COLUMNS, values, strict=True)))
            invoice.amount_due, invoice.amount_paid = Decimal(invoice.amount_due), Decimal(invoice.amount_paid)
            invoices.append(invoice)
        Invoice.objects.bulk_create(invoices, batch_size=1000)
        return
    # Columns the file does not set (added by other features) get their model default: COPY does not
    # apply Django's Python-side defaults.
    others = [f for f in Invoice._meta.concrete_fields if not f.primary_key and f.column not in INSERT_COLUMNS]
    defaults = tuple(f.get_db_prep_save(f.get_default(), connection) for f in others)
    columns = [*INSERT_COLUMNS, *(f.column for f in others)]
    sql = f"COPY {Invoice._meta.db_table} ({', '.join(columns)}) FROM STDIN"
    with connection.cursor() as cursor, connection.wrap_database_errors, cursor.cursor.copy(sql) as copy:
        for values in rows:
            copy.write_row((*values, *defaults))


def _write(chunks: Iterator[list], options: ImportOptions, report: ImportReport, progress) -> None:
    """Second pass: write the spooled new and changed rows in bulk, in one transaction."""
    now = timezone.now()
    candidates: list[tuple[int, str, str]] = []
    payments: list[tuple[int, int, str]] = []
    written = 0
    fields = [*(f for f in COMPARED if f != "customer_id"), "customer", "updated_at"]
    try:
        with transaction.atomic():
            for records in chunks:
                new, changed = [], []
                for (is_new, line, external_id, number, customer_id, currency, due, paid, issued_at, due_date, status,
                     auto_collect, dunning, decline_code, cur_id, cur_status, cur_paid) in records:
                    if dunning:
                        candidates.append((line, external_id, decline_code))
                    paid_at = now if status == Invoice.Status.PAID else None
                    if is_new:
                        new.append((external_id, number, customer_id, currency, due, paid, issued_at, due_date,
                                    status, auto_collect, paid_at, now, now))
                        continue
                    invoice = Invoice(
                        pk=cur_id, external_id=external_id, number=number, customer_id=customer_id, currency=currency,
                        amount_due=Decimal(due), amount_paid=Decimal(paid),
                        issued_at=datetime.date.fromisoformat(issued_at),
                        due_date=datetime.date.fromisoformat(due_date), status=status, auto_collect=auto_collect,
                        paid_at=paid_at, updated_at=now,
                    )
                    if options.defer_payments and Decimal(paid) > Decimal(cur_paid):
                        payments.append((line, cur_id, paid))
                        invoice.amount_paid, invoice.status, invoice.paid_at = Decimal(cur_paid), cur_status, None
                    if cur_status == Invoice.Status.PAID:
                        invoice.paid_at = None  # keep the recorded paid_at (excluded below)
                    changed.append((invoice, cur_status != invoice.status))
                if new:
                    _insert(new)
                plain = [inv for inv, status_changed in changed if not status_changed or inv.paid_at is None]
                paid_now = [inv for inv, status_changed in changed if status_changed and inv.paid_at is not None]
                if plain:
                    Invoice.objects.bulk_update(plain, fields, batch_size=1000)
                if paid_now:
                    Invoice.objects.bulk_update(paid_now, [*fields, "paid_at"], batch_size=1000)
                written += len(new) + len(changed)
                if progress:
                    progress("write", written)
    except IntegrityError:
        raise ImportFileError("Another import or a user wrote the same invoices meanwhile; nothing was written. "
                              "Run it again.") from None
    ids = dict(Invoice.objects.filter(external_id__in=[c[1] for c in candidates]).values_list("external_id", "id"))
    report.dunning_candidates = [(line, ids[ext], code) for line, ext, code in candidates if ext in ids]
    report.deferred_payments = payments
    report.written = True
    report.written_rows = written


def file_opener(path: str) -> Opener:
    return lambda: open(path, "rb")  # noqa: SIM115 - the pipeline closes it


def bytes_opener(data: bytes) -> Opener:
    return lambda: io.BytesIO(data)
