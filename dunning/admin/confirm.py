"""The confirmation page of an admin action that asks for a reason or a choice before it acts."""

from __future__ import annotations

from django.contrib import admin
from django.template.response import TemplateResponse


def confirm_action(modeladmin, request, queryset, *, action: str, title: str, intro: str, field: str, label: str,
                   kind: str) -> TemplateResponse:
    """The page posts the action again with ``confirm=yes`` and ``field`` (a "text" input or a "checkbox")."""
    return TemplateResponse(request, "admin/dunning/confirm_action.html", {
        **modeladmin.admin_site.each_context(request), "title": title, "intro": intro, "objects": queryset,
        "action": action, "field": field, "label": label, "kind": kind,
        "opts": queryset.model._meta, "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
    })
