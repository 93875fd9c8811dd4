"""django-import-export resource for customers: upsert by external id, nothing written if a row is bad."""

from __future__ import annotations

from import_export import resources

from customers.models import Customer


class CustomerResource(resources.ModelResource):
    class Meta:
        model = Customer
        import_id_fields = ("external_id",)
        fields = ("external_id", "name", "email", "phone", "locale", "timezone", "country", "currency", "segment",
                  "is_business", "mrr")
        export_order = fields
        skip_unchanged = True
        report_skipped = True
        clean_model_instances = True
