"""A local HTTP server that answers the few Stripe API calls the gateway makes, in Stripe's wire format.

It keeps idempotency keys like Stripe (the first response is stored and replayed), counts the
charges it really took, and can take a charge and then drop the connection without answering.

Payment-method ids decide the outcome of a charge:
  pm_ok*                 succeeds
  pm_decline_<code>*     card_error with decline_code <code> (e.g. pm_decline_insufficient_funds)
  pm_advice_<NN>*        card_error do_not_honor with network_advice_code NN
  pm_network_<NN>*       card_error generic_decline with network_decline_code NN
  pm_drop_after_charge*  the charge succeeds and is stored, but the first answer is never sent
"""

from __future__ import annotations

import json
import re
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl

import stripe


def sign(payload: str, secret: str, timestamp: int | None = None) -> str:
    """The Stripe-Signature header for a payload, with the SDK's own signing scheme."""
    return stripe.WebhookSignature.generate_signature_header(payload, secret, timestamp=timestamp)


def event(event_type: str, obj: dict, *, created: int, event_id: str | None = None) -> str:
    return json.dumps({
        "id": event_id or f"evt_{uuid.uuid4().hex[:24]}", "object": "event", "api_version": "2024-06-20",
        "created": created, "type": event_type, "livemode": False, "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None}, "data": {"object": obj},
    })


def _nested(pairs: list[tuple[str, str]]) -> dict:
    """Stripe's form encoding (metadata[invoice]=x) back into a dict."""
    out: dict = {}
    for key, value in pairs:
        parts = re.findall(r"[^\[\]]+", key)
        target = out
        for part in parts[:-1]:
            target = target.setdefault(part, {})
        target[parts[-1]] = value
    return out


class FakeStripe:
    def __init__(self, *, latency_ms: int = 0) -> None:
        self.latency = latency_ms / 1000  # each PaymentIntent is answered after this long, as a real one is
        self.charges: list[dict] = []          # PaymentIntents that took money
        self.intents: list[dict] = []          # every PaymentIntent created (after idempotency)
        self.requests: list[tuple[str, str, dict]] = []
        self.idempotent: dict[str, tuple[int, dict]] = {}
        self.dropped: set[str] = set()
        self.methods: dict[str, dict] = {}
        self.detached: list[str] = []
        self.setup_intents: dict[str, dict] = {}
        self.refunds: list[dict] = []          # Refunds made (after idempotency)
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> FakeStripe:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def add_method(self, pm_id: str, *, customer: str, brand: str = "visa", last4: str = "4242",
                   exp_month: int = 12, exp_year: int = 2030) -> dict:
        self.methods[pm_id] = {
            "id": pm_id, "object": "payment_method", "type": "card", "customer": customer, "livemode": False,
            "created": 1700000000, "metadata": {}, "billing_details": {},
            "card": {"brand": brand, "last4": last4, "exp_month": exp_month, "exp_year": exp_year,
                     "country": "US", "funding": "credit"},
        }
        return self.methods[pm_id]

    def confirm_setup_intent(self, seti: str, pm_id: str) -> None:
        """What Stripe Elements does in the browser: the intent succeeds with a new card."""
        self.setup_intents[seti].update(status="succeeded", payment_method=pm_id)

    # --- API behaviour ---

    def create_intent(self, params: dict) -> tuple[int, dict]:
        pm = params.get("payment_method", "")
        intent = {
            "id": f"pi_{uuid.uuid4().hex[:24]}", "object": "payment_intent", "amount": int(params["amount"]),
            "currency": params["currency"], "customer": params.get("customer"), "payment_method": pm,
            "metadata": params.get("metadata", {}), "description": params.get("description"),
            "livemode": False, "created": 1700000000, "status": "succeeded", "amount_received": 0,
            "last_payment_error": None,
        }
        decline = None
        if pm.startswith("pm_decline_"):
            decline = {"code": "card_declined", "decline_code": pm[len("pm_decline_"):].split(":")[0]}
        elif pm.startswith("pm_advice_"):
            decline = {"code": "card_declined", "decline_code": "do_not_honor",
                       "network_advice_code": pm[len("pm_advice_"):len("pm_advice_") + 2]}
        elif pm.startswith("pm_network_"):
            decline = {"code": "card_declined", "decline_code": "generic_decline",
                       "network_decline_code": pm[len("pm_network_"):len("pm_network_") + 2]}
        if decline:
            error = {"type": "card_error", "message": "Your card was declined.", "doc_url": "", **decline}
            intent.update(status="requires_payment_method", last_payment_error=error)
            self.intents.append(intent)
            return 402, {"error": {**error, "payment_intent": intent, "payment_method": {"id": pm}}}
        intent["amount_received"] = intent["amount"]
        self.intents.append(intent)
        self.charges.append(intent)
        return 200, intent

    def create_refund(self, params: dict) -> tuple[int, dict]:
        pi = params.get("payment_intent", "")
        charge = next((c for c in self.charges if c["id"] == pi), None)
        if charge is None:
            return 400, {"error": {"type": "invalid_request_error", "code": "resource_missing",
                                   "message": f"No such payment_intent: '{pi}'", "param": "payment_intent"}}
        amount = int(params.get("amount") or charge["amount"])
        refunded = sum(r["amount"] for r in self.refunds if r["payment_intent"] == pi)
        if refunded + amount > charge["amount"]:
            return 400, {"error": {"type": "invalid_request_error", "code": "charge_already_refunded",
                                   "message": "Refund amount is greater than the unrefunded amount."}}
        refund = {"id": f"re_{uuid.uuid4().hex[:24]}", "object": "refund", "amount": amount,
                  "currency": charge["currency"], "payment_intent": pi, "status": "succeeded",
                  "metadata": params.get("metadata", {}), "created": 1700000000}
        self.refunds.append(refund)
        return 200, refund

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep test output quiet
                pass

            def _reply(self, status: int, body: dict, replayed: bool = False) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Request-Id", f"req_{uuid.uuid4().hex[:14]}")
                if replayed:
                    self.send_header("Idempotent-Replayed", "true")
                self.end_headers()
                self.wfile.write(data)

            def _params(self) -> dict:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length).decode() if length else ""
                return _nested(parse_qsl(raw, keep_blank_values=True))

            def do_GET(self):
                fake.requests.append(("GET", self.path, {}))
                path, _, query = self.path.partition("?")
                match = re.fullmatch(r"/v1/setup_intents/(\w+)", path)
                if match and match.group(1) in fake.setup_intents:
                    seti = dict(fake.setup_intents[match.group(1)])
                    if "payment_method" in query and seti.get("payment_method") in fake.methods:
                        seti["payment_method"] = fake.methods[seti["payment_method"]]
                    return self._reply(200, seti)
                match = re.fullmatch(r"/v1/payment_methods/([\w:]+)", self.path)
                if match and match.group(1) in fake.methods:
                    return self._reply(200, fake.methods[match.group(1)])
                return self._reply(404, {"error": {"type": "invalid_request_error", "code": "resource_missing",
                                                   "message": f"No such resource: {self.path}"}})

            def do_POST(self):
                params = self._params()
                fake.requests.append(("POST", self.path, params))
                key = self.headers.get("Idempotency-Key")
                if self.path == "/v1/payment_intents":
                    if fake.latency:
                        time.sleep(fake.latency)
                    with fake.lock:
                        if key and key in fake.idempotent:
                            status, body = fake.idempotent[key]
                            return self._reply(status, body, replayed=True)
                        status, body = fake.create_intent(params)
                        if key:
                            fake.idempotent[key] = (status, body)
                    pm = params.get("payment_method", "")
                    if pm.startswith("pm_drop_after_charge") and key not in fake.dropped:
                        fake.dropped.add(key)
                        self.close_connection = True  # the charge is taken; the answer never arrives
                        return
                    return self._reply(status, body)
                if self.path == "/v1/refunds":
                    with fake.lock:
                        if key and key in fake.idempotent:
                            status, body = fake.idempotent[key]
                            return self._reply(status, body, replayed=True)
                        status, body = fake.create_refund(params)
                        if key:
                            fake.idempotent[key] = (status, body)
                    return self._reply(status, body)
                if self.path == "/v1/setup_intents":
                    seti = f"seti_{uuid.uuid4().hex[:24]}"
                    fake.setup_intents[seti] = {
                        "id": seti, "object": "setup_intent", "client_secret": f"{seti}_secret_x",
                        "customer": params.get("customer"), "status": "requires_payment_method",
                        "usage": params.get("usage", "off_session"), "livemode": False, "payment_method": None}
                    return self._reply(200, fake.setup_intents[seti])
                match = re.fullmatch(r"/v1/payment_methods/([\w:]+)/detach", self.path)
                if match:
                    pm = fake.methods.get(match.group(1))
                    if pm is None:
                        return self._reply(404, {"error": {"type": "invalid_request_error",
                                                           "code": "resource_missing", "message": "No such pm"}})
                    pm["customer"] = None
                    fake.detached.append(pm["id"])
                    return self._reply(200, pm)
                return self._reply(404, {"error": {"type": "invalid_request_error", "message": "Unknown path"}})

        return Handler


if __name__ == "__main__":
    # The benchmark's gateway stand-in, in a process of its own: python tests/support/fake_stripe.py LATENCY_MS
    server = FakeStripe(latency_ms=int(sys.argv[1]) if len(sys.argv) > 1 else 0)
    print(server.url, flush=True)
    server.server.serve_forever()
