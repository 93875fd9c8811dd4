"""Report figures against a small fixture whose answers were worked out by hand (see each test)."""

from __future__ import annotations

import csv
import datetime
import io
from decimal import Decimal

import pytest
import time_machine
from django.urls import reverse

from dunning.models import Campaign
from reports import queries
from reports.queries import ReportFilter
from tests.factories import CampaignFactory, CampaignStepFactory, CustomerFactory
from tests.support.cases import make_attempt, make_case, message_event, staff_user, utc

pytestmark = pytest.mark.django_db

RANGE = {"start": datetime.date(2026, 1, 1), "end": datetime.date(2026, 3, 20)}
ALL = ReportFilter(**RANGE)
USD = ReportFilter(**RANGE, currency="USD")


@pytest.fixture
def fixture():
    """Six cases (amounts, statuses and dates chosen so every figure below can be checked by hand).

    #  customer   cur  amount campaign status     failed      closed        decline             last step
    1  c1 pro     USD  100    A        recovered  01-10 10:00 01-12 10:00   insufficient_funds  A#1
    2  c2 basic   USD   50    A        recovered  01-20 10:00 01-28 10:00   expired_card (hard) A#2
    3  c4 (none)  USD   30    A        exhausted  02-05 10:00 03-01 10:00   insufficient_funds  A#2
    4  c3 pro     EUR   80    B        recovered  02-10 10:00 02-10 15:00   (none)              -
    5  c1 pro     USD   20    B        active     02-15 10:00 -             do_not_honor        B#1
    6  c3 pro     EUR   40    B        exhausted  02-20 10:00 03-05 10:00   expired_card (hard) B#1
    Outside the range: one more case failing 2025-12-31 (must never count).
    """
    c1 = CustomerFactory(segment="pro", currency="USD", mrr=Decimal("100"))
    c2 = CustomerFactory(segment="basic", currency="USD", mrr=Decimal("30"))
    c3 = CustomerFactory(segment="pro", currency="EUR", mrr=Decimal("50"))
    c4 = CustomerFactory(segment="", currency="USD", mrr=Decimal("20"))
    a = CampaignFactory(name="A")
    a1 = CampaignStepFactory(campaign=a, position=1, action="email")
    a2 = CampaignStepFactory(campaign=a, position=2, offset_days=3, action="retry", template_code="")
    b = CampaignFactory(name="B")
    b1 = CampaignStepFactory(campaign=b, position=1, action="email")
    cases = [
        make_case(c1, a, amount="100", failed_at=utc(2026, 1, 10, 10), status="recovered",
                  closed_at=utc(2026, 1, 12, 10), decline="insufficient_funds", current_step=a1),
        make_case(c2, a, amount="50", failed_at=utc(2026, 1, 20, 10), status="recovered",
                  closed_at=utc(2026, 1, 28, 10), decline="expired_card", current_step=a2),
        make_case(c4, a, amount="30", failed_at=utc(2026, 2, 5, 10), status="exhausted",
                  closed_at=utc(2026, 3, 1, 10), decline="insufficient_funds", current_step=a2),
        make_case(c3, b, amount="80", failed_at=utc(2026, 2, 10, 10), status="recovered",
                  closed_at=utc(2026, 2, 10, 15)),
        make_case(c1, b, amount="20", failed_at=utc(2026, 2, 15, 10), decline="do_not_honor", current_step=b1),
        make_case(c3, b, amount="40", failed_at=utc(2026, 2, 20, 10), status="exhausted",
                  closed_at=utc(2026, 3, 5, 10), decline="expired_card", current_step=b1),
    ]
    make_case(c2, a, amount="999", failed_at=utc(2025, 12, 31, 10), status="recovered",
              closed_at=utc(2026, 1, 2, 10))
    # Attempts: case 2 fails at 09:00 then succeeds at 14:00; case 3 fails twice (09:30, 14:10);
    # case 1 is paid in the portal at 09:00. An external payment, a pending attempt and a cancelled
    # one (never sent) never count.
    make_attempt(cases[1], utc(2026, 1, 21, 9), ok=False)
    make_attempt(cases[1], utc(2026, 1, 28, 14), ok=True)
    make_attempt(cases[2], utc(2026, 2, 8, 9, 30), ok=False)
    make_attempt(cases[2], utc(2026, 2, 12, 14, 10), ok=False)
    make_attempt(cases[0], utc(2026, 1, 12, 9), ok=True, source="portal")
    make_attempt(cases[3], utc(2026, 2, 10, 15), ok=True, source="external")
    make_attempt(cases[4], utc(2026, 2, 16, 9), ok=False, outcome="pending")
    make_attempt(cases[1], utc(2026, 1, 25, 9), ok=False, outcome="cancelled")
    # Messages: email to cases 1, 2, 3 (twice), 5; SMS to case 2.
    for i, channel in [(0, "email"), (1, "email"), (1, "sms"), (2, "email"), (2, "email"), (4, "email")]:
        message_event(cases[i], channel)
    return cases


def by(rows, key):
    return {row[key]: row for row in rows}


def test_recovery_by_month_all_currencies_and_usd(fixture):
    rows = by(queries.by_period(ALL).rows, "period")
    # January: cases 1, 2 both recovered. February: cases 3, 4, 5, 6; only 4 recovered; 3 and 6 exhausted.
    assert {k: (r["cases"], r["recovered"], r["rate"], r["exhausted"]) for k, r in rows.items()} == {
        "2026-01-01": (2, 2, 100.0, 0), "2026-02-01": (4, 1, 25.0, 2)}
    assert "recovered_amount" not in rows["2026-01-01"]  # no amounts across currencies
    usd = by(queries.by_period(USD).rows, "period")
    # USD: January 100 + 50 recovered; February cases 3 and 5, nothing recovered.
    assert usd["2026-01-01"]["recovered_amount"] == Decimal("150")
    assert (usd["2026-02-01"]["cases"], usd["2026-02-01"]["recovered_amount"]) == (2, Decimal("0"))


def test_recovery_by_campaign_segment_currency_and_decline(fixture):
    camp = by(queries.by_campaign(ALL).rows, "name")
    assert (camp["A"]["cases"], camp["A"]["recovered"], camp["A"]["rate"]) == (3, 2, 66.7)
    assert (camp["B"]["cases"], camp["B"]["recovered"], camp["B"]["rate"]) == (3, 1, 33.3)
    seg = by(queries.by_segment(ALL).rows, "segment")
    assert {k: (r["cases"], r["recovered"]) for k, r in seg.items()} == {
        "(none)": (1, 0), "basic": (1, 1), "pro": (4, 2)}
    cur = by(queries.by_currency(ALL).rows, "cur")
    assert (cur["USD"]["cases"], cur["USD"]["recovered"], cur["USD"]["recovered_amount"]) == (4, 2, Decimal("150"))
    assert (cur["EUR"]["cases"], cur["EUR"]["recovered"], cur["EUR"]["recovered_amount"]) == (2, 1, Decimal("80"))
    dec = {(r["decline_class"], r["decline_code"]): (r["cases"], r["recovered"]) for r in queries.by_decline(ALL).rows}
    assert dec == {("hard", "expired_card"): (2, 1), ("none", ""): (1, 1), ("soft", "do_not_honor"): (1, 0),
                   ("soft", "insufficient_funds"): (2, 1)}


def test_last_step_before_payment_and_time_to_recover(fixture):
    steps = by(queries.by_step(ALL).rows, "step")
    # Recovered: case 1 after A#1, case 2 after A#2, case 4 before any step ran.
    assert {k: r["recovered"] for k, r in steps.items()} == {
        "A #1 email": 1, "A #2 retry": 1, "before the first step": 1}
    ttr = queries.time_to_recover(ALL)
    # Case 4 took 5 hours, case 1 two days, case 2 eight days; the median is 2 days.
    assert {r["bucket"]: r["recovered"] for r in ttr.rows} == {"under 1 day": 1, "1-3 days": 1, "7-14 days": 1}
    assert ttr.notes == "Median: 2.0 days."


def test_involuntary_churn_counts_customers_and_mrr(fixture):
    rows = queries.involuntary_churn(ALL).rows
    # Cases 3 (c4, MRR 20) and 6 (c3, MRR 50) were exhausted in March.
    assert rows == [{"month": "2026-03-01", "exhausted": 2, "customers": 2}]
    assert queries.involuntary_churn(USD).rows == [
        {"month": "2026-03-01", "exhausted": 1, "customers": 1, "mrr": Decimal("20")}]


def test_retry_success_by_attempt_number_and_hour(fixture):
    rows = by(queries.retry_by_attempt_number(ALL).rows, "attempt_no")
    # First tries: case 2 (fail), case 3 (fail), case 1 (portal, ok). Second tries: case 2 ok, case 3 fail.
    assert {k: (r["attempts"], r["succeeded"], r["success_rate"]) for k, r in rows.items()} == {
        1: (3, 1, 33.3), 2: (2, 1, 50.0)}
    hours = by(queries.retry_by_hour(ALL).rows, "hour")
    assert {k: (r["attempts"], r["succeeded"]) for k, r in hours.items()} == {9: (3, 1), 14: (2, 1)}


def test_recovery_by_channel(fixture):
    rows = by(queries.by_channel(ALL).rows, "channel")
    # Email reached cases 1, 2, 3, 5 (5 messages), of which 1 and 2 recovered; SMS reached case 2.
    assert (rows["email"]["cases"], rows["email"]["recovered"], rows["email"]["rate"],
            rows["email"]["messages"]) == (4, 2, 50.0, 5)
    assert (rows["sms"]["cases"], rows["sms"]["recovered"], rows["sms"]["rate"]) == (1, 1, 100.0)


def test_every_report_page_renders_a_chart_and_table_and_csv(fixture, client):
    client.force_login(staff_user("boss", superuser=True))
    with time_machine.travel(utc(2026, 3, 20, 12), tick=False):
        for slug in queries.REPORTS:
            page = client.get(reverse("reports:report", args=[slug]), {"start": "2026-01-01", "end": "2026-03-20"})
            assert page.status_code == 200, slug
            html = page.content.decode()
            assert 'data-chart="chart-data"' in html and 'id="report-table"' in html, slug
        response = client.get(reverse("reports:report", args=["campaign"]),
                              {"start": "2026-01-01", "end": "2026-03-20", "currency": "USD", "format": "csv"})
    assert response["Content-Type"].startswith("text/csv")
    table = list(csv.reader(io.StringIO(response.content.decode())))
    # USD only: campaign A has cases 1, 2, 3 (150 recovered); campaign B has case 5.
    assert table[0] == ["Campaign", "Cases", "Recovered", "Recovery rate %", "Exhausted", "Recovered revenue (USD)"]
    assert table[1][:5] == ["A", "3", "2", "66.7", "1"] and Decimal(table[1][5]) == Decimal("150")
    assert table[2][:5] == ["B", "1", "0", "0.0", "0"]


def test_date_range_filter_excludes_cases_outside_it(fixture, client):
    client.force_login(staff_user("boss", superuser=True))
    response = client.get(reverse("reports:report", args=["period"]),
                          {"start": "2026-02-01", "end": "2026-02-28", "format": "csv"})
    table = list(csv.reader(io.StringIO(response.content.decode())))
    assert [row[:3] for row in table[1:]] == [["2026-02-01", "4", "1"]]


def test_the_csv_writes_a_formula_like_name_as_text(fixture, client):
    Campaign.objects.filter(name="A").update(name="=HYPERLINK(\"http://evil.example\",\"A\")")
    client.force_login(staff_user("boss", superuser=True))
    with time_machine.travel(utc(2026, 3, 20, 12), tick=False):
        response = client.get(reverse("reports:report", args=["campaign"]),
                              {"start": "2026-01-01", "end": "2026-03-20", "currency": "USD", "format": "csv"})
    table = list(csv.reader(io.StringIO(response.content.decode())))
    assert table[1][0] == "'=HYPERLINK(\"http://evil.example\",\"A\")"
    assert table[1][1:5] == ["3", "2", "66.7", "1"]
