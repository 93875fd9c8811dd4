"""Spreadsheet-safe exports (CSV injection): a text cell that a spreadsheet would run as a formula
(`=HYPERLINK(...)`, `+1+2`, `@SUM(...)`) is written with a leading apostrophe, which spreadsheets
read as "this is text". Numbers such as `-12.50` are left as they are. Used by every admin export
(django-import-export) and by the reports' CSV."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from import_export.formats import base_formats

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def neutralize(value):
    if not isinstance(value, str) or not value.startswith(FORMULA_START):
        return value
    try:
        Decimal(value)
    except InvalidOperation:
        return "'" + value
    return value


class _Neutralized:
    def export_data(self, dataset, **kwargs):
        for _ in range(len(dataset)):
            dataset.append([neutralize(cell) for cell in dataset.lpop()])
        return super().export_data(dataset, **kwargs)


class CSV(_Neutralized, base_formats.CSV):
    pass


class XLSX(_Neutralized, base_formats.XLSX):
    pass


# What the admin's export buttons offer.
FORMATS = [CSV, XLSX]
