from __future__ import annotations

import logging
from xml.sax.saxutils import escape

from django.conf import settings
from django.http import HttpResponse, HttpResponseForbidden
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST
from twilio.request_validator import RequestValidator

from notifications.inbound_sms import handle_inbound

logger = logging.getLogger(__name__)


def _twilio_signature_ok(request) -> bool:
    token = settings.TWILIO_AUTH_TOKEN
    signature = request.headers.get("X-Twilio-Signature", "")
    if not token or not signature:
        return False
    validator = RequestValidator(token)
    params = request.POST.dict()
    # Twilio signs the URL it was configured with; behind a TLS proxy that is SITE_URL's scheme/host.
    candidates = {request.build_absolute_uri(), f"{settings.SITE_URL}{request.get_full_path()}"}
    return any(validator.validate(url, params, signature) for url in candidates)


@csrf_exempt
@require_POST
def twilio_inbound_sms(request):
    if not _twilio_signature_ok(request):
        logger.warning("Inbound SMS refused: missing or invalid X-Twilio-Signature")
        return HttpResponseForbidden("invalid signature")
    reply = handle_inbound(request.POST.get("From", ""), request.POST.get("Body", ""), settings.MERCHANT_NAME)
    twiml = '<?xml version="1.0" encoding="UTF-8"?><Response>'
    if reply:
        twiml += f"<Message>{escape(reply)}</Message>"
    twiml += "</Response>"
    return HttpResponse(twiml, content_type="text/xml")
