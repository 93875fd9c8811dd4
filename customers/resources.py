"""django-import-export resource for customers: upsert by external id, nothing written if a row is bad."""

from __future__ import annotations

import csv
import io

from django.utils.translation import gettext as _
from import_export import resources
from import_export.formats import base_formats

from customers.models import Customer


class FileError(ValueError):
    """The file cannot be imported as a whole; the message says where and why (shown as is)."""


class _SameWidth:
    """Every row has as many cells as the header: tablib pads a short row with blanks, which would hide a
    lost cell (and the values after it may sit under the wrong columns)."""

    DELIMITER = ","

    def create_dataset(self, in_stream, **kwargs):
        text = in_stream.decode(self.encoding or "utf-8-sig") if isinstance(in_stream, bytes) else in_stream
        reader = csv.reader(io.StringIO(text), delimiter=self.DELIMITER)
        width = None
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue
            if width is None:
                width = len(row)
            elif len(row) < width:
                raise FileError(_("Line %(line)s has %(cells)s cells, the header %(width)s: a cell is missing.")
                                % {"line": reader.line_num, "cells": len(row), "width": width})
        return super().create_dataset(in_stream, **kwargs)


class CSV(_SameWidth, base_formats.CSV):
    pass


class TSV(_SameWidth, base_formats.TSV):
    DELIMITER = "\t"


# The import formats offered on the customer list: django-import-export's, with CSV and TSV checked.
IMPORT_FORMATS = [{base_formats.CSV: CSV, base_formats.TSV: TSV}.get(f, f) for f in base_formats.DEFAULT_FORMATS]


class CustomerResource(resources.ModelResource):
    class Meta:
        model = Customer
        import_id_fields = ("external_id",)
        fields = ("external_id", "name", "email", "phone", "locale", "timezone", "country", "currency", "segment",
                  "is_business", "mrr")
        export_order = fields
        skip_unchanged = True
        report_skipped = True
        clean_model_instances = True
