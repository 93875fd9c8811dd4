"""Customers are imported with django-import-export's own admin flow (preview, then confirm), upserted
by external id; the temporary upload lives in media storage so that any web server can confirm it."""

from __future__ import annotations

import re

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from customers.models import Customer
from tests.factories import CustomerFactory

pytestmark = pytest.mark.django_db

CSV = (b"external_id,name,email,currency,locale,timezone,country,segment,is_business,mrr,phone\n"
       b"cus_1,Alpha Srl,a@example.com,EUR,it,Europe/Rome,IT,pro,1,99.00,\n"
       b"cus_2,Beta Ltd,b@example.com,GBP,en,Europe/London,GB,,0,0,\n")


def preview(client, content: bytes):
    return client.post(reverse("admin:customers_customer_import"),
                       {"import_file": SimpleUploadedFile("customers.csv", content), "format": "0", "resource": "0"})


def confirm(client, page: str):
    fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', page))
    fields.pop("csrfmiddlewaretoken", None)
    return client.post(reverse("admin:customers_customer_process_import"), fields)


def test_customer_import_preview_then_confirm_and_reimport(admin_client, settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path)
    CustomerFactory(external_id="cus_2", name="Old name", currency="GBP")
    page = preview(admin_client, CSV).content.decode()
    assert "Alpha Srl" in page and Customer.objects.count() == 1  # a dry run writes nothing
    assert settings.IMPORT_EXPORT_TMP_STORAGE_CLASS == "import_export.tmp_storages.MediaStorage"
    assert confirm(admin_client, page).status_code == 302
    assert Customer.objects.get(external_id="cus_1").timezone == "Europe/Rome"
    assert Customer.objects.get(external_id="cus_2").name == "Beta Ltd"
    before = list(Customer.objects.order_by("id").values())
    confirm(admin_client, preview(admin_client, CSV).content.decode())
    assert list(Customer.objects.order_by("id").values()) == before


def test_customer_import_with_a_bad_row_imports_nothing(admin_client, settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path)
    bad = CSV.replace(b"Europe/London", b"Mars/Base")
    page = preview(admin_client, bad).content.decode()
    assert "Mars/Base is not an IANA time zone" in page
    assert 'name="import_file_name"' not in page  # no confirm form
    assert Customer.objects.count() == 0


def test_customer_import_refuses_a_row_missing_a_cell(admin_client, settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path)
    short = CSV.replace(b"GB,,0,0,\n", b"GB,,0,0\n")
    page = preview(admin_client, short).content.decode()
    assert "Line 3 has 10 cells, the header 11: a cell is missing." in page
    assert 'name="import_file_name"' not in page and Customer.objects.count() == 0


def test_customer_import_names_the_line_that_is_not_utf8(admin_client, settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path)
    windows = CSV.replace(b"Beta Ltd", "Beta – Ltd".encode("cp1252"))
    page = preview(admin_client, windows).content.decode()
    assert "Line 3: the file is not UTF-8. Save it as CSV UTF-8 and upload it again." in page
    assert Customer.objects.count() == 0
