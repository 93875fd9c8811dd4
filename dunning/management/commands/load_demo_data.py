"""Load a varied demo data set. Running it again changes nothing."""

from __future__ import annotations

import datetime
import os
from decimal import Decimal

from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand
from django.db import transaction
from django.utils import timezone

from billing import attempts
from billing.models import Invoice
from customers.models import Customer, PaymentMethod
from dunning import engine
from dunning.cases import open_case
from dunning.payments import SETTLEMENT
from notifications import services as outbox

# name, email, phone, locale, time zone, country, currency, segment, amount, token, days since failure
DEMO_CUSTOMERS = [
    ("Ada Lovelace", "ada@example.com", "+442079460001", "en", "Europe/London", "GB", "GBP", "pro", "49.00",
     "tok_succeed_after_2", 9),
    ("Grace Hopper", "grace@example.com", "+14155550101", "en", "America/New_York", "US", "USD", "team", "199.00",
     "tok_insufficient_funds", 20),
    ("Lucía Fernández", "lucia@example.es", "+34912345678", "es", "Europe/Madrid", "ES", "EUR", "pro", "1234.56",
     "tok_insufficient_funds", 6),
    ("Marco Rossi", "marco@example.it", "+390612345678", "it", "Europe/Rome", "IT", "EUR", "starter", "29.90",
     "tok_ok", 4),
    ("山田 太郎", "taro@example.jp", "+81312345678", "ja", "Asia/Tokyo", "JP", "JPY", "pro", "12000",
     "tok_expired_card", 11),
    ("Оксана Коваленко", "oksana@example.com.ua", "+380441234567", "uk", "Europe/Kyiv", "UA", "EUR", "team", "89.00",
     "tok_do_not_honor", 2),
    ("Linus Berg", "linus@example.se", "+46812345678", "en", "Europe/Stockholm", "SE", "EUR", "enterprise",
     "4800.00", "tok_insufficient_funds", 30),
    ("Priya Nair", "priya@example.in", "+912212345678", "en", "Asia/Kolkata", "IN", "USD", "starter", "19.00",
     "tok_processing_error", 1),
    ("Sofia Bianchi", "sofia@example.it", "+390287654321", "it", "Europe/Rome", "IT", "EUR", "pro", "59.00",
     "tok_stolen_card", 8),
    ("Kenji Sato", "kenji@example.jp", "+81661234567", "ja", "Asia/Tokyo", "JP", "JPY", "team", "38500",
     "tok_succeed_after_3", 12),
    ("Diego Alvarez", "diego@example.mx", "+525512345678", "es", "America/Mexico_City", "MX", "USD", "starter",
     "15.00", "tok_insufficient_funds", 0),
    ("Mia Schulz", "mia@example.de", "+493012345678", "en", "Europe/Berlin", "DE", "EUR", "enterprise", "2150.00",
     "tok_ok", 3),
]


class Command(BaseCommand):
    help = (
        "Load demo customers, invoices and dunning cases at different steps (several currencies including "
        "JPY, several languages), plus the default campaign and templates and a demo admin login. "
        "Idempotent: a second run changes nothing."
    )

    def add_arguments(self, parser):
        parser.add_argument("--admin-user", default="admin")
        parser.add_argument(
            "--admin-password", default=os.environ.get("DEMO_ADMIN_PASSWORD", "dunning-demo"),
            help="Password of the demo admin (default: $DEMO_ADMIN_PASSWORD or 'dunning-demo').",
        )

    def handle(self, *args, admin_user: str, admin_password: str, **options):
        call_command("load_defaults", verbosity=0)
        created_user = self._admin(admin_user, admin_password)
        created = self._customers()
        self.stdout.write(
            f"Demo data: {created} new customers ({len(DEMO_CUSTOMERS) - created} already present)."
        )
        self.stdout.write(self.style.SUCCESS(
            f"Admin login: {admin_user} / {admin_password}" + (" (created)" if created_user else "")
        ))

    def _admin(self, username: str, password: str) -> bool:
        User = get_user_model()
        user, created = User.objects.get_or_create(username=username, defaults={"is_staff": True,
                                                                                "is_superuser": True})
        if created:
            user.set_password(password)
            user.save()
        return created

    def _customers(self) -> int:
        now = timezone.now()
        new_cases = []
        for i, (name, email, phone, locale, tz, country, currency, segment, amount, token, days) in enumerate(
            DEMO_CUSTOMERS, start=1
        ):
            external_id = f"demo_cus_{i:03d}"
            if Customer.objects.filter(external_id=external_id).exists():
                continue
            failed_at = now - datetime.timedelta(days=days, hours=i)
            # Customers of some months' standing whose invoice came a day before the failed payment,
            # so the admin's dates read in the order things happened.
            joined_at = failed_at - datetime.timedelta(days=60 + 30 * i)
            with transaction.atomic():
                customer = Customer.objects.create(
                    external_id=external_id, name=name, email=email, phone=phone, locale=locale, timezone=tz,
                    country=country, currency=currency, segment=segment, mrr=Decimal(amount), created_at=joined_at,
                )
                PaymentMethod.objects.create(
                    customer=customer, token=f"{token}:{external_id}", brand="visa" if i % 3 else "mastercard",
                    last4=f"{4242 + i:04d}"[-4:], exp_month=(i % 12) + 1, exp_year=2027 + i % 3, is_default=True,
                    created_at=joined_at,
                )
                invoice = Invoice.objects.create(
                    external_id=f"demo_in_{i:03d}", number=f"INV-2026-{1000 + i}", customer=customer,
                    currency=currency, amount_due=Decimal(amount),
                    issued_at=(failed_at - datetime.timedelta(days=1)).date(), due_date=failed_at.date(),
                    created_at=failed_at - datetime.timedelta(days=1),
                )
                case, _ = open_case(invoice, failed_at=failed_at, decline_code=token.replace("tok_", ""))
                new_cases.append(case)
        if new_cases:
            self._play_until_now(min(c.failed_at for c in new_cases), now)
        return len(new_cases)

    def _play_until_now(self, start: datetime.datetime, now: datetime.datetime) -> None:
        """Run the engine as the workers would have, hour by hour, so cases sit at realistic steps."""
        moment = start
        while moment <= now:
            engine.run_due_steps(moment)
            attempts.process_pending(SETTLEMENT, moment)
            outbox.send_queued(moment, limit=500)
            moment += datetime.timedelta(hours=6)
        engine.run_due_steps(now)
        attempts.process_pending(SETTLEMENT, now)
        outbox.send_queued(now, limit=500)
