"""Invoice import: the validate-first pipeline, as the admin, the command and the worker use it."""

from __future__ import annotations

import datetime
import io
import zipfile
from decimal import Decimal

import pytest
from django.core.management import CommandError, call_command
from openpyxl import Workbook

from billing.imports import ImportOptions, bytes_opener
from billing.models import Invoice
from dunning.models import CaseEvent, DunningCase
from integrations.imports import import_invoices
from tests.factories import CustomerFactory, InvoiceFactory
from tests.support.clock import T0
from tests.support.imports import invoice_row, native_csv

pytestmark = pytest.mark.django_db


def run(data: str | bytes, **options):
    raw = data.encode("utf-8") if isinstance(data, str) else data
    return import_invoices(bytes_opener(raw), ImportOptions(**options))


@pytest.fixture
def customers(db):
    return CustomerFactory(external_id="cus_a"), CustomerFactory(external_id="cus_b", currency="EUR")


def test_clean_file_imports_every_row(customers, clock):
    data = native_csv([invoice_row(1), invoice_row(2, "cus_b", currency="EUR", amount_due="20.5"),
                       invoice_row(3, amount_paid="100.00")])
    report = run(data)
    assert report.ok and report.written
    assert (report.total, report.new, report.updated, report.unchanged, report.invalid) == (3, 3, 0, 0, 0)
    inv2 = Invoice.objects.get(external_id="in_2")
    assert inv2.customer == customers[1] and inv2.amount_due == Decimal("20.50") and inv2.currency == "EUR"
    assert inv2.due_date == datetime.date(2026, 3, 31)
    paid = Invoice.objects.get(external_id="in_3")
    assert paid.status == Invoice.Status.PAID and paid.paid_at is not None


def test_every_kind_of_bad_row_is_reported_and_nothing_is_written(customers, clock):
    rows = [
        invoice_row(1),
        invoice_row(2, issued_at="31/02/2026"),
        invoice_row(3, amount_due="12,34,56x"),
        invoice_row(4, currency="XYZ"),
        invoice_row(1, number="again"),
        invoice_row(5, customer="cus_nobody"),
        invoice_row(6, external_id=""),
        invoice_row(7, due_date="2026-02-01"),
        invoice_row(8, amount_due="-5"),
    ]
    report = run(native_csv(rows))
    assert not report.written and Invoice.objects.count() == 0
    assert report.invalid == 8 and report.new == 1
    by_line = {(e.line, e.column): e.reason for e in report.errors}
    assert "not an ISO date" in by_line[(3, "issued_at")]
    assert "not a number" in by_line[(4, "amount_due")]
    assert "XYZ is not an ISO 4217" in by_line[(5, "currency")]
    assert "appears earlier in the file" in by_line[(6, "external_id")]
    assert "no customer with external id cus_nobody" in by_line[(7, "customer_external_id")]
    assert by_line[(8, "external_id")] == "is required"
    assert by_line[(9, "due_date")] == "is before the issue date"
    assert by_line[(10, "amount_due")] == "cannot be negative"


def test_missing_column_rejects_the_file(customers):
    header = [h for h in native_csv([]).strip().split(",") if h != "currency"]
    report = run(native_csv([invoice_row(1)], header=header))
    assert report.file_error == "Missing required column(s): currency"
    assert not report.written and Invoice.objects.count() == 0


def test_unknown_columns_are_reported(customers):
    header = [*native_csv([]).strip().split(","), "plan", "notes"]
    report = run(native_csv([invoice_row(1, plan="pro")], header=header))
    assert report.unknown_columns == ["plan", "notes"]
    assert report.written and Invoice.objects.count() == 1


def test_valid_only_writes_good_rows_and_lists_the_skipped_ones(customers):
    report = run(native_csv([invoice_row(1), invoice_row(2, currency="XYZ"), invoice_row(3)]), valid_only=True)
    assert report.written and report.invalid == 1
    assert sorted(Invoice.objects.values_list("external_id", flat=True)) == ["in_1", "in_3"]
    skipped = report.skipped_csv().splitlines()
    assert skipped[0].endswith(",reason") and skipped[0].startswith("line,external_id")
    assert skipped[1].startswith("3,in_2,") and "currency: XYZ is not an ISO 4217" in skipped[1]


def test_latin1_semicolons_and_decimal_commas(customers):
    text = ("external_id;number;customer_external_id;currency;amount_due;amount_paid;issued_at;due_date\n"
            "in_é1;Fact. n°1;cus_b;EUR;1.234,56;0,50;01/03/2026;31/03/2026\n"
            "in_2;Fact. n°2;cus_b;EUR;99,9;;2026-03-01;2026-03-15\n")
    report = run(text.encode("latin-1"), date_format="%d/%m/%Y")
    assert report.ok, report.errors
    assert report.encoding == "latin-1" and report.delimiter == ";"
    first = Invoice.objects.get(external_id="in_é1")
    assert first.number == "Fact. n°1"
    assert first.amount_due == Decimal("1234.56") and first.amount_paid == Decimal("0.50")
    assert first.issued_at == datetime.date(2026, 3, 1)
    assert Invoice.objects.get(external_id="in_2").amount_due == Decimal("99.90")


def test_utf8_with_bom(customers):
    report = run(b"\xef\xbb\xbf" + native_csv([invoice_row(1, number="Nº 1")]).encode())
    assert report.ok and Invoice.objects.get().number == "Nº 1"


STRIPE_EXPORT = (
    "id,Amount Due,Amount Paid,Amount Remaining,Attempt Count,Attempted,Billing,Currency,Customer,"
    "Customer Email,Date (UTC),Due Date (UTC),Number,Paid,Status,Subscription,Total\n"
    "in_1Abc,49.00,0.00,49.00,2,true,charge_automatically,usd,cus_a,a@example.com,2026-02-27 10:00,,"
    "A1B2-0001,false,open,sub_1,49.00\n"
    "in_1Abd,19.00,19.00,0.00,1,true,charge_automatically,usd,cus_a,a@example.com,2026-02-01 09:12,,"
    "A1B2-0002,true,paid,sub_1,19.00\n"
    "in_1Abe,250.00,0.00,250.00,0,false,send_invoice,eur,cus_b,b@example.com,2026-02-20 00:00,"
    "2026-03-22 00:00,A1B2-0003,false,open,,250.00\n"
)


def test_stripe_export_preset_opens_a_case_for_the_failed_invoice(customers, defaults, clock):
    report = run(STRIPE_EXPORT, format="stripe")
    assert report.ok and report.unknown_columns == [], report.errors
    failed = Invoice.objects.get(external_id="in_1Abc")
    assert failed.currency == "USD" and failed.number == "A1B2-0001" and failed.amount_due == Decimal("49.00")
    assert failed.due_date == failed.issued_at == datetime.date(2026, 2, 27)
    assert Invoice.objects.get(external_id="in_1Abd").status == Invoice.Status.PAID
    manual = Invoice.objects.get(external_id="in_1Abe")
    assert manual.auto_collect is False and manual.due_date == datetime.date(2026, 3, 22)
    # Only the open invoice whose payment failed goes into dunning (the EUR one is not due yet).
    assert report.cases_opened == 1
    case = DunningCase.objects.get()
    assert case.invoice == failed
    assert case.events.get(kind="case.opened").actor_label == "import"


def test_unpaid_past_due_rows_open_cases_and_reimport_changes_nothing(customers, defaults, clock):
    clock.move_to(T0)
    rows = [invoice_row(1, due_date="2026-02-15", issued_at="2026-02-01"),
            invoice_row(2, due_date="2026-04-15", payment_failed="yes", decline_code="expired_card"),
            invoice_row(3, due_date="2026-04-15"),
            invoice_row(4, due_date="2026-02-15", issued_at="2026-02-01", amount_paid="100")]
    data = native_csv(rows)
    first = run(data)
    assert first.cases_opened == 2
    assert set(DunningCase.objects.values_list("invoice__external_id", "decline_code")) == {
        ("in_1", ""), ("in_2", "expired_card")}
    snapshot = list(Invoice.objects.order_by("id").values())
    events = CaseEvent.objects.count()

    again = run(data)
    assert (again.new, again.updated, again.unchanged, again.invalid) == (0, 0, 4, 0)
    assert again.cases_opened == 0
    assert list(Invoice.objects.order_by("id").values()) == snapshot
    assert CaseEvent.objects.count() == events and DunningCase.objects.count() == 2


def test_reimport_with_changes_updates_and_a_payment_recovers_the_case(customers, defaults, clock):
    clock.move_to(T0)
    rows = [invoice_row(1, due_date="2026-02-15", issued_at="2026-02-01"), invoice_row(2)]
    run(native_csv(rows))
    case = DunningCase.objects.get()
    rows[0]["amount_paid"] = "100.00"
    rows[1]["number"] = "INV-2-renamed"
    report = run(native_csv(rows))
    assert (report.new, report.updated, report.unchanged) == (0, 2, 0)
    case.refresh_from_db()
    assert case.status == DunningCase.Status.RECOVERED
    assert Invoice.objects.get(external_id="in_1").status == Invoice.Status.PAID
    assert Invoice.objects.get(external_id="in_2").number == "INV-2-renamed"
    assert run(native_csv(rows)).unchanged == 2


def test_existing_invoice_is_updated_not_duplicated(customers):
    InvoiceFactory(external_id="in_1", customer=customers[0], amount_due="10.00")
    report = run(native_csv([invoice_row(1)]))
    assert report.updated == 1 and Invoice.objects.get().amount_due == Decimal("100.00")


def test_xlsx_file(customers):
    book = Workbook()
    sheet = book.active
    sheet.append(["external_id", "customer_external_id", "currency", "amount_due", "issued_at", "due_date"])
    sheet.append(["in_x", "cus_a", "USD", 12.5, datetime.datetime(2026, 3, 1), "2026-03-31"])
    buffer = io.BytesIO()
    book.save(buffer)
    report = run(buffer.getvalue())
    assert report.ok, report.errors
    assert Invoice.objects.get().amount_due == Decimal("12.50")


def test_command_dry_run_then_import(customers, tmp_path, capsys):
    path = tmp_path / "invoices.csv"
    path.write_text(native_csv([invoice_row(1), invoice_row(2)]))
    call_command("import_invoices", str(path), "--dry-run", "--no-progress")
    assert Invoice.objects.count() == 0
    call_command("import_invoices", str(path))
    assert Invoice.objects.count() == 2
    captured = capsys.readouterr()
    assert "dry run: nothing written" in captured.out and "written: 2 rows" in captured.out
    assert "validate" in captured.err and "rows" in captured.err  # the tqdm progress bars


def test_command_refuses_a_file_with_invalid_rows(customers, tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text(native_csv([invoice_row(1), invoice_row(2, currency="???")]))
    skipped = tmp_path / "skipped.csv"
    with pytest.raises(CommandError, match="Nothing was imported"):
        call_command("import_invoices", str(path), "--no-progress", "--skipped", str(skipped))
    assert Invoice.objects.count() == 0
    assert "currency" in skipped.read_text()


def test_a_damaged_workbook_is_a_file_error_not_a_crash(customers):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("[Content_Types].xml", "<not-really/>")
    report = run(buffer.getvalue())
    assert report.file_error.startswith("The ") and not report.written
    assert Invoice.objects.count() == 0


# --- Strictness: what the file does not say is refused, never guessed --------------------------

def test_a_windows_file_keeps_its_euro_signs_and_dashes(customers):
    text = native_csv([invoice_row(1, "cus_b", currency="EUR", number="Fattura – 10 €"),
                       invoice_row(2, "cus_b", currency="EUR", number="Café")])
    report = run(text.encode("cp1252"))
    assert report.ok, (report.file_error, report.errors)
    assert report.encoding == "cp1252"
    assert Invoice.objects.get(external_id="in_1").number == "Fattura – 10 €"
    assert Invoice.objects.get(external_id="in_2").number == "Café"


@pytest.mark.parametrize("encoding,bom", [("utf-16-le", b"\xff\xfe"), ("utf-16-be", b"\xfe\xff"), ("utf-16-le", b"")])
def test_utf16_files_with_or_without_a_byte_order_mark(customers, encoding, bom):
    text = native_csv([invoice_row(1, number="Nº 1 – €")])
    report = run(bom + text.encode(encoding))
    assert report.ok, (report.file_error, report.errors)
    assert Invoice.objects.get().number == "Nº 1 – €"


def test_bytes_that_no_encoding_explains_are_refused_with_their_line(customers):
    data = native_csv([invoice_row(1), invoice_row(2, number="INV\x812")]).encode("latin-1")
    report = run(data)
    assert report.file_error.startswith("Line 3: the file is neither UTF-8 nor Windows-1252 (byte 0x81)")
    assert not report.written and Invoice.objects.count() == 0


def test_a_file_mixing_utf8_and_windows_text_is_refused(customers):
    data = (native_csv([invoice_row(1, number="Café")]).encode("utf-8")
            + native_csv([invoice_row(2, number="Café")]).split("\n", 1)[1].encode("cp1252"))
    report = run(data)
    assert report.file_error.startswith("The file mixes encodings: line 2 is UTF-8, line 3 is not")
    assert Invoice.objects.count() == 0


def test_a_declared_encoding_the_file_does_not_have_names_the_line(customers):
    data = native_csv([invoice_row(1), invoice_row(2, number="Café")]).encode("latin-1")
    report = run(data, encoding="utf-8")
    assert report.file_error.startswith("Line 3: the file is not valid utf-8")
    assert run(data, encoding="nope").file_error == "Unknown encoding 'nope'"


@pytest.mark.parametrize("currency,raw", [("JPY", "12.000"), ("EUR", "1.234"), ("USD", "1,234"), ("USD", "12,000")])
def test_an_amount_whose_separator_could_be_either_is_refused_unless_declared(customers, currency, raw):
    report = run(native_csv([invoice_row(1, currency=currency, amount_due=raw)]))
    assert not report.written and Invoice.objects.count() == 0
    (error,) = report.errors
    assert (error.line, error.column) == (2, "amount_due")
    assert error.reason.startswith(f"{raw} is ambiguous") and "declare the file's number format" in error.reason


def test_a_declared_number_format_reads_the_same_text_as_declared(customers):
    rows = [invoice_row(1, currency="JPY", amount_due="12.000"), invoice_row(2, currency="EUR", amount_due="1.234,5")]
    assert run(native_csv(rows), decimal_comma=True).ok
    assert Invoice.objects.get(external_id="in_1").amount_due == Decimal("12000")
    assert Invoice.objects.get(external_id="in_2").amount_due == Decimal("1234.50")
    assert run(native_csv([invoice_row(3, amount_due="1,234")]), decimal_comma=False).ok
    assert Invoice.objects.get(external_id="in_3").amount_due == Decimal("1234.00")
    # Against the declaration: refused, not read some other way (12,50 is not 1250 with a decimal point).
    report = run(native_csv([invoice_row(4, amount_due="12,50"), invoice_row(5, amount_due="1.5")]),
                 decimal_comma=False)
    assert report.errors[0].reason == "12,50 is not a number written with a decimal point"
    report = run(native_csv([invoice_row(5, amount_due="1.5")]), decimal_comma=True)
    assert report.errors[0].reason == "1.5 is not a number written with a decimal comma"


def test_unambiguous_amounts_need_no_declaration(customers):
    rows = [invoice_row(1, amount_due="1,234.50"), invoice_row(2, amount_due="1.234.567,00", currency="EUR"),
            invoice_row(3, amount_due="1,234,567"), invoice_row(4, amount_due="12,50", currency="EUR"),
            invoice_row(5, amount_due="0.500"), invoice_row(6, amount_due="1 234,5", currency="EUR")]
    report = run(native_csv(rows))
    assert report.ok, report.errors
    amounts = dict(Invoice.objects.values_list("external_id", "amount_due"))
    assert amounts == {"in_1": Decimal("1234.50"), "in_2": Decimal("1234567.00"), "in_3": Decimal("1234567.00"),
                       "in_4": Decimal("12.50"), "in_5": Decimal("0.50"), "in_6": Decimal("1234.50")}


@pytest.mark.parametrize("currency,raw,places,decimal_comma", [
    ("USD", "10.005", "2", False), ("USD", "1234.567", "2", None), ("JPY", "100.5", "none", None),
    ("EUR", "0,125", "2", None), ("EUR", "0,125", "2", True)])
def test_an_amount_with_more_decimals_than_its_currency_is_refused_not_rounded(customers, currency, raw, places,
                                                                                decimal_comma):
    report = run(native_csv([invoice_row(1, currency=currency, amount_due="200", amount_paid=raw)]),
                 decimal_comma=decimal_comma)
    assert not report.written and Invoice.objects.count() == 0
    (error,) = report.errors
    assert (error.line, error.column) == (2, "amount_paid")
    assert error.reason == f"{raw} has more decimals than {currency} allows ({places}); it is not rounded"


def test_xlsx_number_cells_are_numbers_not_text_to_guess(customers):
    book = Workbook()
    sheet = book.active
    sheet.append(["external_id", "customer_external_id", "currency", "amount_due", "amount_paid", "issued_at",
                  "due_date"])
    sheet.append(["in_1", "cus_a", "JPY", 12000, 0.1 + 0.2, "2026-03-01", "2026-03-31"])
    sheet.append(["in_2", "cus_a", "EUR", 1.234, None, "2026-03-01", "2026-03-31"])
    buffer = io.BytesIO()
    book.save(buffer)
    report = run(buffer.getvalue())
    assert [(e.line, e.column, e.reason) for e in report.errors] == [
        (2, "amount_paid", "0.3 has more decimals than JPY allows (none); it is not rounded"),
        (3, "amount_due", "1.234 has more decimals than EUR allows (2); it is not rounded")]


def test_a_row_missing_a_cell_is_an_error_not_filled_with_blanks(customers):
    lines = native_csv([invoice_row(1), invoice_row(2, decline_code="expired_card")]).splitlines()
    lines[2] = lines[2].removesuffix(",expired_card")
    report = run("\n".join(lines) + "\n")
    assert not report.written and Invoice.objects.count() == 0
    assert [(e.line, e.column, e.reason) for e in report.errors] == [
        (3, "decline_code", "is missing: the row has 10 cells, the header 11")]
    assert report.invalid_rows[3]["external_id"] == "in_2"


def test_command_dry_run_with_invalid_rows_exits_non_zero_with_the_count(customers, tmp_path, capsys):
    path = tmp_path / "invoices.csv"
    path.write_text(native_csv([invoice_row(1), invoice_row(2, currency="???"),
                                invoice_row(3, currency="JPY", amount_due="12.000", issued_at="x")]))
    with pytest.raises(CommandError, match=r"^dry run: 2 invalid row\(s\), 3 error\(s\); nothing written$"):
        call_command("import_invoices", str(path), "--dry-run", "--no-progress")
    assert "line 4: amount_due: 12.000 is ambiguous" in capsys.readouterr().out
    assert Invoice.objects.count() == 0


def test_command_takes_the_files_number_format(customers, tmp_path):
    path = tmp_path / "invoices.csv"
    path.write_text(native_csv([invoice_row(1, currency="JPY", amount_due="12.000")]))
    with pytest.raises(CommandError, match="Nothing was imported"):
        call_command("import_invoices", str(path), "--no-progress")
    call_command("import_invoices", str(path), "--no-progress", "--decimal-comma")
    assert Invoice.objects.get().amount_due == Decimal("12000")
    with pytest.raises(CommandError):
        call_command("import_invoices", str(path), "--decimal-comma", "--decimal-point")
