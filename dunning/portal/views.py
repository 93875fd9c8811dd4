"""The customer portal. A signed link is the only credential; every object is looked up through the
link's customer, so an id from another account is a 404. Business logic lives in the services."""

from __future__ import annotations

import hashlib
from functools import wraps

from django.conf import settings
from django.contrib import messages
from django.core.cache import cache
from django.http import Http404
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import translation
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy as _lazy
from django.views.decorators.cache import never_cache
from django.views.decorators.debug import sensitive_post_parameters, sensitive_variables
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from billing.gateways import GatewayError, get_gateway
from billing.gateways.base import CardDeclined
from billing.models import Invoice, PaymentAttempt
from customers.models import PaymentMethod
from dunning import plans
from dunning.plan_models import PaymentPlan
from dunning.portal import access, services
from dunning.portal import forms as portal_forms
from notifications import inapp
from notifications.models import Channel, Notification

STRIPE_CSP = {
    "script-src": ["https://js.stripe.com"],
    "frame-src": ["https://js.stripe.com", "https://hooks.stripe.com"],
    "connect-src": ["https://api.stripe.com"],
}


def _finish(response, language: str):
    response["Content-Language"] = language
    # The path holds the credential: never send it to another site, never index or cache the page.
    # (same-origin, not no-referrer: with no-referrer browsers send "Origin: null" and CSRF fails.)
    response["Referrer-Policy"] = "same-origin"
    response["X-Robots-Tag"] = "noindex, nofollow"
    response["Cache-Control"] = "no-store"
    return response


def portal_page(view):
    @wraps(view)
    @never_cache
    def wrapped(request, token, *args, **kwargs):
        try:
            link = access.read_link(token)
        except access.TokenProblem as problem:
            return link_problem(request, problem, token)
        customer = link.customer
        request.portal_actor = link.actor  # what the page changes is logged under this actor
        with translation.override(customer.locale):
            try:
                response = view(request, customer, token, *args, **kwargs)
            except (Invoice.DoesNotExist, PaymentMethod.DoesNotExist, Notification.DoesNotExist,
                    PaymentPlan.DoesNotExist):
                raise Http404 from None
            return _finish(response, customer.locale)
    return wrapped


NAV = {"overview.html": "overview", "invoice.html": "overview", "payment_method.html": "method",
       "payment_method_result.html": "method", "plan.html": "plan", "support.html": "support",
       "preferences.html": "preferences"}


def _page(request, customer, token, template, **context):
    context.update(customer=customer, token=token, status=services.account_status(customer),
                   merchant_name=settings.MERCHANT_NAME, page=NAV.get(template, ""))
    return render(request, f"portal/{template}", context)


def _url(name: str, token: str, **kwargs) -> str:
    return reverse(f"portal:{name}", kwargs={"token": token, **kwargs})


# --- Pages behind a link ----------------------------------------------------------------------

@require_GET
@portal_page
def overview(request, customer, token):
    return _page(
        request, customer, token, "overview.html",
        invoices=services.open_invoices(customer),
        inbox=inapp.banner(customer) if not customer.opt_out_inapp else [],
        method=customer.default_payment_method,
        plan=plans.open_plan(customer),
        pay_form=portal_forms.PayForm(),
    )


@require_POST
@portal_page
def dismiss(request, customer, token, message_id: int):
    inapp.dismiss(customer.notifications.get(channel=Channel.INAPP, pk=message_id))
    return redirect(_url("overview", token))


@require_GET
@portal_page
def invoice(request, customer, token, invoice_id: int):
    inv = services.invoice_for(customer, invoice_id)
    last = inv.attempts.filter(source=PaymentAttempt.Source.PORTAL).order_by("-created_at", "-id").first()
    rows = [r for r in services.open_invoices(customer) if r.invoice.pk == inv.pk]
    return _page(request, customer, token, "invoice.html", invoice=inv, row=rows[0] if rows else None,
                 last_attempt=last, method=customer.default_payment_method, pay_form=portal_forms.PayForm())


@require_POST
@portal_page
def pay(request, customer, token, invoice_id: int):
    services.invoice_for(customer, invoice_id)  # 404 for anyone else's invoice
    form = portal_forms.PayForm(request.POST)
    if not form.is_valid():
        messages.error(request, _("The form expired. Please try again."))
        return redirect(_url("invoice", token, invoice_id=invoice_id))
    try:
        attempt = services.pay_invoice(customer, invoice_id, form.cleaned_data["idempotency_key"],
                                       actor=request.portal_actor)
    except services.PayNowRefused as exc:
        text = {
            "nothing_due": _("This invoice has nothing left to pay."),
            "in_progress": _("A payment for this invoice is already being processed."),
            "no_method": _("There is no payment method on file. Please add a card first."),
        }[str(exc)]
        messages.warning(request, text)
        return redirect(_url("invoice", token, invoice_id=invoice_id))
    if attempt.outcome == PaymentAttempt.Outcome.SUCCEEDED:
        messages.success(request, _("Thank you: the payment went through."))
    elif attempt.outcome == PaymentAttempt.Outcome.FAILED:
        messages.error(request, decline_text(attempt.decline_code))
    else:
        messages.info(request, _("We are waiting for your bank's answer. Check again in a few minutes."))
    return redirect(_url("invoice", token, invoice_id=invoice_id))


def card_declined_text(code: str) -> str:
    """Why a new card was not saved (same discretion as decline_text)."""
    if code == "expired_card":
        return _("This card has expired, so it was not saved. Please use another card.")
    return _("Your bank declined this card, so it was not saved. Please use another card or contact your bank.")


def card_attempts_exceeded(request, customer) -> bool:
    """Card-testing protection: count one card submission for this customer and for this client
    address (both counters move, so switching links or addresses does not reset either)."""
    by_customer = access.rate_limited(f"card:{customer.pk}", limit=settings.PORTAL_CARD_LIMIT,
                                      window=settings.PORTAL_CARD_WINDOW_SECONDS)
    by_address = access.rate_limited(f"card-ip:{access.client_ip(request)}",
                                     limit=settings.PORTAL_CARD_LIMIT_PER_ADDRESS,
                                     window=settings.PORTAL_CARD_WINDOW_SECONDS)
    return by_customer or by_address


CARD_LIMIT_TEXT = _lazy("You have tried several cards in a short time. For your security, please wait a while "
                        "before trying again, or contact us.")


def decline_text(code: str) -> str:
    # Card networks ask merchants not to reveal detailed refusal reasons: only what the customer can act on.
    if code == "expired_card":
        return _("The payment was declined: the card has expired. Please add another card.")
    if code == "no_payment_method":
        return _("There is no payment method on file. Please add a card first.")
    return _("The payment was declined by your bank. Please try another card or contact your bank.")


@sensitive_post_parameters("card_number", "cvc")
@require_http_methods(["GET", "POST"])
@portal_page
def payment_method(request, customer, token):
    gateway = get_gateway()
    if getattr(gateway, "name", "") == "stripe":
        return _stripe_page(request, customer, token, gateway)
    form = portal_forms.CardForm(request.POST or None)
    if request.method == "POST" and card_attempts_exceeded(request, customer):
        form = portal_forms.CardForm()
        limit_error = CARD_LIMIT_TEXT
        response = _page(request, customer, token, "payment_method.html", form=form, limit_error=limit_error,
                         method=customer.default_payment_method, stripe=False)
        response.status_code = 429
        return response
    if request.method == "POST" and form.is_valid():
        result = _save_card(request, customer, token, gateway, form)
        if result is not None:
            return result
    return _page(request, customer, token, "payment_method.html", form=form,
                 method=customer.default_payment_method, stripe=False)


@sensitive_variables("form", "data", "card")
def _save_card(request, customer, token, gateway, form):
    data = form.cleaned_data
    done_key = f"pm-form:{customer.pk}:{data['idempotency_key']}"
    # cache.add is atomic: of two submits of the same form only the first goes on; the second is
    # shown the first one's result (or told it is still running) and never saves or charges again.
    if not cache.add(done_key, "running", timeout=24 * 3600):
        earlier = cache.get(done_key)
        if isinstance(earlier, int):
            return redirect(_url("payment_method_result", token, method_id=earlier))
        messages.info(request, _("A payment is being processed."))
        return redirect(_url("overview", token))
    try:
        card = gateway.tokenize_card(data["card_number"], data["exp_month"], data["exp_year"], data["cvc"])
    except CardDeclined as declined:
        cache.delete(done_key)
        form.add_error("card_number", card_declined_text(declined.decline_code))
        return None
    except GatewayError:
        cache.delete(done_key)
        form.add_error("card_number", _("This card was declined. Please check the details or use another card."))
        return None
    try:
        method = services.update_payment_method(
            customer, token=card.token, brand=card.brand, last4=card.last4, exp_month=card.exp_month,
            exp_year=card.exp_year, gateway=gateway.name, actor=request.portal_actor,
        )
    except Exception:
        cache.delete(done_key)
        raise
    cache.set(done_key, method.pk, timeout=24 * 3600)
    return redirect(_url("payment_method_result", token, method_id=method.pk))


def _stripe_page(request, customer, token, gateway):
    """Stripe Elements collects the card in Stripe's iframe; the server sees a SetupIntent id only."""
    if request.method == "POST":
        if card_attempts_exceeded(request, customer):
            messages.error(request, CARD_LIMIT_TEXT)
            return redirect(_url("payment_method", token))
        setup_intent = request.POST.get("setup_intent", "")[:255]
        try:
            card = gateway.card_from_setup_intent(customer, setup_intent)
        except CardDeclined as declined:
            messages.error(request, card_declined_text(declined.decline_code))
            return redirect(_url("payment_method", token))
        except GatewayError:
            messages.error(request, _("This card was declined. Please check the details or use another card."))
            return redirect(_url("payment_method", token))
        method = services.update_payment_method(
            customer, token=card.token, brand=card.brand, last4=card.last4, exp_month=card.exp_month,
            exp_year=card.exp_year, gateway=gateway.name, actor=request.portal_actor,
        )
        return redirect(_url("payment_method_result", token, method_id=method.pk))
    intent = gateway.create_setup_intent(customer)
    response = _page(request, customer, token, "payment_method.html", stripe=True,
                     method=customer.default_payment_method,
                     stripe_key=intent["publishable_key"], client_secret=intent["client_secret"])
    response._csp_update = STRIPE_CSP
    return response


@require_GET
@portal_page
def payment_method_result(request, customer, token, method_id: int):
    method = customer.payment_methods.get(pk=method_id)
    return _page(request, customer, token, "payment_method_result.html", method=method,
                 attempts=services.method_update_attempts(customer, method),
                 pending=services.method_update_pending(customer, method),
                 invoices=services.open_invoices(customer), decline_text=decline_text)


@require_http_methods(["GET", "POST"])
@portal_page
def plan(request, customer, token):
    current = plans.open_plan(customer) or customer.payment_plans.order_by("-created_at").first()
    form = portal_forms.PlanForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            made = plans.request_plan(customer, form.cleaned_data["months"], actor=request.portal_actor)
        except plans.PlanError:
            messages.error(request, _("A payment plan cannot be set up right now. Please contact us."))
        else:
            if made.status == PaymentPlan.Status.ACTIVE:
                messages.success(request, _("Your payment plan is active. Reminders are paused while you keep to it."))
            else:
                messages.info(request, _("Thank you. Our team will review your request and email you."))
        return redirect(_url("plan", token))
    quotes = []
    if plans.open_plan(customer) is None:
        for months in range(plans.MIN_MONTHS, plans.MAX_MONTHS + 1):
            q = plans.quote(customer, months)
            if q.total > 0:
                quotes.append(q)
    return _page(request, customer, token, "plan.html", form=form, quotes=quotes, plan=current,
                 instalments=list(current.instalments.all()) if current else [])


@require_http_methods(["GET", "POST"])
@portal_page
def support(request, customer, token):
    form = portal_forms.SupportForm(request.POST or None)
    if request.method == "POST":
        if access.rate_limited(f"support:{customer.pk}", limit=5, window=3600):
            messages.error(request, _("You have sent several messages already. Our team will reply soon."))
            return redirect(_url("support", token))
        if form.is_valid():
            services.contact_support(customer, form.cleaned_data["message"], actor=request.portal_actor)
            messages.success(request, _("Thank you: your message was sent. We have emailed you a confirmation."))
            return redirect(_url("support", token))
    return _page(request, customer, token, "support.html", form=form)


@require_http_methods(["GET", "POST"])
@portal_page
def preferences(request, customer, token):
    initial = {k: getattr(customer, k) for k in ("locale", "opt_out_email", "opt_out_sms", "opt_out_inapp")}
    form = portal_forms.PreferencesForm(request.POST or None, initial=initial)
    if request.method == "POST" and form.is_valid():
        services.set_preferences(customer, **form.cleaned_data, actor=request.portal_actor)
        with translation.override(customer.locale):
            messages.success(request, _("Your preferences were saved."))
        return redirect(_url("preferences", token))
    return _page(request, customer, token, "preferences.html", form=form)


# --- Token-less pages: a link that does not work, and asking for a new one ----------------------

def link_problem(request, problem: access.TokenProblem, token: str):
    customer = problem.customer
    language = customer.locale if customer else translation.get_language()
    # Someone trying token after token gets the "please wait" page (a generous limit: one person
    # clicking an old link a few times is never slowed down).
    if access.rate_limited(f"bad-link:{access.client_ip(request)}", limit=settings.PORTAL_RATE_LIMIT * 3):
        return _sent_page(request, language, status=429, limited=True)
    with translation.override(language):
        response = render(request, "portal/link_problem.html", {
            "reason": problem.reason, "known": customer is not None, "link_token": token,
            "form": portal_forms.LinkRequestForm(), "merchant_name": settings.MERCHANT_NAME,
        }, status=403)
    return _finish(response, language)


def _sent_page(request, language: str, status: int = 200, limited: bool = False):
    with translation.override(language):
        response = render(request, "portal/link_sent.html",
                          {"limited": limited, "merchant_name": settings.MERCHANT_NAME}, status=status)
    return _finish(response, language)


@never_cache
@require_http_methods(["GET", "POST"])
def request_link(request):
    """Email a fresh link to the address on file. The answer is the same whether or not an account
    matched, and the page is rate limited per client address and per address or customer asked for."""
    language = translation.get_language()
    if access.rate_limited(f"ip:{access.client_ip(request)}"):
        return _sent_page(request, language, status=429, limited=True)
    if request.method == "GET":
        with translation.override(language):
            response = render(request, "portal/link_problem.html",
                              {"reason": "request", "known": False, "form": portal_forms.LinkRequestForm(),
                               "merchant_name": settings.MERCHANT_NAME})
        return _finish(response, language)
    token = request.POST.get("token", "")
    if token:
        try:
            customer = access.read_token(token)
        except access.TokenProblem as problem:
            customer = problem.customer
        if customer is None:
            return _sent_page(request, language)
        if not access.rate_limited(f"customer:{customer.pk}", limit=3, window=3600):
            services.send_fresh_link(customer)
        return _sent_page(request, customer.locale)
    form = portal_forms.LinkRequestForm(request.POST)
    if form.is_valid():
        email = form.cleaned_data["email"].lower()
        digest = hashlib.sha256(email.encode()).hexdigest()[:32]
        if not access.rate_limited(f"email:{digest}", limit=3, window=3600):
            for customer in services.customers_with_email(email):
                services.send_fresh_link(customer)
    return _sent_page(request, language)
