"""Background tasks (django-q2). Idempotent: a job is claimed (queued -> running) before it runs."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.utils import timezone

from billing.models import PaymentAttempt
from dunning import tasks as dunning_tasks
from integrations import events, imports
from integrations.models import IdempotencyRecord, ImportJob, InboundEvent


def run_import_job(job_id: int, user_id: int | None = None) -> str:
    actor = get_user_model().objects.filter(pk=user_id).first() if user_id else None
    job = imports.run_job(job_id, actor=actor)
    return job.status if job else "already claimed"


def preview_import_job(job_id: int) -> str:
    claimed = ImportJob.objects.filter(pk=job_id, status=ImportJob.Status.VALIDATING).first()
    if claimed is None:
        return "nothing to validate"
    imports.preview_job(claimed)
    return "validated"


def purge_idempotency_records() -> int:
    """Hourly: forget Idempotency-Keys older than API_IDEMPOTENCY_HOURS (idempotent: a plain delete)."""
    cutoff = timezone.now() - timedelta(hours=settings.API_IDEMPOTENCY_HOURS)
    deleted, _ = IdempotencyRecord.objects.filter(created_at__lt=cutoff).delete()
    return deleted


def drain_payment_events(until: float | None = None) -> int:
    """Apply pending payment_failed events in batches (woken by the API, and every minute)."""
    return events.drain(until)


def retry_after_method_update(payment_method_id: int, actor: str | None = None,
                              source: str = PaymentAttempt.Source.PORTAL, event_id: int | None = None) -> list[dict]:
    """The card-update retry an inbound event asked for (integrations.inbound.retry_after_commit):
    dunning's task itself, its outcome noted on the event (``result["retries"]``)."""
    retries = dunning_tasks.retry_after_method_update(payment_method_id, actor, source)
    if event_id is not None:
        event = InboundEvent.objects.get(pk=event_id)
        InboundEvent.objects.filter(pk=event_id).update(result={**event.result, "retries": retries})
    return retries
