"""Run the web server and a django-q2 worker cluster together (development and demos)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = (
        "Start the development web server and a django-q2 worker (qcluster) together; Ctrl-C stops both. "
        "In production run gunicorn and `manage.py qcluster` as separate services instead."
    )

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1", help="Address to bind (default 127.0.0.1).")
        parser.add_argument("--port", type=int, default=8000, help="Port to bind (default 8000).")

    def handle(self, *args, host: str, port: int, **options):
        manage = [sys.executable, "manage.py"]
        procs = {
            "worker": subprocess.Popen([*manage, "qcluster"]),  # noqa: S603
            "web": subprocess.Popen([*manage, "runserver", "--noreload", f"{host}:{port}"]),  # noqa: S603
        }
        self.stdout.write(
            self.style.SUCCESS(f"Web on http://{host}:{port}/admin/ and a worker started. Ctrl-C stops both.")
        )
        try:
            while all(p.poll() is None for p in procs.values()):
                time.sleep(0.5)
            stopped = [name for name, p in procs.items() if p.poll() is not None]
            self.stderr.write(f"{', '.join(stopped)} stopped; stopping the rest.")
        except KeyboardInterrupt:
            self.stdout.write("Stopping web and worker...")
        finally:
            for p in procs.values():
                if p.poll() is None:
                    p.send_signal(signal.SIGINT)
            deadline = time.monotonic() + 15
            for p in procs.values():
                try:
                    p.wait(timeout=max(deadline - time.monotonic(), 0.1))
                except subprocess.TimeoutExpired:
                    p.kill()
