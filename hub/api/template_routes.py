"""Previewing templates with sample data: ``/v1/templates/{name}/preview``."""

from __future__ import annotations

from typing import Any

from fastapi import Depends, FastAPI, HTTPException, status
from pydantic import BaseModel, ConfigDict, Field

from hub.api.auth import Access
from hub.errors import TemplateError
from hub.settings import Settings
from hub.templates import Templates


class PreviewIn(BaseModel):
    """Sample data to render a template with, as one channel would send it."""

    model_config = ConfigDict(extra="forbid")

    channel: str = Field(examples=["email", "sms"], description="A registered channel")
    event_type: str = Field("", description="Shown to the template as event.type")
    data: dict[str, Any] = Field(default_factory=dict)


class PreviewOut(BaseModel):
    subject: str | None
    text: str
    html: str | None
    details: dict[str, str | int] = Field(description="e.g. SMS encoding and segments")


def add_template_routes(app: FastAPI, settings: Settings, access: Access) -> None:
    templates = Templates(settings.all_template_dirs)

    @app.post("/v1/templates/{name}/preview", dependencies=[Depends(access.admin)])
    def preview(name: str, sample: PreviewIn) -> PreviewOut:
        """Render a template with sample data; SMS previews include the segment count."""
        channel = settings.channel_classes.get(sample.channel)
        if channel is None:
            known = ", ".join(settings.channel_classes)
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_CONTENT,
                [
                    {
                        "loc": ["body", "channel"],
                        "msg": f"unknown channel {sample.channel!r}; known: {known}",
                        "type": "unknown_channel",
                    }
                ],
            )
        try:
            rendered, details = templates.preview(name, sample.event_type, sample.data, channel)
        except TemplateError as exc:
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_CONTENT,
                [{"loc": ["path", "name"], "msg": str(exc), "type": "template_error"}],
            ) from None
        return PreviewOut(
            subject=rendered.subject, text=rendered.text, html=rendered.html, details=details
        )
