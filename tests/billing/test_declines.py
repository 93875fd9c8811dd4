"""Every decline is classified from the data table: Stripe codes, raw network codes, advice codes."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission, User

from billing import declines
from billing.decline_defaults import DEFAULT_RULES
from billing.models import DeclineRule

pytestmark = pytest.mark.django_db

SOON, SOFT, NEW, HARD = "retry_soon", "soft", "needs_new_method", "hard"
H = timedelta(hours=1)

# (decline_code, network_code, advice_code, brand) -> (class, retry_after)
TABLE = [
    # Stripe decline codes
    (("insufficient_funds", "51", "", "visa"), SOFT, None),
    (("do_not_honor", "05", "", "visa"), SOFT, None),
    (("card_velocity_exceeded", "", "", "visa"), SOFT, None),
    (("generic_decline", "", "", ""), SOFT, None),
    (("expired_card", "54", "", "visa"), NEW, None),
    (("incorrect_number", "", "", "visa"), NEW, None),
    (("authentication_required", "", "", "mastercard"), NEW, None),
    (("lost_card", "41", "", "mastercard"), HARD, None),
    (("stolen_card", "43", "", "visa"), HARD, None),
    (("pickup_card", "04", "", "visa"), HARD, None),
    (("fraudulent", "", "", ""), HARD, None),
    (("revocation_of_all_authorizations", "", "", "visa"), HARD, None),
    (("processing_error", "", "", "visa"), SOON, None),
    (("try_again_later", "", "", "amex"), SOON, None),
    (("issuer_not_available", "91", "", "visa"), SOON, None),
    # Visa category 1 response codes are never retried on Visa; the same code elsewhere is milder.
    (("generic_decline", "57", "", "visa"), HARD, None),
    (("generic_decline", "57", "", "mastercard"), NEW, None),
    (("generic_decline", "14", "", "visa"), HARD, None),
    (("generic_decline", "14", "", "mastercard"), NEW, None),
    (("generic_decline", "46", "", "visa"), HARD, None),
    (("generic_decline", "R0", "", "visa"), HARD, None),
    (("generic_decline", "R1", "", "Visa"), HARD, None),
    (("generic_decline", "r3", "", "visa"), HARD, None),
    (("generic_decline", "12", "", "visa"), HARD, None),
    (("generic_decline", "15", "", "visa"), HARD, None),
    # Mastercard merchant advice codes: the strictest class wins, with the longest wait.
    (("do_not_honor", "05", "01", "mastercard"), NEW, None),
    (("do_not_honor", "05", "02", "mastercard"), SOFT, 72 * H),
    (("do_not_honor", "05", "03", "mastercard"), HARD, None),
    (("insufficient_funds", "51", "03", "mastercard"), HARD, None),
    (("insufficient_funds", "51", "3", "mastercard"), HARD, None),
    (("do_not_honor", "", "21", "mastercard"), HARD, None),
    (("insufficient_funds", "51", "24", "mastercard"), SOFT, 1 * H),
    (("insufficient_funds", "51", "25", "mastercard"), SOFT, 24 * H),
    (("insufficient_funds", "51", "26", "mastercard"), SOFT, 48 * H),
    (("insufficient_funds", "51", "27", "mastercard"), SOFT, 96 * H),
    (("insufficient_funds", "51", "28", "mastercard"), SOFT, 144 * H),
    (("insufficient_funds", "51", "29", "mastercard"), SOFT, 192 * H),
    (("insufficient_funds", "51", "30", "mastercard"), SOFT, 240 * H),
    (("processing_error", "", "25", "mastercard"), SOFT, 24 * H),
    (("expired_card", "54", "25", "mastercard"), NEW, 24 * H),
    # Spelling: case and the sandbox's own codes
    (("INSUFFICIENT_FUNDS", "", "", "VISA"), SOFT, None),
    (("no_payment_method", "", "", ""), NEW, None),
    (("payment_method_blocked", "", "", ""), NEW, None),
]


@pytest.mark.parametrize(("codes", "expected", "retry_after"), TABLE, ids=["-".join(filter(None, t[0])) for t in TABLE])
def test_real_decline_and_advice_codes_are_classified(codes, expected, retry_after):
    found = declines.classify(*codes)
    assert found.decline_class == expected
    assert found.retry_after == retry_after
    assert found.matched, "a known code must match a rule in the table"


def test_a_code_nobody_knows_falls_back_to_the_configured_default(settings):
    assert declines.classify("brand_new_code_2031").decline_class == SOFT
    assert declines.classify("brand_new_code_2031").matched == ()


def test_the_table_is_data_seeded_by_migration_and_staff_edits_take_effect_at_once():
    assert DeclineRule.objects.count() == len(DEFAULT_RULES)
    assert declines.classify("insufficient_funds").decline_class == SOFT
    rule = DeclineRule.objects.get(kind="decline_code", code="insufficient_funds")
    rule.decline_class = HARD
    rule.save()
    assert declines.classify("insufficient_funds").decline_class == HARD
    rule.delete()
    assert declines.classify("insufficient_funds").matched == ()


def test_managers_see_and_edit_the_table_in_the_admin(client):
    manager = User.objects.create_user("manager", password="pw", is_staff=True)
    manager.user_permissions.add(*Permission.objects.filter(codename__in=["view_declinerule", "change_declinerule"]))
    client.force_login(manager)
    page = client.get("/admin/billing/declinerule/?q=stolen_card")
    assert page.status_code == 200
    assert "stolen_card" in page.content.decode()
    rule = DeclineRule.objects.get(kind="decline_code", code="do_not_honor", network="")
    response = client.post(f"/admin/billing/declinerule/{rule.pk}/change/", {
        "kind": rule.kind, "network": "", "code": rule.code, "decline_class": "needs_new_method",
        "retry_after_hours": "", "description": rule.description,
    })
    assert response.status_code == 302
    assert declines.classify("do_not_honor").decline_class == NEW

    clerk = User.objects.create_user("clerk", password="pw", is_staff=True)
    clerk.user_permissions.add(Permission.objects.get(codename="view_declinerule"))
    client.force_login(clerk)
    assert client.get("/admin/billing/declinerule/").status_code == 200
    assert client.post(f"/admin/billing/declinerule/{rule.pk}/change/", {"decline_class": "hard"}).status_code == 403


def test_the_staff_roles_cover_the_decline_table_and_retry_policies():
    from django.contrib.auth.models import Group

    def codes(name):
        return set(Group.objects.get(name=name).permissions.values_list("codename", flat=True))

    assert {"change_declinerule", "add_retrypolicy", "change_retrypolicy", "view_inboundevent"} <= codes(
        "Collections manager")
    for reader in ("Collections agent", "Auditor"):
        assert {"view_declinerule", "view_retrypolicy"} <= codes(reader)
        assert "change_declinerule" not in codes(reader)
