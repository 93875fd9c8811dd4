"""The admin import: upload, dry-run preview, confirm, valid rows only, skipped rows, background jobs,
exports; and a property test that garbage never gives a server error nor writes anything."""

from __future__ import annotations

import csv
import io

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from billing.models import Invoice
from billing.resources import InvoiceResource, PaymentAttemptResource
from dunning.models import DunningCase
from dunning.resources import DunningCaseResource
from integrations.models import ImportJob
from tests.factories import CustomerFactory, InvoiceFactory
from tests.support.imports import NATIVE_HEADER, invoice_row, native_csv

pytestmark = pytest.mark.django_db

ADD = "admin:integrations_importjob_add"


def upload(client, content: bytes, name: str = "invoices.csv", **fields):
    data = {"file": SimpleUploadedFile(name, content), "format": "native", "date_format": "", **fields}
    response = client.post(reverse(ADD), data)
    assert response.status_code == 302, response.content[:500]
    return ImportJob.objects.latest("id"), response["Location"]


@pytest.fixture(autouse=True)
def media(settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path)


@pytest.fixture
def customer(db):
    return CustomerFactory(external_id="cus_a")


def test_preview_shows_counts_and_every_invalid_row_then_nothing_is_imported(admin_client, customer):
    InvoiceFactory(customer=customer, external_id="in_1", number="INV-1", amount_due="100.00",
                   issued_at="2026-03-01", due_date="2026-03-31")
    InvoiceFactory(customer=customer, external_id="in_2", amount_due="5.00")
    rows = [invoice_row(1), invoice_row(2), invoice_row(3), invoice_row(4, currency="ABC"),
            invoice_row(5, issued_at="yesterday")]
    job, location = upload(admin_client, native_csv(rows).encode())
    page = admin_client.get(location).content.decode()
    assert job.status == ImportJob.Status.PREVIEW
    assert 'id="count-new">1<' in page and 'id="count-updated">1<' in page
    assert 'id="count-unchanged">1<' in page and 'id="count-invalid">2<' in page
    assert "<td>5</td><td>currency</td><td>ABC is not an ISO 4217 currency code</td>" in page
    assert "<td>6</td><td>issued_at</td>" in page
    # Confirming without "valid rows only" is refused: nothing is written.
    response = admin_client.post(location, {"_confirm": "1"})
    assert response.status_code == 302
    assert Invoice.objects.count() == 2 and Invoice.objects.get(external_id="in_2").amount_due == 5


def test_valid_rows_only_then_download_the_skipped_rows(admin_client, customer):
    rows = [invoice_row(1), invoice_row(2, amount_due="abc"), invoice_row(3)]
    job, location = upload(admin_client, native_csv(rows).encode())
    admin_client.post(location, {"_confirm": "1", "valid_only": "on"})
    job.refresh_from_db()
    assert job.status == ImportJob.Status.DONE
    assert sorted(Invoice.objects.values_list("external_id", flat=True)) == ["in_1", "in_3"]
    response = admin_client.get(reverse("admin:integrations_importjob_skipped", args=[job.pk]))
    skipped = list(csv.reader(io.StringIO(response.content.decode())))
    assert skipped[0] == ["line", *NATIVE_HEADER, "reason"]
    assert skipped[1][:2] == ["3", "in_2"] and skipped[1][-1] == "amount_due: abc is not a number"


def test_clean_file_confirmed_imports_and_a_second_confirm_does_nothing(admin_client, customer, defaults):
    rows = [invoice_row(1, due_date="2026-01-31", issued_at="2026-01-01"), invoice_row(2, due_date="2099-12-31")]
    job, location = upload(admin_client, native_csv(rows).encode())
    admin_client.post(location, {"_confirm": "1"})
    admin_client.post(location, {"_confirm": "1"})
    job.refresh_from_db()
    assert job.status == ImportJob.Status.DONE and job.report["cases_opened"] == 1
    assert Invoice.objects.count() == 2 and DunningCase.objects.count() == 1
    assert "Dunning cases opened" in admin_client.get(location).content.decode()


def test_large_files_are_validated_and_imported_by_a_background_task(admin_client, customer, settings,
                                                                     django_capture_on_commit_callbacks):
    settings.IMPORT_BACKGROUND_BYTES = 10
    with django_capture_on_commit_callbacks(execute=True):
        job, location = upload(admin_client, native_csv([invoice_row(1)]).encode())
    job.refresh_from_db()
    assert job.status == ImportJob.Status.PREVIEW and job.report["new"] == 1
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        admin_client.post(location, {"_confirm": "1"})
    assert len(callbacks) == 1  # handed to django-q2 (sync in tests)
    job.refresh_from_db()
    assert job.status == ImportJob.Status.DONE and Invoice.objects.count() == 1


def test_progress_page_refreshes_while_a_job_runs(admin_client, customer):
    job = ImportJob.objects.create(file_name="big.csv", stored_path="x", status=ImportJob.Status.RUNNING,
                                   processed=250, total=1000)
    page = admin_client.get(reverse("admin:integrations_importjob_change", args=[job.pk])).content.decode()
    assert 'http-equiv="refresh"' in page and 'value="25"' in page


def test_stripe_preset_chosen_in_the_form(admin_client, customer):
    content = (b"id,Customer,Currency,Amount Due,Amount Paid,Date (UTC),Due Date (UTC),Status,Coupon\n"
               b"in_s1,cus_a,usd,10.00,0,2026-03-01 10:00,2026-03-31 00:00,open,SAVE10\n")
    job, location = upload(admin_client, content, format="stripe")
    assert job.report["new"] == 1 and job.report["unknown_columns"] == ["Coupon"]
    assert "Unknown columns (not imported)" in admin_client.get(location).content.decode()


def test_number_format_chosen_in_the_form_reads_ambiguous_amounts(admin_client, customer):
    content = native_csv([invoice_row(1, currency="JPY", amount_due="12.000")]).encode()
    job, location = upload(admin_client, content)
    assert job.report["invalid"] == 1 and job.number_format == ""
    page = admin_client.get(location).content.decode()
    assert "<td>2</td><td>amount_due</td><td>12.000 is ambiguous (12000 or 12.000?)" in page
    assert "Number format" in admin_client.get(reverse(ADD)).content.decode()

    job, location = upload(admin_client, content, number_format=ImportJob.NumberFormat.DECIMAL_COMMA)
    assert job.number_format == "comma" and job.report["new"] == 1
    admin_client.post(location, {"_confirm": "1"})
    job.refresh_from_db()
    assert job.status == ImportJob.Status.DONE and Invoice.objects.get().amount_due == 12000


def test_invoice_changelist_links_import_and_exports(admin_client, customer):
    InvoiceFactory(customer=customer, external_id="in_e1")
    page = admin_client.get(reverse("admin:billing_invoice_changelist")).content.decode()
    assert reverse(ADD) in page
    for name, resource in (("billing_invoice", InvoiceResource), ("billing_paymentattempt", PaymentAttemptResource),
                           ("dunning_dunningcase", DunningCaseResource)):
        fields = {f"{resource.__name__.lower()}_{f}": "on" for f in resource().get_export_order()}
        response = admin_client.post(reverse(f"admin:{name}_export"), {"format": "0", "resource": "0", **fields})
        assert response.status_code == 200, name
        assert response["Content-Type"].startswith("text/csv"), response.content[:300]
        if name == "billing_invoice":
            assert b"in_e1" in response.content and b"customer_external_id" in response.content


GARBAGE_CELL = st.text(st.characters(codec="utf-8"), max_size=30)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.one_of(
    st.binary(max_size=400),
    st.lists(st.lists(GARBAGE_CELL, max_size=12), max_size=8).map(
        lambda rows: native_csv([dict(zip(NATIVE_HEADER, r, strict=False)) for r in rows]).encode()),
    st.text(max_size=300).map(lambda t: t.encode("utf-8", "surrogatepass")),
))
def test_garbage_never_gives_a_server_error_nor_writes(admin_client, raw):
    invoices = Invoice.objects.count()
    if not raw:  # an empty upload is refused by the form itself
        response = admin_client.post(reverse(ADD), {"file": SimpleUploadedFile("e.csv", raw), "format": "native"})
        assert response.status_code == 200 and b"The submitted file is empty" in response.content
        return
    job, location = upload(admin_client, raw)
    assert admin_client.get(location).status_code == 200
    response = admin_client.post(location, {"_confirm": "1", "valid_only": "on"})
    assert response.status_code < 500
    # No customer exists, so no row can be valid: nothing may be written.
    assert Invoice.objects.count() == invoices
