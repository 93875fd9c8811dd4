"""Every admin page as each staff role: never a 500, 403 where the role may not look, nothing to save for readers.

The pages are found from the admin itself (every registered ModelAdmin and its own URLs, the site's
pages, the reports), so a newly registered model or admin view is covered without editing this file;
the demo data must hold a row of every registered model (the fixture says which one is missing).
"""

from __future__ import annotations

import io
import re

import pytest
from axes.models import AccessAttempt, AccessFailureLog, AccessLog
from django.contrib import admin
from django.contrib.messages import ERROR
from django.core.management import call_command
from django.test import RequestFactory
from django.urls import reverse
from django_q.models import OrmQ
from django_q.signing import SignedPackage

from billing.models import Invoice, PaymentAttempt
from customers.models import Customer
from dunning.models import Campaign, CaseEvent, DunningCase, WorkItem
from notifications.models import Notification
from reports import queries
from tests.factories import (
    CampaignPinFactory,
    CampaignVariantFactory,
    GatewayRefundFactory,
    ImportJobFactory,
    InboundEventFactory,
    InvoiceFeeFactory,
    PaymentMethodFactory,
    PaymentPlanFactory,
    PlanLimitFactory,
    TaskFactory,
    WebhookDeliveryFactory,
)
from tests.support.cases import staff_user
from tests.support.imports import api_key

pytestmark = pytest.mark.django_db

ROLES = ["Collections agent", "Collections manager", "Auditor", "superuser"]
READ_ONLY_ROLES = {"Auditor"}
SAVE_BUTTON = re.compile(r'<input[^>]*type="submit"[^>]*(name="_(save|continue|addanother)"|value="Save)', re.I)


@pytest.fixture
def demo():
    """The demo data set, plus a row of each model it does not create."""
    call_command("load_demo_data", stdout=io.StringIO())
    campaign = Campaign.objects.get(name="Standard")
    CampaignVariantFactory(experiment=campaign, name="Control", is_control=True)
    CampaignVariantFactory(experiment=campaign, name="Gentle")
    jpy = Customer.objects.filter(currency="JPY").first()
    CampaignPinFactory(customer=jpy, campaign=campaign)
    PaymentPlanFactory(customer=jpy, total="36000")
    PlanLimitFactory(currency="USD")
    InvoiceFeeFactory(invoice=Invoice.objects.filter(currency="EUR").first())
    GatewayRefundFactory(attempt__invoice=Invoice.objects.filter(currency="JPY").first())
    InboundEventFactory(source="stripe", event_id="evt_000001", kind="charge.failed")
    WebhookDeliveryFactory()
    key, _secret = api_key()
    InboundEventFactory(api_key=key)
    ImportJobFactory()
    TaskFactory(success=True)
    TaskFactory(success=False)
    OrmQ.objects.create(key="default", lock=None, payload=SignedPackage.dumps(
        {"id": "0" * 32, "name": "queued-task", "func": "dunning.tasks.run_due_steps", "args": (), "kwargs": {}}))
    # A locked-out sign-in (django-axes), as the lock-out leaves it.
    seen = {"user_agent": "Mozilla/5.0", "ip_address": "203.0.113.9", "username": "mallory", "http_accept": "*/*",
            "path_info": "/admin/login/"}
    AccessAttempt.objects.create(**seen, get_data="", post_data="username=mallory", failures_since_start=5)
    AccessFailureLog.objects.create(**seen, locked_out=True)
    AccessLog.objects.create(**seen)
    missing = [m._meta.label for m in admin.site._registry if not m._default_manager.exists()]
    assert not missing, f"no demo row of {missing}: build one above (tests/factories.py)"


def login(client, role: str):
    user = staff_user("root", superuser=True) if role == "superuser" else staff_user(role.replace(" ", "_"), role)
    client.force_login(user)
    request = RequestFactory().get("/admin/")
    request.user = user
    return request


def model_pages(request):
    """(url, expected status or None for "anything but an error", kind) for every ModelAdmin URL."""
    for model, model_admin in admin.site._registry.items():
        obj = model._default_manager.order_by("pk").first()
        for pattern in model_admin.get_urls():
            if not pattern.name:
                continue  # the bare "<id>/" redirect to the change page
            url = reverse(f"admin:{pattern.name}", kwargs=dict.fromkeys(pattern.pattern.converters, obj.pk))
            kind = pattern.name.rsplit("_", 1)[-1]
            expected = {
                "changelist": model_admin.has_view_or_change_permission(request),
                "add": model_admin.has_add_permission(request),
                "change": model_admin.has_view_or_change_permission(request, obj),
                "delete": model_admin.has_delete_permission(request, obj),
            }.get(kind)
            yield url, None if expected is None else (200 if expected else 403), kind


def other_pages():
    """(url, allowed statuses): the dashboard, each app's index, every report (by currency, as CSV)."""
    yield reverse("admin:index"), {200}
    for app_label in {m._meta.app_label for m in admin.site._registry}:
        yield reverse("admin:app_list", args=[app_label]), {200, 404}  # 404: no model of it for this role
    yield reverse("reports:index"), {200, 403}
    for slug in queries.REPORTS:
        for query in ("", "?currency=USD", "?currency=JPY", "?format=csv", "?currency=JPY&format=csv"):
            yield reverse("reports:report", args=[slug]) + query, {200, 403}
    for campaign in Campaign.objects.filter(variants__isnull=False).distinct():
        for query in ("", "?currency=JPY", "?format=csv"):
            yield reverse("reports:experiment", args=[campaign.pk]) + query, {200, 403}


@pytest.mark.parametrize("role", ROLES)
def test_every_admin_page_answers_each_role_without_an_error(client, demo, role):
    request = login(client, role)
    wrong = []
    for url, expected, kind in model_pages(request):
        response = client.get(url)
        if (expected is not None and response.status_code != expected) or response.status_code >= 500:
            wrong.append(f"{url}: {response.status_code}, expected {expected or 'no error'}")
            continue
        if role in READ_ONLY_ROLES and kind in ("change", "add") and response.status_code == 200:
            if SAVE_BUTTON.search(response.content.decode()):
                wrong.append(f"{url}: a reader is offered a Save button")
    for url, allowed in other_pages():
        response = client.get(url)
        if response.status_code not in allowed:
            wrong.append(f"{url}: {response.status_code}")
    assert not wrong, "\n".join(wrong)


def test_the_pages_a_role_may_see_are_really_shown(client, demo):
    """The crawl above also accepts 403: make sure the roles' main pages are not all refused."""
    login(client, "Auditor")
    for name in ("dunning_dunningcase", "dunning_workitem", "billing_invoice", "billing_paymentattempt",
                 "customers_customer", "notifications_notification", "dunning_caseevent"):
        assert client.get(reverse(f"admin:{name}_changelist")).status_code == 200, name
    item = WorkItem.objects.first()
    page = client.get(reverse("admin:dunning_workitem_change", args=[item.pk]))
    assert page.status_code == 200 and item.title in page.content.decode()
    assert client.get(reverse("admin:index")).status_code == 200
    assert 'id="cockpit-dashboard"' in client.get(reverse("admin:index")).content.decode()
    assert client.get(reverse("reports:report", args=["period"])).status_code == 200


def offered_actions(model_admin, request) -> dict:
    return {name: func for name, (func, _name, _desc) in model_admin.get_actions(request).items()}


def action_choices(page) -> list[str]:
    """The actions the changelist's drop-down offers (none: no drop-down at all)."""
    form = page.context.get("action_form")
    return [value for value, _label in form.fields["action"].choices if value] if form else []


@pytest.mark.parametrize("role", sorted(READ_ONLY_ROLES))
def test_readers_are_offered_only_actions_meant_for_readers_and_they_work(client, demo, role):
    request = login(client, role)
    wrong = []
    for model, model_admin in admin.site._registry.items():
        if not model_admin.has_view_or_change_permission(request):
            continue
        obj = model._default_manager.order_by("pk").first()
        changelist = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")
        page = client.get(changelist)
        shown = action_choices(page)
        for name, func in offered_actions(model_admin, request).items():
            if set(getattr(func, "allowed_permissions", ())) != {"view"}:
                wrong.append(f"{changelist}: {name} offered to a reader (declare permissions=['view'] if it "
                             "changes nothing)")
                continue
            response = client.post(changelist, {"action": name, admin.helpers.ACTION_CHECKBOX_NAME: [obj.pk]},
                                   follow=True)
            errors = [str(m) for m in response.context["messages"] if m.level == ERROR] \
                if response.context and "messages" in response.context else []
            if response.status_code != 200 or errors:
                wrong.append(f"{changelist}: {name} answered {response.status_code} {errors}")
        assert set(shown) <= set(offered_actions(model_admin, request)), changelist
    assert not wrong, "\n".join(wrong)


# --- Append-only rows: nobody deletes them from the admin ----------------------------------------------

APPEND_ONLY = [Notification, PaymentAttempt, CaseEvent]


@pytest.mark.parametrize("model", APPEND_ONLY, ids=lambda m: m._meta.label)
def test_superusers_cannot_delete_outbox_rows_attempts_or_timeline_events(client, demo, model):
    request = login(client, "superuser")
    obj = model.objects.first()
    opts = model._meta
    assert client.get(reverse(f"admin:{opts.app_label}_{opts.model_name}_delete", args=[obj.pk])).status_code == 403
    assert client.post(reverse(f"admin:{opts.app_label}_{opts.model_name}_delete", args=[obj.pk]),
                       {"post": "yes"}).status_code == 403
    changelist = reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist")
    page = client.get(changelist)
    assert "delete_selected" not in action_choices(page)
    client.post(changelist, {"action": "delete_selected", admin.helpers.ACTION_CHECKBOX_NAME: [obj.pk],
                             "post": "yes"})
    assert model.objects.filter(pk=obj.pk).exists()
    # Nor as an inline of another page, nor by deleting what they belong to.
    for model_admin in admin.site._registry.values():
        for inline in model_admin.get_inline_instances(request):
            if inline.model is model:
                assert not inline.has_delete_permission(request), f"{type(inline).__name__} lets rows be deleted"


def test_deleting_a_customer_or_invoice_does_not_take_its_history_with_it(client, demo):
    login(client, "superuser")
    case = DunningCase.objects.filter(events__isnull=False, invoice__attempts__isnull=False).first()
    for obj in (case.customer, case.invoice):
        opts = obj._meta
        response = client.post(reverse(f"admin:{opts.app_label}_{opts.model_name}_delete", args=[obj.pk]),
                               {"post": "yes"})
        assert response.status_code in (200, 403)  # the page lists what may not be deleted
        assert type(obj).objects.filter(pk=obj.pk).exists()
    assert CaseEvent.objects.filter(case=case).exists() and PaymentAttempt.objects.filter(invoice=case.invoice).exists()



# --- Card details and the customer's status change through services, not the admin form -------------

def change_form_data(page) -> dict:
    """What the browser would post back for the change page as shown (main form and inlines)."""
    data = {}
    forms = [page.context["adminform"].form]
    for inline in page.context["inline_admin_formsets"]:
        formset = inline.formset
        forms.extend(formset.forms)
        management = formset.management_form
        data.update({management.add_prefix(n): management[n].value() for n in management.fields})
    for form in forms:
        for name, bound in ((n, form[n]) for n in form.fields):
            value = bound.value()
            if value is None or value is False:
                continue
            data[form.add_prefix(name)] = "on" if value is True else value
    return data


@pytest.mark.parametrize("role", ["Collections manager", "superuser"])
def test_card_details_and_customer_status_cannot_be_changed_on_the_customer_page(client, role):
    login(client, role)
    method = PaymentMethodFactory(brand="visa", last4="4242", exp_month=12, exp_year=2030)
    customer = method.customer
    url = reverse("admin:customers_customer_change", args=[customer.pk])
    data = change_form_data(client.get(url))
    data.update({"name": "Renamed", "status": Customer.Status.SUSPENDED, "payment_methods-0-brand": "amex",
                 "payment_methods-0-last4": "0005", "payment_methods-0-exp_month": "1",
                 "payment_methods-0-exp_year": "2031", "payment_methods-0-token": "tok_other",
                 "payment_methods-0-kind": "sepa_debit"})
    response = client.post(url, data)
    assert response.status_code == 302, response.content.decode()[:3000]
    customer.refresh_from_db()
    method.refresh_from_db()
    assert customer.name == "Renamed"  # the form works; only the protected fields did not move
    assert customer.status == Customer.Status.ACTIVE and customer.suspended_at is None
    assert (method.kind, method.brand, method.last4, method.exp_month, method.exp_year, method.token) == (
        "card", "visa", "4242", 12, 2030, method.token)
    assert not method.token.startswith("tok_other")
    page = client.get(url).content.decode()
    assert 'name="status"' not in page and 'name="payment_methods-0-last4"' not in page
    assert 'name="payment_methods-__prefix__-brand"' not in page  # no new card typed in either


@pytest.mark.parametrize("role", ["Collections manager", "superuser"])
def test_card_details_cannot_be_changed_on_the_payment_method_page(client, role):
    login(client, role)
    method = PaymentMethodFactory(brand="visa", last4="4242", exp_month=12, exp_year=2030)
    url = reverse("admin:customers_paymentmethod_change", args=[method.pk])
    data = change_form_data(client.get(url))
    data.update({"brand": "amex", "last4": "0005", "exp_month": "1", "exp_year": "2031", "token": "tok_other",
                 "is_default": ""})
    response = client.post(url, data)
    assert response.status_code == 302, response.content.decode()[:3000]
    method.refresh_from_db()
    assert (method.brand, method.last4, method.exp_month, method.exp_year) == ("visa", "4242", 12, 2030)
    assert not method.token.startswith("tok_other")
    assert method.is_default is False  # what stays editable still saves
