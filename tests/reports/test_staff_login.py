"""Staff sign-in lock-out (django-axes with reports.staff_login), driven through the admin login page."""

from __future__ import annotations

import pytest
from axes.models import AccessAttempt, AccessFailureLog
from django.test import Client
from django.urls import reverse

from tests.support.cases import staff_user

pytestmark = pytest.mark.django_db

LOGIN = "/admin/login/?next=/admin/"
ADDRESS = "203.0.113.5"


def sign_in(username: str, password: str, address: str = ADDRESS, **headers):
    client = Client(REMOTE_ADDR=address, **headers)
    return client.post(LOGIN, {"username": username, "password": password, "next": "/admin/"})


def fail(username: str, times: int, address: str = ADDRESS) -> list[int]:
    return [sign_in(username, "wrong", address).status_code for _ in range(times)]


def test_five_wrong_passwords_lock_the_account_out_with_a_friendly_page(clock):
    staff_user("ada")
    assert fail("ada", 4) == [200] * 4  # the form again, with its error
    locked = sign_in("ada", "wrong")
    assert locked.status_code == 429
    refused = sign_in("ada", "pw")  # the right password is refused too
    assert refused.status_code == 429 and refused["Retry-After"] == "900"
    page = refused.content.decode()
    assert "Signing in is paused after too many failed attempts" in page
    assert "Try again in 15 minutes" in page and "Collections manager" in page
    assert "sessionid" not in refused.cookies


def test_the_lock_out_ends_after_the_cool_off(clock, settings):
    settings.AXES_COOLOFF_MINUTES = 15
    staff_user("ada")
    fail("ada", 5)
    clock.advance(minutes=14)
    assert sign_in("ada", "pw").status_code == 429  # and the wait starts again
    clock.advance(minutes=2)
    assert sign_in("ada", "pw").status_code == 429
    clock.advance(minutes=16)
    assert sign_in("ada", "pw").status_code == 302


def test_another_user_from_the_same_address_is_not_locked_out(clock):
    staff_user("ada")
    staff_user("grace")
    fail("ada", 5)
    assert sign_in("grace", "pw").status_code == 302
    assert sign_in("ada", "pw", address="198.51.100.9").status_code == 302  # nor ada elsewhere


def test_an_address_failing_over_many_usernames_is_locked_out_for_all(clock, settings):
    settings.AXES_ADDRESS_FAILURE_LIMIT = 8
    staff_user("grace")
    for name in ("a", "b", "c", "d"):
        fail(name, 2)  # password spraying: never 5 for one username
    assert sign_in("grace", "pw").status_code == 429
    assert sign_in("grace", "pw", address="198.51.100.9").status_code == 302


def test_x_forwarded_for_does_not_change_the_address(clock):
    staff_user("ada")
    for n in range(5):
        sign_in("ada", "wrong", HTTP_X_FORWARDED_FOR=f"198.51.100.{n}")
    assert sign_in("ada", "pw", HTTP_X_FORWARDED_FOR="198.51.100.77").status_code == 429
    assert set(AccessAttempt.objects.values_list("ip_address", flat=True)) == {ADDRESS}


def test_a_manager_sees_the_lock_out_and_unlocks_the_account(clock):
    staff_user("ada")
    fail("ada", 5)
    manager = Client()
    manager.force_login(staff_user("manager", "Collections manager"))
    listing = manager.get(reverse("admin:axes_accessattempt_changelist"), {"locked_out": "yes"})
    assert listing.status_code == 200
    assert "ada" in listing.content.decode() and ADDRESS in listing.content.decode()
    failures = manager.get(reverse("admin:axes_accessfailurelog_changelist"))
    assert failures.status_code == 200 and AccessFailureLog.objects.filter(username="ada").count() == 5
    attempt = AccessAttempt.objects.get(username="ada")
    manager.post(reverse("admin:axes_accessattempt_changelist"),
                 {"action": "delete_selected", "_selected_action": [attempt.pk], "post": "yes"})
    assert not AccessAttempt.objects.exists()
    assert sign_in("ada", "pw").status_code == 302


def test_an_agent_cannot_unlock_and_an_auditor_only_reads(clock):
    staff_user("ada")
    fail("ada", 5)
    attempt = AccessAttempt.objects.get(username="ada")
    agent = Client()
    agent.force_login(staff_user("agent", "Collections agent"))
    assert agent.get(reverse("admin:axes_accessattempt_changelist")).status_code == 403
    auditor = Client()
    auditor.force_login(staff_user("auditor", "Auditor"))
    assert auditor.get(reverse("admin:axes_accessattempt_changelist")).status_code == 200
    assert auditor.post(reverse("admin:axes_accessattempt_delete", args=[attempt.pk]),
                        {"post": "yes"}).status_code == 403
    assert AccessAttempt.objects.filter(pk=attempt.pk).exists()


def test_a_successful_sign_in_clears_earlier_failures(clock):
    staff_user("ada")
    fail("ada", 4)
    assert sign_in("ada", "pw").status_code == 302
    assert fail("ada", 4) == [200] * 4  # counted afresh, not locked at the first


def test_the_lock_out_page_renders_in_every_language(clock):
    staff_user("ada")
    fail("ada", 5)
    for language in ("es", "it", "ja", "uk"):
        response = Client(REMOTE_ADDR=ADDRESS, HTTP_ACCEPT_LANGUAGE=language).post(
            LOGIN, {"username": "ada", "password": "pw"})
        assert response.status_code == 429

