"""Invoice imports end to end: the billing pipeline, then dunning for the rows that need it.

The admin, the background task and the ``import_invoices`` command all call :func:`import_invoices`.
Rows that are open, unpaid and past due, or flagged as a failed payment, open a dunning case
(integrations.inbound.payments_failed, the same translation as the API's and the webhooks' failures,
in chunks); payments found by re-importing are money received (integrations.inbound.payment_received:
a payment attempt row, once per invoice and imported total), so that an open case is recovered.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from decimal import Decimal

from django.conf import settings
from django.core.files.storage import default_storage
from django.db import transaction
from django.utils import timezone
from django_q.tasks import async_task

from billing.imports import ImportOptions, ImportReport, Opener, run_import
from billing.models import Invoice
from dunning.models import DunningCase
from integrations import inbound
from integrations.models import ImportJob

logger = logging.getLogger(__name__)
CASE_CHUNK = 500  # cases opened per transaction (integrations.inbound.payments_failed)


def import_invoices(opener: Opener, options: ImportOptions, *, actor=None,
                    progress: Callable[[str, int], None] | None = None) -> ImportReport:
    options.defer_payments = True
    report = run_import(opener, options, progress)
    if not report.written:
        return report
    actor = actor or "import"
    for _line, invoice_id, paid_total in report.deferred_payments:
        # Keyed by the total the file reports: importing it again (or a file that says less) adds nothing.
        inbound.payment_received(Invoice.objects.get(pk=invoice_id), paid_total=Decimal(paid_total),
                                 idempotency_key=f"import:{invoice_id}:paid:{paid_total}", actor=actor)
    open_ids = set(
        DunningCase.objects.open()
        .filter(invoice_id__in=[c[1] for c in report.dunning_candidates])
        .values_list("invoice_id", flat=True)
    )
    candidates = [c for c in report.dunning_candidates if c[1] not in open_ids]
    numbers = dict(Invoice.objects.filter(pk__in=[c[1] for c in candidates]).values_list("pk", "number"))
    for start in range(0, len(candidates), CASE_CHUNK):
        chunk = candidates[start:start + CASE_CHUNK]
        failures = [inbound.Failure(invoice_id, decline_code=code) for _line, invoice_id, code in chunk]
        for (line, invoice_id, _code), opened in zip(chunk, inbound.payments_failed(failures, actor=actor),
                                                     strict=True):
            if opened.error is not None:
                report.warnings.append(f"Line {line}: invoice {numbers.get(invoice_id)} imported, no dunning case "
                                       f"opened: {opened.error}")
            report.cases_opened += int(opened.created)
        if progress:
            progress("dunning", start + len(chunk))
    return report


# --- Admin jobs -----------------------------------------------------------------------------------

def storage_opener(path: str) -> Opener:
    return lambda: default_storage.open(path, "rb")


def job_options(job: ImportJob, *, dry_run: bool) -> ImportOptions:
    decimal_comma = {ImportJob.NumberFormat.DECIMAL_COMMA: True, ImportJob.NumberFormat.DECIMAL_POINT: False}
    return ImportOptions(format=job.format, date_format=job.date_format, valid_only=job.valid_only,
                         decimal_comma=decimal_comma.get(job.number_format), dry_run=dry_run)


def preview_job(job: ImportJob) -> ImportReport:
    report = run_import(storage_opener(job.stored_path), job_options(job, dry_run=True),
                        _progress_saver(job))
    job.report = report.as_dict()
    job.total = report.total
    job.status = ImportJob.Status.PREVIEW
    job.save(update_fields=["report", "total", "status", "updated_at"])
    return report


def runs_in_background(job: ImportJob) -> bool:
    return job.size > settings.IMPORT_BACKGROUND_BYTES


def confirm_job(job: ImportJob, *, actor=None) -> None:
    """Run the import now, or hand it to a worker when the file is large."""
    claimed = ImportJob.objects.filter(pk=job.pk, status=ImportJob.Status.PREVIEW).update(
        status=ImportJob.Status.QUEUED, updated_at=timezone.now())
    if not claimed:
        return  # confirmed twice (double click, two tabs): the first one runs it
    if runs_in_background(job):
        transaction.on_commit(lambda: async_task("integrations.tasks.run_import_job", job.pk,
                                                 actor.pk if actor else None))
    else:
        run_job(job.pk, actor=actor)


def run_job(job_id: int, *, actor=None) -> ImportJob | None:
    """Claim a queued job and run it; a second delivery of the same task finds nothing to claim."""
    claimed = ImportJob.objects.filter(pk=job_id, status=ImportJob.Status.QUEUED).update(
        status=ImportJob.Status.RUNNING, processed=0, updated_at=timezone.now())
    job = ImportJob.objects.get(pk=job_id)
    if not claimed:
        return None
    try:
        report = import_invoices(storage_opener(job.stored_path), job_options(job, dry_run=False),
                                 actor=actor or "import", progress=_progress_saver(job))
    except Exception as exc:
        logger.exception("Import job %s failed", job_id)
        job.status = ImportJob.Status.FAILED
        job.report = {**job.report, "file_error": f"The import failed: {exc}"}
    else:
        job.report = report.as_dict()
        job.status = ImportJob.Status.DONE if report.written else ImportJob.Status.FAILED
        job.processed = report.total
    job.finished_at = timezone.now()
    job.save(update_fields=["status", "report", "processed", "finished_at", "updated_at"])
    # The upload is no longer needed: the report keeps every invalid row for the skipped-rows CSV.
    default_storage.delete(job.stored_path)
    return job


def _progress_saver(job: ImportJob) -> Callable[[str, int], None]:
    def save(phase: str, processed: int) -> None:
        ImportJob.objects.filter(pk=job.pk).update(phase=phase, processed=processed)

    return save
