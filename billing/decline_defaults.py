"""The shipped decline table: Stripe decline codes, raw network response codes, Mastercard advice codes.

Sources: docs.stripe.com/declines/codes (next steps per code); Visa's "category 1" never-retry
response codes; Mastercard merchant advice codes (Braintree and Checkout.com references). Loaded
into billing.DeclineRule by a data migration and by ``manage.py load_defaults`` (missing rows only,
so staff edits are kept).
"""

from __future__ import annotations

SOON, SOFT, NEW, HARD = "retry_soon", "soft", "needs_new_method", "hard"
D, N, A = "decline_code", "network_code", "advice_code"

# (kind, network, code, class, retry_after_hours, description)
DEFAULT_RULES: list[tuple[str, str, str, str, int | None, str]] = [
    # --- Stripe decline codes ---
    (D, "", "approve_with_id", SOFT, None, "Issuer could not authorise; retry later"),
    (D, "", "authentication_required", NEW, None, "Customer must authenticate (3-D Secure) in the portal"),
    (D, "", "call_issuer", SOFT, None, "Unknown reason; customer should call the issuer"),
    (D, "", "card_not_supported", NEW, None, "Card does not support this kind of purchase"),
    (D, "", "card_velocity_exceeded", SOFT, None, "Balance or credit limit exceeded"),
    (D, "", "currency_not_supported", NEW, None, "Card does not support the currency"),
    (D, "", "do_not_honor", SOFT, None, "Unknown reason; retry later"),
    (D, "", "do_not_try_again", HARD, None, "Issuer asks never to retry"),
    (D, "", "duplicate_transaction", SOFT, None, "Identical transaction just submitted"),
    (D, "", "expired_card", NEW, None, "Card has expired"),
    (D, "", "fraudulent", HARD, None, "Suspected fraud"),
    (D, "", "generic_decline", SOFT, None, "Unknown reason"),
    (D, "", "incorrect_number", NEW, None, "Card number incorrect"),
    (D, "", "incorrect_cvc", NEW, None, "CVC incorrect"),
    (D, "", "incorrect_zip", NEW, None, "Postal code incorrect"),
    (D, "", "insufficient_funds", SOFT, None, "Insufficient funds"),
    (D, "", "invalid_account", NEW, None, "Card or account invalid"),
    (D, "", "invalid_amount", SOFT, None, "Amount invalid or too large"),
    (D, "", "invalid_cvc", NEW, None, "CVC incorrect"),
    (D, "", "invalid_expiry_month", NEW, None, "Expiry month invalid"),
    (D, "", "invalid_expiry_year", NEW, None, "Expiry year invalid"),
    (D, "", "invalid_number", NEW, None, "Card number incorrect"),
    (D, "", "issuer_not_available", SOON, None, "Issuer unreachable"),
    (D, "", "lost_card", HARD, None, "Card reported lost"),
    (D, "", "merchant_blacklist", HARD, None, "Merchant blocked by the customer or issuer"),
    (D, "", "new_account_information_available", NEW, None, "Card or account replaced"),
    (D, "", "no_action_taken", SOFT, None, "Unknown reason"),
    (D, "", "not_permitted", NEW, None, "Payment not permitted"),
    (D, "", "offline_pin_required", NEW, None, "PIN required"),
    (D, "", "online_or_offline_pin_required", NEW, None, "PIN required"),
    (D, "", "pickup_card", HARD, None, "Card to be picked up (lost or stolen)"),
    (D, "", "pin_try_exceeded", NEW, None, "PIN tries exceeded"),
    (D, "", "processing_error", SOON, None, "Error while processing the card"),
    (D, "", "reenter_transaction", SOON, None, "Issuer could not process; retry"),
    (D, "", "restricted_card", HARD, None, "Card restricted (lost or stolen)"),
    (D, "", "revocation_of_all_authorizations", HARD, None, "Customer revoked all recurring payments"),
    (D, "", "revocation_of_authorization", HARD, None, "Customer revoked this recurring payment"),
    (D, "", "security_violation", HARD, None, "Security violation"),
    (D, "", "service_not_allowed", NEW, None, "Card does not allow this service"),
    (D, "", "stolen_card", HARD, None, "Card reported stolen"),
    (D, "", "stop_payment_order", HARD, None, "Customer stopped payments"),
    (D, "", "testmode_decline", NEW, None, "A Stripe test card was used"),
    (D, "", "transaction_not_allowed", NEW, None, "Card does not allow this transaction"),
    (D, "", "try_again_later", SOON, None, "Temporary problem; retry soon"),
    (D, "", "withdrawal_count_limit_exceeded", SOFT, None, "Withdrawal limit exceeded"),
    (D, "", "no_payment_method", NEW, None, "No usable payment method on file"),
    (D, "", "payment_method_blocked", NEW, None, "Not sent: the method was ruled out by an earlier decline"),
    (D, "", "gateway_error", SOON, None, "The gateway refused the request"),
    # --- Raw network response codes (ISO 8583) ---
    (N, "", "01", SOFT, None, "Refer to issuer"),
    (N, "", "03", HARD, None, "Invalid merchant"),
    (N, "", "04", HARD, None, "Pick up card"),
    (N, "", "05", SOFT, None, "Do not honour"),
    (N, "", "07", HARD, None, "Pick up card, special condition"),
    (N, "", "12", NEW, None, "Invalid transaction"),
    (N, "", "13", SOFT, None, "Invalid amount"),
    (N, "", "14", NEW, None, "Invalid card number"),
    (N, "", "15", NEW, None, "No such issuer"),
    (N, "", "19", SOON, None, "Re-enter transaction"),
    (N, "", "41", HARD, None, "Lost card"),
    (N, "", "43", HARD, None, "Stolen card"),
    (N, "", "51", SOFT, None, "Insufficient funds"),
    (N, "", "54", NEW, None, "Expired card"),
    (N, "", "55", NEW, None, "Incorrect PIN"),
    (N, "", "57", NEW, None, "Transaction not permitted to cardholder"),
    (N, "", "61", SOFT, None, "Exceeds withdrawal amount limit"),
    (N, "", "62", HARD, None, "Restricted card"),
    (N, "", "65", SOFT, None, "Exceeds withdrawal frequency limit"),
    (N, "", "78", NEW, None, "Blocked, first use / no account"),
    (N, "", "91", SOON, None, "Issuer unavailable"),
    (N, "", "96", SOON, None, "System malfunction"),
    (N, "", "N7", NEW, None, "CVV2 mismatch"),
    # Visa category 1: the issuer will never approve; Visa forbids any reattempt.
    (N, "visa", "04", HARD, None, "Visa category 1: pick up card"),
    (N, "visa", "07", HARD, None, "Visa category 1: pick up card, special condition"),
    (N, "visa", "12", HARD, None, "Visa category 1: invalid transaction"),
    (N, "visa", "14", HARD, None, "Visa category 1: invalid account number"),
    (N, "visa", "15", HARD, None, "Visa category 1: no such issuer"),
    (N, "visa", "41", HARD, None, "Visa category 1: lost card"),
    (N, "visa", "43", HARD, None, "Visa category 1: stolen card"),
    (N, "visa", "46", HARD, None, "Visa category 1: closed account"),
    (N, "visa", "57", HARD, None, "Visa category 1: transaction not permitted"),
    (N, "visa", "R0", HARD, None, "Visa category 1: stop payment order"),
    (N, "visa", "R1", HARD, None, "Visa category 1: revocation of authorisation"),
    (N, "visa", "R3", HARD, None, "Visa category 1: revocation of all authorisations"),
    # --- Mastercard merchant advice codes ---
    (A, "", "01", NEW, None, "New account information available: ask for the updated card"),
    (A, "", "02", SOFT, 72, "Cannot approve at this time: try again later (72 h)"),
    (A, "", "03", HARD, None, "Do not try again"),
    (A, "", "21", HARD, None, "Payment cancellation: stop recurring payments"),
    (A, "", "24", SOFT, 1, "Retry after 1 hour"),
    (A, "", "25", SOFT, 24, "Retry after 24 hours"),
    (A, "", "26", SOFT, 48, "Retry after 2 days"),
    (A, "", "27", SOFT, 96, "Retry after 4 days"),
    (A, "", "28", SOFT, 144, "Retry after 6 days"),
    (A, "", "29", SOFT, 192, "Retry after 8 days"),
    (A, "", "30", SOFT, 240, "Retry after 10 days"),
    (A, "", "40", NEW, None, "Consumer non-reloadable prepaid card"),
    (A, "", "41", NEW, None, "Consumer single-use virtual card"),
]


def ensure_default_rules(model) -> int:
    """Create the rules that are missing; never changes a rule staff have edited. Returns how many.

    ``model`` is the DeclineRule model: the current one, or a migration's historical one.
    """
    existing = set(model.objects.values_list("kind", "network", "code"))
    rows = [
        model(kind=k, network=net, code=code, decline_class=cls, retry_after_hours=hours, description=desc)
        for k, net, code, cls, hours, desc in DEFAULT_RULES
        if (k, net, code) not in existing
    ]
    model.objects.bulk_create(rows)
    return len(rows)
