"""Settings parsing, production checks, schedules and demo data."""

from __future__ import annotations

import datetime
import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
import pytest
import time_machine
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command

from core import env

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("value", ["ture", "2", "maybe"])
def test_a_bad_boolean_is_a_start_up_error(monkeypatch, value):
    monkeypatch.setenv("SOME_FLAG", value)
    with pytest.raises(ImproperlyConfigured, match=f"SOME_FLAG={value!r} is not a boolean"):
        env.env_bool("SOME_FLAG", False)


def test_a_bad_integer_is_a_start_up_error(monkeypatch):
    monkeypatch.setenv("SOME_NUMBER", "ten")
    with pytest.raises(ImproperlyConfigured, match="SOME_NUMBER='ten' is not an integer"):
        env.env_int("SOME_NUMBER", 1)
    monkeypatch.setenv("SOME_NUMBER", "0")
    with pytest.raises(ImproperlyConfigured, match="below the minimum"):
        env.env_int("SOME_NUMBER", 1, minimum=1)


def _manage(*args, **extra_env):
    clean = {k: v for k, v in os.environ.items()
             if k not in {"DEBUG", "SECRET_KEY", "DJANGO_SETTINGS_MODULE", "Q_SYNC", "DJANGO_ALLOW_ASYNC_UNSAFE"}}
    clean["DJANGO_SETTINGS_MODULE"] = "config.settings"
    clean.pop("DATABASE_URL", None)
    clean.update(extra_env)
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=clean, capture_output=True,
                          text=True, timeout=120)


def test_start_up_names_the_bad_variable():
    result = _manage("check", DEBUG="ture", SECRET_KEY="x" * 60)
    assert result.returncode != 0
    assert "DEBUG='ture' is not a boolean" in result.stderr


def test_a_bad_throttle_rate_is_a_start_up_error():
    result = _manage("check", DEBUG="true", API_THROTTLE_RATE="600 per minute")
    assert result.returncode != 0
    assert "API_THROTTLE_RATE='600 per minute': write requests/period" in result.stderr
    assert _manage("check", DEBUG="true", API_THROTTLE_RATE="100/s").returncode == 0


def test_production_needs_a_secret_key():
    result = _manage("check", DEBUG="false", SECRET_KEY="")
    assert result.returncode != 0
    assert "SECRET_KEY must be set when DEBUG is off" in result.stderr


def test_production_settings_pass_check_deploy():
    result = _manage("check", "--deploy", "--fail-level", "WARNING", DEBUG="false",
                     SECRET_KEY="k" * 20 + "-production-secret-key-0123456789abcdef",
                     ALLOWED_HOSTS="billing.example.com", ANYMAIL_WEBHOOK_SECRET="esp:tracking-secret")
    assert result.returncode == 0, result.stderr + result.stdout
    assert "no issues" in result.stdout


def test_check_deploy_warns_when_email_tracking_is_open():
    result = _manage("check", "--deploy", "--fail-level", "WARNING", DEBUG="false",
                     SECRET_KEY="k" * 20 + "-production-secret-key-0123456789abcdef",
                     ALLOWED_HOSTS="billing.example.com")
    assert result.returncode != 0
    assert "notifications.W001" in result.stderr + result.stdout
    assert "ANYMAIL_WEBHOOK_SECRET" in result.stderr + result.stdout


@pytest.mark.django_db
def test_schedules_are_created_once_and_corrected():
    from django_q.models import Schedule

    from core.schedules import declared_schedules, ensure_schedules

    SCHEDULES = declared_schedules()
    Schedule.objects.filter(name="Run due dunning steps").update(minutes=60)
    ensure_schedules()
    ensure_schedules()
    assert Schedule.objects.filter(name__in=SCHEDULES).count() == len(SCHEDULES)
    assert Schedule.objects.get(name="Run due dunning steps").minutes == 1


@pytest.mark.django_db
def test_demo_data_loads_a_varied_set_and_a_second_run_changes_nothing(capsys):
    from billing.models import Invoice, PaymentAttempt
    from customers.models import Customer
    from dunning.models import CaseEvent, DunningCase
    from notifications.models import Notification

    call_command("load_demo_data")
    out = capsys.readouterr().out
    assert "Admin login: admin / dunning-demo" in out

    def counts():
        return [m.objects.count() for m in (Customer, Invoice, DunningCase, CaseEvent, Notification, PaymentAttempt)]

    first = counts()
    assert set(Invoice.objects.values_list("currency", flat=True)) >= {"USD", "EUR", "JPY", "GBP"}
    assert set(Customer.objects.values_list("locale", flat=True)) == {"en", "es", "it", "ja", "uk"}
    statuses = set(DunningCase.objects.values_list("status", flat=True))
    assert {"active", "recovered"} <= statuses
    assert DunningCase.objects.filter(status="active").values("current_step").distinct().count() >= 3
    call_command("load_demo_data")
    assert counts() == first


@pytest.mark.django_db
def test_demo_data_dates_read_in_the_order_things_happened():
    """The demo plays the workers forward from the oldest failure: every date is the simulated one."""
    from billing.models import Invoice
    from customers.models import Customer
    from dunning.models import CaseEvent, DunningCase, WorkItem
    from notifications.models import Notification

    now = datetime.datetime(2026, 12, 2, 13, 0, tzinfo=datetime.UTC)
    with time_machine.travel(now, tick=False):
        call_command("load_demo_data", stdout=io.StringIO())
    messages = {n.pk: n for n in Notification.objects.all()}
    sent = [n for n in messages.values() if n.sent_at]
    assert len(sent) > 10
    for n in sent:
        assert n.created_at <= n.sent_at < now, (n.template_code, n.created_at, n.sent_at)  # queued, then sent
    assert all(n.created_at < now for n in messages.values())
    for case in DunningCase.objects.select_related("invoice__customer"):
        events = list(case.events.order_by("at", "id"))
        assert events[0].kind == "case.opened" and events[0].at == case.failed_at
        assert all(case.failed_at <= e.at < now for e in events), [(e.kind, e.at) for e in events]
        assert case.invoice.customer.created_at < case.invoice.created_at < case.failed_at
    # A message's timeline entries are at the moments it was queued and sent.
    for event in CaseEvent.objects.filter(kind="message.sent"):
        assert event.at == messages[event.payload["notification"]].sent_at
    queued = CaseEvent.objects.filter(kind="message.queued")
    assert queued and all(messages_at(messages, e) for e in queued)
    for item in WorkItem.objects.all():
        assert CaseEvent.objects.get(kind="workitem.created", payload__work_item=item.pk).at == item.created_at
    assert Customer.objects.filter(created_at__gte=now).count() == 0
    assert Invoice.objects.filter(created_at__gte=now).count() == 0


def messages_at(messages: dict, event) -> bool:
    """A message.queued entry has a message of its case queued at that very moment."""
    return any(n.reference == f"case:{event.case_id}" and n.created_at == event.at for n in messages.values())


def test_production_collectstatic_finds_every_file_the_vendored_assets_reference(tmp_path):
    """whitenoise's manifest storage refuses a file that references a missing one (Chart.js's map)."""
    result = _manage("collectstatic", "--noinput", DEBUG="false",
                     SECRET_KEY="k" * 20 + "-production-secret-key-0123456789abcdef",
                     ALLOWED_HOSTS="billing.example.com", STATIC_ROOT=str(tmp_path))
    assert result.returncode == 0, result.stderr + result.stdout
    assert (tmp_path / "staticfiles.json").exists()
    assert list((tmp_path / "vendor" / "chartjs").glob("chart.umd.min.*.js"))


@pytest.mark.parametrize("value, expected", [(None, "21:00-08:00"), ("", ""), ("22:00-07:00", "22:00-07:00")])
def test_quiet_hours_are_on_by_default_and_an_empty_variable_turns_them_off(value, expected):
    extra = {} if value is None else {"NOTIFY_QUIET_HOURS": value}
    clean = {k: v for k, v in os.environ.items() if k != "NOTIFY_QUIET_HOURS"}
    result = subprocess.run(
        [sys.executable, "-c", "import django; django.setup(); from django.conf import settings; "
                               "from notifications import policy; print(repr(settings.NOTIFY_QUIET_HOURS), "
                               "policy.quiet_hours() is None)"],
        cwd=ROOT, env={**clean, **extra, "DJANGO_SETTINGS_MODULE": "config.settings", "DEBUG": "true"},
        capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [repr(expected), str(expected == "")]


# --- make run: migrate, load_demo_data, runall, as real processes on a SQLite file ------------------

def _running(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def migrated_db(tmp_path_factory):
    """A migrated SQLite file, copied by each test that needs one (migrating takes seconds)."""
    path = tmp_path_factory.mktemp("db") / "db.sqlite3"
    result = _manage("migrate", "--noinput", DEBUG="true", DATABASE_URL=f"sqlite:///{path}")
    assert result.returncode == 0, result.stderr
    return path


@pytest.fixture
def make_run_env(migrated_db, tmp_path):
    db = tmp_path / "db.sqlite3"
    shutil.copy(migrated_db, db)
    clean = {k: v for k, v in os.environ.items()
             if k not in {"DEBUG", "SECRET_KEY", "DJANGO_SETTINGS_MODULE", "Q_SYNC", "DJANGO_ALLOW_ASYNC_UNSAFE",
                          "SITE_URL", "HOST", "PORT", "EMAIL_BACKEND"}}
    return {**clean, "DJANGO_SETTINGS_MODULE": "config.settings", "DEBUG": "true",
            "DATABASE_URL": f"sqlite:///{db}", "EMAIL_FILE_PATH": str(tmp_path / "mail"),
            "SMS_FILE_PATH": str(tmp_path / "sms")}


def test_make_run_demo_emails_link_to_the_port_it_serves_on(make_run_env, tmp_path):
    """`make run PORT=8301` passes HOST and PORT to load_demo_data: its emails link to that port."""
    port = _free_port()
    result = subprocess.run([sys.executable, "manage.py", "load_demo_data"], cwd=ROOT, capture_output=True,
                            text=True, timeout=120, env={**make_run_env, "HOST": "127.0.0.1", "PORT": str(port)})
    assert result.returncode == 0, result.stderr
    mails = [p.read_text(encoding="utf-8") for p in (tmp_path / "mail").iterdir()]
    mails = [mail for mail in mails if mail]  # a connection that sent nothing leaves an empty file
    assert len(mails) > 10
    assert all(f"http://127.0.0.1:{port}/portal/" in mail for mail in mails)
    assert not any(":8000/" in mail for mail in mails)


def test_runall_prints_where_it_serves_and_where_mail_goes_and_ctrl_c_stops_everything_at_once(
        make_run_env, tmp_path):
    port = _free_port()
    marker = tmp_path / "task-started"
    # A task that is still running when Ctrl-C comes (the worker would wait for it to finish).
    enqueue = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c",
         f"from django_q.tasks import async_task; async_task('os.system', 'touch {marker}; sleep 60')"],
        cwd=ROOT, env=make_run_env, capture_output=True, text=True, timeout=60)
    assert enqueue.returncode == 0, enqueue.stderr
    out = tmp_path / "runall.out"
    with out.open("w") as stdout:
        # Its own session, as a terminal's foreground job: Ctrl-C is a SIGINT to that group.
        proc = subprocess.Popen([sys.executable, "manage.py", "runall", "--port", str(port)], cwd=ROOT,
                                env=make_run_env, stdout=stdout, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/admin/login/", timeout=2)  # noqa: S310
                break
            except OSError:
                assert time.monotonic() < deadline, out.read_text()
                time.sleep(0.2)
        while not marker.exists():
            assert time.monotonic() < deadline, out.read_text()
            time.sleep(0.2)
        printed = out.read_text()
        assert f"Web on http://127.0.0.1:{port}/admin/" in printed
        assert f"Links in messages point to http://127.0.0.1:{port} (SITE_URL)" in printed
        assert f"Emails are written to {tmp_path / 'mail'}" in printed
        assert f"http://127.0.0.1:{port}/admin/notifications/notification/" in printed
        family = psutil.Process(proc.pid).children(recursive=True)
        assert len(family) >= 3  # web, qcluster and its workers, the task's shell

        started = time.monotonic()
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=30)
        assert time.monotonic() - started < 5, out.read_text()
        _gone, alive = psutil.wait_procs(family, timeout=1)
        # An orphan that was killed stays a zombie until init reaps it: it is not running.
        assert [p.pid for p in alive if _running(p)] == []
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        for child in psutil.Process().children(recursive=True):
            if child.pid != proc.pid and "manage.py" in " ".join(child.cmdline()):
                child.kill()
