"""core.lookups: ``field__any`` selects what ``field__in`` selects (one array parameter on PostgreSQL)."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from billing.models import Invoice
from customers.models import Customer
from tests.factories import CustomerFactory, InvoiceFactory

pytestmark = pytest.mark.django_db


def test_any_matches_in_for_keys_and_foreign_keys_with_duplicates_none_and_empty_lists():
    customers = [CustomerFactory() for _ in range(3)]
    invoices = [InvoiceFactory(customer=c) for c in customers for _ in range(2)]
    ids = [customers[0].pk, customers[2].pk, customers[2].pk, None, 10**9]
    for values in (ids, set(ids) - {None}, [], [None], [customers[1].pk]):
        assert (sorted(Customer.objects.filter(pk__any=values).values_list("pk", flat=True))
                == sorted(Customer.objects.filter(pk__in=values).values_list("pk", flat=True)))
        assert (sorted(Invoice.objects.filter(customer_id__any=values).values_list("pk", flat=True))
                == sorted(Invoice.objects.filter(customer_id__in=values).values_list("pk", flat=True)))
    assert Invoice.objects.filter(customer__any=[customers[1].pk]).count() == 2
    assert Invoice.objects.filter(customer__any=[customers[1]]).count() == 2  # instances, as with __in
    assert Customer.objects.exclude(pk__any=[customers[0].pk]).count() == 2
    assert len(invoices) == 6


def test_any_is_only_for_integer_fields_and_leaves_a_json_key_named_any_alone():
    from django.core.exceptions import FieldError

    from integrations.models import InboundEvent

    with pytest.raises(FieldError):
        list(Customer.objects.filter(email__any=["a@example.com"]))
    InboundEvent.objects.create(event_id="e1", kind="payment_failed", payload={"any": "x"})
    InboundEvent.objects.create(event_id="e2", kind="payment_failed", payload={"other": "x"})
    assert list(InboundEvent.objects.filter(payload__any="x").values_list("event_id", flat=True)) == ["e1"]


def test_any_sends_one_parameter_on_postgresql():
    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL only")
    with CaptureQueriesContext(connection) as queries:
        list(Customer.objects.filter(pk__any=list(range(1, 500))))
    assert "= ANY(" in queries[0]["sql"] and "IN (" not in queries[0]["sql"]
