"""Exports are safe to open in a spreadsheet: no cell runs as a formula (CSV injection)."""

from __future__ import annotations

import csv
import io

import openpyxl
import pytest

from billing.models import Invoice
from billing.resources import InvoiceResource
from core import exports
from customers.models import Customer
from customers.resources import CustomerResource
from dunning.admin.customers import CustomerAdmin
from tests.factories import CustomerFactory, InvoiceFactory

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("value, written", [
    ("=HYPERLINK(\"http://evil.example\",\"Pay\")", "'=HYPERLINK(\"http://evil.example\",\"Pay\")"),
    ("=1+2", "'=1+2"), ("+1+2", "'+1+2"), ("@SUM(A1)", "'@SUM(A1)"), ("-2+3", "'-2+3"),
    ("\t=1", "'\t=1"), ("-12.50", "-12.50"), ("Acme & Sons", "Acme & Sons"), (12, 12),
])
def test_a_cell_that_would_run_as_a_formula_is_written_as_text(value, written):
    assert exports.neutralize(value) == written


def _rows(fmt, resource, queryset):
    data = fmt().export_data(resource.export(queryset=queryset))
    if isinstance(data, bytes):
        sheet = openpyxl.load_workbook(io.BytesIO(data)).active
        return [[cell.value for cell in row] for row in sheet.iter_rows()]
    return list(csv.reader(io.StringIO(data)))


@pytest.mark.parametrize("fmt", [exports.CSV, exports.XLSX])
def test_customer_and_invoice_exports_neutralize_formulas(fmt):
    customer = CustomerFactory(name="=HYPERLINK(\"http://evil.example\",\"Pay\")")
    InvoiceFactory(customer=customer, number="=1+2")
    customers = _rows(fmt, CustomerResource(), Customer.objects.all())
    assert "'=HYPERLINK(\"http://evil.example\",\"Pay\")" in customers[1]
    invoices = _rows(fmt, InvoiceResource(), Invoice.objects.all())
    assert "'=1+2" in invoices[1]
    assert not any(str(cell).startswith("=") for row in customers + invoices for cell in row if cell)


def test_the_admin_offers_only_the_safe_formats(rf):
    admin = CustomerAdmin(Customer, None)
    assert admin.get_export_formats() == [exports.CSV, exports.XLSX]
