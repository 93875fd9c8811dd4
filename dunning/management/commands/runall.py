"""Run the web server and a django-q2 worker cluster together (development and demos)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from django.conf import settings
from django.core.management.base import BaseCommand
from django.urls import reverse

# After Ctrl-C the children get SIGINT and this long to exit: both stop in about a second when
# idle, but qcluster would wait for a running task to finish. Then SIGTERM, then SIGKILL. A task
# cut short is safe: every task claims its rows first and is run again by the next worker.
STOP_GRACE = 2.5
KILL_GRACE = 1.0


class Stop(Exception):
    """SIGTERM or SIGHUP reached runall: stop like Ctrl-C."""


def _raise_stop(signum, frame):
    raise Stop


def site_url(host: str, port: int) -> str:
    """The base of the links in messages: SITE_URL when set (environment or .env), else where we serve."""
    return (os.environ.get("SITE_URL") or f"http://{host}:{port}").rstrip("/")


def mail_destination() -> str:
    backend = settings.EMAIL_BACKEND
    if backend == "django.core.mail.backends.filebased.EmailBackend":
        return f"written to {settings.EMAIL_FILE_PATH} (a .log file per sending batch)"
    if backend == "django.core.mail.backends.console.EmailBackend":
        return "printed here by the worker"
    return f"sent through {backend}"


class Command(BaseCommand):
    help = (
        "Start the development web server and a django-q2 worker (qcluster) together; Ctrl-C stops both. "
        "Links in messages use SITE_URL, or http://HOST:PORT when it is not set. "
        "In production run gunicorn and `manage.py qcluster` as separate services instead."
    )

    def add_arguments(self, parser):
        parser.add_argument("--host", default=os.environ.get("HOST") or "127.0.0.1",
                            help="Address to bind (default $HOST or 127.0.0.1).")
        parser.add_argument("--port", type=int, default=os.environ.get("PORT") or 8000,
                            help="Port to bind (default $PORT or 8000).")

    def handle(self, *args, host: str, port: int, **options):
        base = site_url(host, port)
        env = {**os.environ, "SITE_URL": base}
        manage = [sys.executable, "manage.py"]
        signal.signal(signal.SIGTERM, _raise_stop)
        signal.signal(signal.SIGHUP, _raise_stop)
        # Each child leads its own process group, so stopping reaches qcluster's forked workers too;
        # Ctrl-C reaches runall only, and runall forwards it.
        procs: dict[str, subprocess.Popen] = {}
        try:
            procs["worker"] = subprocess.Popen([*manage, "qcluster"], env=env, start_new_session=True)  # noqa: S603
            procs["web"] = subprocess.Popen(  # noqa: S603
                [*manage, "runserver", "--noreload", f"{host}:{port}"], env=env, start_new_session=True)
            admin = f"http://{host}:{port}{reverse('admin:index')}"
            self.stdout.write(self.style.SUCCESS(f"Web on {admin} and a worker started. Ctrl-C stops both."))
            self.stdout.write(f"Links in messages point to {base} (SITE_URL).")
            self.stdout.write(f"Emails are {mail_destination()}; the outbox: "
                              f"http://{host}:{port}{reverse('admin:notifications_notification_changelist')}")
            while all(p.poll() is None for p in procs.values()):
                time.sleep(0.2)
            stopped = [name for name, p in procs.items() if p.poll() is not None]
            self.stderr.write(f"{', '.join(stopped)} stopped; stopping the rest.")
        except (KeyboardInterrupt, Stop):
            self.stdout.write("Stopping web and worker...")
        finally:
            # A second Ctrl-C must not cut the shutdown short and leave children behind.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            stop_all(list(procs.values()))


def _signal_group(proc: subprocess.Popen, signum: int) -> None:
    try:
        os.killpg(proc.pid, signum)
    except ProcessLookupError:
        pass


def stop_all(procs: list[subprocess.Popen]) -> None:
    """SIGINT, a short wait, SIGTERM, a shorter one, SIGKILL. Each goes to a child's whole process
    group, even once the child has exited, so nothing it forked is left behind (an orphan that
    exited may linger as a zombie until init reaps it: it is gone, so no wait is spent on it)."""
    for signum, grace in ((signal.SIGINT, STOP_GRACE), (signal.SIGTERM, KILL_GRACE), (signal.SIGKILL, KILL_GRACE)):
        for proc in procs:
            _signal_group(proc, signum)
        deadline = time.monotonic() + grace
        while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
            time.sleep(0.05)
