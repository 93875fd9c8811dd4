from django.db import models


class Report(models.Model):
    """No table: holds the permissions for the reports (view them, download them as CSV)."""

    class Meta:
        managed = False
        default_permissions = ()
        permissions = [
            ("view_reports", "Can view the dashboard figures and reports"),
            ("export_reports", "Can download reports as CSV"),
        ]

    def __str__(self) -> str:
        return "reports"
