"""Background tasks (django-q2). Idempotent: a job is claimed (queued -> running) before it runs."""

from __future__ import annotations

from django.contrib.auth import get_user_model

from integrations import imports


def run_import_job(job_id: int, user_id: int | None = None) -> str:
    actor = get_user_model().objects.filter(pk=user_id).first() if user_id else None
    job = imports.run_job(job_id, actor=actor)
    return job.status if job else "already claimed"


def preview_import_job(job_id: int) -> str:
    from integrations.models import ImportJob

    claimed = ImportJob.objects.filter(pk=job_id, status=ImportJob.Status.VALIDATING).first()
    if claimed is None:
        return "nothing to validate"
    imports.preview_job(claimed)
    return "validated"


def purge_idempotency_records() -> int:
    """Hourly: forget Idempotency-Keys older than API_IDEMPOTENCY_HOURS (idempotent: a plain delete)."""
    from datetime import timedelta

    from django.conf import settings
    from django.utils import timezone

    from integrations.models import IdempotencyRecord

    cutoff = timezone.now() - timedelta(hours=settings.API_IDEMPOTENCY_HOURS)
    deleted, _ = IdempotencyRecord.objects.filter(created_at__lt=cutoff).delete()
    return deleted


def drain_payment_events(until: float | None = None) -> int:
    """Apply pending payment_failed events in batches (woken by the API, and every minute)."""
    from integrations.events import drain

    return drain(until)
