"""A/B tests: deterministic assignment, and statistics checked against known results."""

from __future__ import annotations

import math
from collections import Counter
from decimal import Decimal

import pytest
from django.urls import reverse

from dunning.cases import cancel_case, open_case
from dunning.models import CampaignVariant
from reports.experiments import experiment_results, two_proportion_z_test, wilson_interval
from reports.queries import ReportFilter
from tests.factories import CampaignFactory, CampaignStepFactory, CustomerFactory, InvoiceFactory
from tests.support.cases import make_case, message_event, staff_user, utc


def test_z_test_matches_the_textbook_result():
    # Control 200/1000, challenger 250/1000. By hand: pooled p = 450/2000 = 0.225;
    # SE = sqrt(0.225 * 0.775 * (1/1000 + 1/1000)) = sqrt(0.00034875) = 0.0186748;
    # z = (0.25 - 0.20) / 0.0186748 = 2.6774; two-sided p = erfc(2.6774 / sqrt 2) = 0.00742
    # (statsmodels' proportions_ztest([250, 200], [1000, 1000]) gives z = 2.6774, p = 0.007419).
    test = two_proportion_z_test(200, 1000, 250, 1000)
    assert test.z == pytest.approx(2.6774, abs=1e-4)
    assert test.p_value == pytest.approx(0.007419, abs=1e-5)
    assert test.significant
    # 10/50 vs 12/50: z = 0.04 / sqrt(0.22 * 0.78 * 0.04) = 0.4828, p = 0.629: not significant.
    small = two_proportion_z_test(10, 50, 12, 50)
    assert small.z == pytest.approx(0.4828, abs=1e-4)
    assert small.p_value == pytest.approx(0.6292, abs=1e-4)
    assert not small.significant
    assert two_proportion_z_test(0, 0, 1, 10) is None


def test_wilson_interval_known_values():
    # Wilson 95% for 200/1000, by hand with z = 1.96: centre = (0.2 + 1.9208e-3) / 1.0038416 = 0.20115,
    # half-width = 1.96 * sqrt(1.6e-4 + 9.6e-7) / 1.0038416 = 0.02477, so 0.1764 .. 0.2259.
    low, high = wilson_interval(200, 1000)
    assert (round(low, 4), round(high, 4)) == (0.1764, 0.2259)
    # 0 of 10: 0 .. 0.2775.
    low, high = wilson_interval(0, 10)
    assert low == 0 and high == pytest.approx(0.2775, abs=1e-4)
    assert wilson_interval(0, 0) is None


@pytest.mark.django_db
def test_cases_are_assigned_deterministically_by_weight_and_keep_their_variant():
    experiment = CampaignFactory(name="Standard", priority=1)
    CampaignStepFactory(campaign=experiment, position=1, offset_days=0)
    challenger = CampaignFactory(name="Gentle", active=False)
    CampaignStepFactory(campaign=challenger, position=1, offset_days=2)
    control = CampaignVariant.objects.create(experiment=experiment, name="control", weight=3,
                                             steps_from=experiment, is_control=True)
    gentle = CampaignVariant.objects.create(experiment=experiment, name="gentle", weight=1, steps_from=challenger)
    customer = CustomerFactory()
    seen = Counter()
    for _ in range(200):
        invoice = InvoiceFactory(customer=customer)
        case, _created = open_case(invoice)
        seen[case.variant_id] += 1
        # The case runs the variant's steps and remembers its arm.
        assert case.campaign_id == (experiment.pk if case.variant_id == control.pk else challenger.pk)
        # Same invoice, same arm: cancelling and reopening lands in the same variant.
        cancel_case(case)
        again, _created = open_case(invoice)
        assert again.variant_id == case.variant_id
        cancel_case(again)
    # 3:1 weights over 200 invoices: about 150/50 (the hash is uniform; allow wide slack).
    assert 120 <= seen[control.pk] <= 180 and seen[gentle.pk] == 200 - seen[control.pk]


@pytest.mark.django_db
def test_experiment_report_per_variant(client):
    experiment = CampaignFactory(name="Standard")
    other = CampaignFactory(name="Firm", active=False)
    control = CampaignVariant.objects.create(experiment=experiment, name="control", steps_from=experiment,
                                             is_control=True)
    firm = CampaignVariant.objects.create(experiment=experiment, name="firm", steps_from=other)
    customer = CustomerFactory(currency="USD")
    # Control: 4 cases, 1 recovered after 2 days (amount 40), 3 messages. Firm: 4 cases, 3 recovered
    # after 1, 3 and 5 days (amounts 10+20+30), 6 messages.
    specs = [(control, experiment, [(2, "40")], 3, 3), (firm, other, [(1, "10"), (3, "20"), (5, "30")], 1, 6)]
    for variant, campaign, recovered, open_count, messages in specs:
        made = []
        for days, amount in recovered:
            made.append(make_case(customer, campaign, amount=amount, failed_at=utc(2026, 1, 1), status="recovered",
                                  closed_at=utc(2026, 1, 1 + days), variant=variant))
        for _ in range(open_count):
            made.append(make_case(customer, campaign, amount="5", failed_at=utc(2026, 1, 2), variant=variant))
        for i in range(messages):
            message_event(made[i % len(made)], "email")
    rows = {r["name"]: r for r in experiment_results(experiment, ReportFilter(
        start=utc(2026, 1, 1).date(), end=utc(2026, 1, 31).date(), currency="USD"))}
    c, f = rows["control"], rows["firm"]
    assert (c["cases"], c["recovered"], c["rate"], c["recovered_amount"], c["median_days"]) == (
        4, 1, 25.0, Decimal("40"), 2.0)
    assert (f["cases"], f["recovered"], f["rate"], f["recovered_amount"], f["median_days"]) == (
        4, 3, 75.0, Decimal("60"), 3.0)
    assert (c["messages_per_recovery"], f["messages_per_recovery"]) == (3.0, 2.0)
    # 1/4 vs 3/4: pooled 0.5, SE = sqrt(0.25 * 0.5) = 0.35355, z = 1.4142, p = 0.1573.
    assert f["z"] == pytest.approx(1.4142, abs=1e-3) and f["p_value"] == pytest.approx(0.1573, abs=1e-4)
    assert f["verdict"].startswith("Not yet significant")
    assert math.isclose(c["ci_low"], 4.6, abs_tol=0.05) and math.isclose(c["ci_high"], 69.9, abs_tol=0.05)

    client.force_login(staff_user("boss", superuser=True))
    page = client.get(reverse("reports:experiment", args=[experiment.pk]))
    assert page.status_code == 200
    assert "Not yet significant" in page.content.decode()
    index = client.get(reverse("reports:index"))
    assert reverse("reports:experiment", args=[experiment.pk]) in index.content.decode()


@pytest.mark.django_db
def test_a_variant_must_run_a_campaign_with_steps():
    from django.core.exceptions import ValidationError

    experiment = CampaignFactory()
    CampaignStepFactory(campaign=experiment, position=1)
    empty = CampaignFactory(active=False)
    with pytest.raises(ValidationError):
        CampaignVariant(experiment=experiment, name="b", steps_from=empty).full_clean()
    CampaignVariant(experiment=experiment, name="a", steps_from=experiment, is_control=True).full_clean()
