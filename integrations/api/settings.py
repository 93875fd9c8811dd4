"""REST framework and drf-spectacular settings for /api/v1/ (imported by config.settings; no models here)."""

from __future__ import annotations


def api_rest_framework() -> dict:
    return {
        "DEFAULT_AUTHENTICATION_CLASSES": ["integrations.api.auth.ApiKeyAuthentication"],
        "DEFAULT_PERMISSION_CLASSES": ["integrations.api.auth.HasKeyScope"],
        "DEFAULT_THROTTLE_CLASSES": ["integrations.api.auth.KeyRateThrottle"],
        "DEFAULT_FILTER_BACKENDS": [
            "django_filters.rest_framework.DjangoFilterBackend",
            "rest_framework.filters.OrderingFilter",
        ],
        "DEFAULT_PAGINATION_CLASS": "integrations.api.pagination.Cursor",
        "PAGE_SIZE": 50,
        "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
        "DEFAULT_PARSER_CLASSES": ["integrations.api.parsers.JSONParser"],
        "EXCEPTION_HANDLER": "integrations.api.errors.exception_handler",
        "UNAUTHENTICATED_USER": None,
        "COERCE_DECIMAL_TO_STRING": True,
    }


def api_spectacular() -> dict:
    return {
        "DESCRIPTION": (
            "Integrate your billing system with the dunning back office. Authenticate with "
            "`Authorization: Bearer <key>` (keys are created by staff in the admin). Every POST needs an "
            "`Idempotency-Key` header. Errors share one JSON shape: `{\"error\": {...}}`."
        ),
        "SERVE_INCLUDE_SCHEMA": False,
        "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
        "SERVE_AUTHENTICATION": [],
        "SWAGGER_UI_DIST": "SIDECAR",
        "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
        "REDOC_DIST": "SIDECAR",
        "COMPONENT_SPLIT_REQUEST": True,
        "SCHEMA_PATH_PREFIX": r"/api/v1",
        "POSTPROCESSING_HOOKS": [
            "drf_spectacular.hooks.postprocess_schema_enums",
            "integrations.api.schema.add_error_responses",
        ],
        "ENUM_NAME_OVERRIDES": {
            "InvoiceStatusEnum": "billing.models.Invoice.Status",
            "CaseStatusEnum": "dunning.models.DunningCase.Status",
            "NotificationStatusEnum": "notifications.models.Notification.Status",
            "AttemptOutcomeEnum": "billing.models.PaymentAttempt.Outcome",
            "CustomerStatusEnum": "customers.models.Customer.Status",
        },
    }
