"""Fixtures and helpers shared by the tests of tests/notifications/ (and the processes that send)."""

from __future__ import annotations

import datetime
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.core import mail

from notifications.sms import locmem


@pytest.fixture(name="sms_outbox")
def sms_outbox_fixture(settings):
    settings.SMS_BACKEND = "notifications.sms.locmem.LocmemSmsBackend"
    locmem.outbox.clear()
    yield locmem.outbox
    locmem.outbox.clear()


def run_hours(clock, start: datetime.datetime, hours: int, step: int = 1) -> None:
    for hour in range(0, hours + 1, step):
        clock.move_to(start + datetime.timedelta(hours=hour))
        clock.tick()


def emails_to(address: str) -> list:
    return [m for m in mail.outbox if m.to == [address]]


class RecordingServer:
    """A local HTTP server that records requests and answers from a script of (status, body)."""

    def __init__(self, answers=None):
        self.requests: list[dict] = []
        self.answers = list(answers or [])
        server = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                server.requests.append({"method": self.command, "path": self.path,
                                        "headers": dict(self.headers.items()), "body": body})
                status, payload = server.answers.pop(0) if server.answers else (200, {"ok": True})
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_POST = do_GET = _handle

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


class FakePostmark:
    """A local stand-in for Postmark's send API (anymail's Postmark backend talks to it through
    POSTMARK_API_URL). Each request is recorded on arrival; while ``hold`` is set the answer waits
    until ``release()``, so a test can kill a sender process inside its provider call."""

    def __init__(self, *, hold: bool = False):
        self.requests: list[dict] = []
        self.released = threading.Event()
        if not hold:
            self.released.set()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                server.requests.append(body)
                server.released.wait(timeout=120)
                answer = json.dumps({"To": body.get("To", ""), "SubmittedAt": "2026-03-02T12:00:00Z",
                                     "MessageID": f"pm-{len(server.requests)}", "ErrorCode": 0,
                                     "Message": "OK"}).encode()
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(answer)))
                    self.end_headers()
                    self.wfile.write(answer)
                except OSError:
                    pass  # the sender was killed while waiting

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}/"

    def release(self) -> None:
        self.released.set()

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.released.set()
        self.httpd.shutdown()
        self.httpd.server_close()
