"""Property-based run of the whole API against its own OpenAPI schema (in-process, WSGI).

Every operation is called with generated data and a read-write key: no response may be a server error,
have an undocumented status code, or break the schema.
"""

from __future__ import annotations

import pytest
import schemathesis
from django.core.cache import cache
from django.core.wsgi import get_wsgi_application
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import negative_data_rejection, positive_data_acceptance

from integrations.models import ApiKey
from tests.factories import CustomerFactory, InvoiceFactory, PaymentMethodFactory

schema = schemathesis.openapi.from_wsgi("/api/schema/", get_wsgi_application())


@pytest.fixture(autouse=True)
def keep_test_connection():
    """Like Django's test client: requests must not close the connection that holds the test transaction."""
    from django.core import signals
    from django.db import close_old_connections

    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    yield
    signals.request_started.connect(close_old_connections)
    signals.request_finished.connect(close_old_connections)


@pytest.fixture
def bearer(db, defaults, settings):
    settings.API_THROTTLE_RATE = "100000/min"
    cache.clear()
    customer = CustomerFactory(external_id="cus_st")
    PaymentMethodFactory(customer=customer)
    InvoiceFactory(customer=customer, external_id="in_st")
    _key, secret = ApiKey.issue("schemathesis", ApiKey.Scope.READ_WRITE)
    return {"Authorization": f"Bearer {secret}"}


@pytest.mark.django_db(transaction=False)
@schema.parametrize()
@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.filter_too_much,
                                 HealthCheck.too_slow])
def test_api_conforms_to_its_schema(case, bearer):
    # Left out: negative_data_rejection (like most DRF APIs this one ignores an unusable ?page_size= or
    # ?ordering= and falls back to the default rather than answering 400) and positive_data_acceptance
    # (a schema cannot say which strings are real time zones, currencies or cursors: those are 400s
    # with field details). Every other check runs: no 5xx, documented status codes and content types,
    # responses valid against the schema, authentication enforced.
    case.call_and_validate(headers=bearer, excluded_checks=[negative_data_rejection, positive_data_acceptance])
