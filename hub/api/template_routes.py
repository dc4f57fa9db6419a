"""Stored templates: list, read, save (validated), versions, diff, rollback, preview, test.

Every route needs the admin scope. A save that fails validation answers 422
with FastAPI's ``detail`` and an ``errors`` list of
``{"variant", "part", "locale", "line", "column", "message"}``, and stores
nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Query, status
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from hub.api.auth import Access
from hub.api.cursors import decode_cursor, encode_cursor
from hub.channels.base import Message
from hub.errors import ChannelError, TemplateError
from hub.keys import Principal
from hub.settings import ALERT, Settings, get_settings
from hub.store import templates as stored
from hub.store.db import session
from hub.store.models import TemplateVersion
from hub.template_editing import (
    InvalidTemplate,
    Problem,
    check,
    diff,
    event_type_of,
    merged,
    preview,
    save,
    unknown_parts,
)
from hub.templates import Library, TemplateSet

Parts = dict[str, str | None]


class TemplateIn(BaseModel):
    """An edit: parts left out keep their text, parts set to null are removed."""

    model_config = ConfigDict(extra="forbid")

    variants: dict[str, Parts | None] | None = Field(
        None, examples=[{"email": {"subject": "Welcome, {{ data.name }}!"}}]
    )
    locales: dict[str, dict[str, Parts | None] | None] | None = None
    comment: str = Field("", max_length=2000)
    draft: bool = False
    event_type: str | None = Field(None, description="Defaults to the name, when an event type")


class TemplateOut(BaseModel):
    name: str
    event_type: str | None
    version: int
    variants: dict[str, dict[str, str]]
    locales: dict[str, dict[str, dict[str, str]]]
    author: str | None
    comment: str
    created_at: datetime
    draft: bool
    active: bool
    sample_data: dict[str, Any] | None = Field(
        None, description="The event type's example: what a preview renders without data"
    )


class TemplateSummary(BaseModel):
    name: str
    event_type: str | None
    version: int
    variants: list[str]
    locales: list[str]
    updated_at: datetime


class TemplateList(BaseModel):
    items: list[TemplateSummary]
    next_cursor: str | None


class SavedOut(BaseModel):
    name: str
    version: int
    draft: bool
    warnings: list[dict[str, Any]]


class VersionSummary(BaseModel):
    version: int
    author: str | None
    comment: str
    created_at: datetime
    draft: bool
    active: bool
    source: str


class VersionList(BaseModel):
    items: list[VersionSummary]
    next_cursor: str | None


class DiffOut(BaseModel):
    from_: int = Field(alias="from")
    to: int
    diff: str

    model_config = ConfigDict(populate_by_name=True)


class VersionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: int = Field(ge=1)


class PreviewIn(BaseModel):
    """Sample data to render a template with, as one channel would send it."""

    model_config = ConfigDict(extra="forbid")

    channel: str = Field(examples=["email", "sms"], description="A registered channel")
    event_type: str = Field("", description="Shown to the template as event.type")
    data: dict[str, Any] | None = Field(None, description="Default: the event type's example")
    locale: str | None = None
    version: int | None = Field(None, ge=1, description="Default: the active version")
    variants: dict[str, Parts | None] | None = Field(None, description="Unsaved edits to render")
    locales: dict[str, dict[str, Parts | None] | None] | None = None


class PreviewOut(BaseModel):
    subject: str | None
    text: str
    html: str | None
    details: dict[str, str | int] = Field(description="e.g. SMS encoding and segments")
    version: int | None


class TestIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    channel: str
    to: str = Field(min_length=1, max_length=500)
    data: dict[str, Any] | None = None
    locale: str | None = None
    version: int | None = Field(None, ge=1)


class TestOut(BaseModel):
    sent: bool
    channel: str
    to: str
    version: int | None
    provider_message_id: str | None


def add_template_routes(app: FastAPI, settings: Settings, access: Access) -> None:
    library = Library(settings.templates.utm)
    url = settings.resolved_database_url
    _add_reads(app, url, library, access)
    _add_writes(app, url, library, access)
    _add_history(app, url, access)
    _add_versioning(app, url, access)
    _add_renders(app, url, library, access)


def _settings() -> Settings:
    # Follows `hub reload` (the catalog's examples, channels).
    return get_settings()


def _add_reads(app: FastAPI, url: str, library: Library, access: Access) -> None:
    @app.get("/v1/templates", dependencies=[Depends(access.admin)])
    def list_templates(
        limit: int = Query(100, ge=1, le=1000), cursor: str | None = None
    ) -> TemplateList:
        """Stored templates in ``(created_at, name)`` order, each with its active version."""
        after = decode_cursor(cursor) if cursor else None
        with session(url) as db:
            rows = stored.page(db, after, limit + 1)
            current = library.load(db)
        items = []
        for row in rows[:limit]:
            content = current.content(row.name) or {}
            items.append(
                TemplateSummary(
                    name=row.name,
                    event_type=row.event_type,
                    version=row.active_version,
                    variants=sorted(content.get("variants") or {}),
                    locales=sorted(content.get("locales") or {}),
                    updated_at=row.updated_at,
                )
            )
        last = rows[limit - 1] if len(rows) > limit else None
        next_cursor = encode_cursor((last.created_at, last.name)) if last else None
        return TemplateList(items=items, next_cursor=next_cursor)

    @app.get("/v1/templates/{name}", dependencies=[Depends(access.admin)])
    def get_template(name: str) -> TemplateOut:
        """The active version of ``name``."""
        with session(url) as db:
            row = stored.template(db, name)
            found = stored.version(db, name, row.active_version) if row else None
            return _out(_or_404(name, found), active=True)


def _add_writes(app: FastAPI, url: str, library: Library, access: Access) -> None:
    @app.put("/v1/templates/{name}", response_model=None)
    def put_template(
        name: str,
        edit: TemplateIn,
        principal: Principal = Depends(access.admin),  # noqa: B008
    ) -> SavedOut | JSONResponse:
        """Save an edit as a new version once valid; else 422 with every error, saving nothing."""
        _check_name(name)
        for attempt in range(2):
            try:
                with session(url) as db:
                    saved = save(
                        db,
                        library,
                        _settings(),
                        name,
                        variants=edit.variants,
                        locales=edit.locales,
                        event_type=edit.event_type,
                        author=principal.name,
                        comment=edit.comment,
                        draft=edit.draft,
                    )
                    version = saved.version.version
                break
            except InvalidTemplate as exc:
                return _invalid(exc.problems)
            except IntegrityError:
                # Another save took this number first: validate and number again.
                if attempt:
                    raise
        return SavedOut(
            name=name,
            version=version,
            draft=edit.draft,
            warnings=[w.as_json() for w in saved.warnings],
        )


def _add_history(app: FastAPI, url: str, access: Access) -> None:
    @app.get("/v1/templates/{name}/versions", dependencies=[Depends(access.admin)])
    def list_versions(
        name: str, limit: int = Query(100, ge=1, le=1000), cursor: str | None = None
    ) -> VersionList:
        """The versions of ``name``, newest first."""
        before = int(decode_cursor(cursor)[1]) if cursor else None
        with session(url) as db:
            row = stored.template(db, name)
            if row is None:
                raise _not_found(name)
            rows = stored.versions(db, name, before, limit + 1)
            items = [_summary(v, v.version == row.active_version) for v in rows[:limit]]
        last = rows[limit - 1] if len(rows) > limit else None
        next_cursor = encode_cursor((last.created_at, str(last.version))) if last else None
        return VersionList(items=items, next_cursor=next_cursor)

    @app.get("/v1/templates/{name}/versions/{number}", dependencies=[Depends(access.admin)])
    def get_version(name: str, number: int) -> TemplateOut:
        """Version ``number`` of ``name``."""
        with session(url) as db:
            row = stored.template(db, name)
            found = _or_404(name, stored.version(db, name, number))
            return _out(found, active=row is not None and row.active_version == number)

    @app.get("/v1/templates/{name}/diff", dependencies=[Depends(access.admin)])
    def diff_versions(
        name: str,
        old: int = Query(alias="from", ge=1),
        new: int = Query(alias="to", ge=1),
    ) -> DiffOut:
        """A unified diff from version ``from`` to version ``to``."""
        with session(url) as db:
            before = _or_404(name, stored.version(db, name, old))
            after = _or_404(name, stored.version(db, name, new))
            return DiffOut.model_validate(
                {"from": old, "to": new, "diff": diff(name, before, after)}
            )


def _add_versioning(app: FastAPI, url: str, access: Access) -> None:
    @app.post("/v1/templates/{name}/rollback")
    def rollback(
        name: str,
        target: VersionIn,
        principal: Principal = Depends(access.admin),  # noqa: B008
    ) -> SavedOut:
        """Make an old version active again, as a new version (history is never rewritten)."""
        with session(url) as db:
            old = _or_404(name, stored.version(db, name, target.version))
            saved = stored.add_version(
                db,
                name,
                old.content,
                event_type=old.event_type,
                author=principal.name,
                comment=f"rollback to version {old.version}",
                draft=False,
                source="rollback",
            )
            return SavedOut(name=name, version=saved.version, draft=False, warnings=[])

    @app.post("/v1/templates/{name}/publish", dependencies=[Depends(access.admin)])
    def publish(name: str, target: VersionIn) -> SavedOut:
        """Make version ``version`` (a draft) the active one."""
        with session(url) as db:
            if not stored.publish(db, name, target.version):
                raise _not_found(name, target.version)
        return SavedOut(name=name, version=target.version, draft=False, warnings=[])


def _add_renders(app: FastAPI, url: str, library: Library, access: Access) -> None:
    @app.post(
        "/v1/templates/{name}/preview", dependencies=[Depends(access.admin)], response_model=None
    )
    def preview_template(name: str, sample: PreviewIn) -> PreviewOut | JSONResponse:
        """Render without sending: the active version, another one, or unsaved edits.

        SMS previews include the encoding and segment count in ``details``.
        """
        current_settings = _settings()
        _check_channel(current_settings, sample.channel, ALERT)
        try:
            with session(url) as db:
                chosen = _chosen(db, library, current_settings, name, sample)
        except InvalidTemplate as exc:
            return _invalid(exc.problems)
        try:
            rendered, details = preview(
                chosen.templates,
                current_settings,
                name,
                sample.channel,
                sample.data,
                chosen.event_type,
                sample.locale,
            )
        except TemplateError as exc:
            return _invalid([Problem("", "", sample.locale, None, None, str(exc), "render")])
        return PreviewOut(
            subject=rendered.subject,
            text=rendered.text,
            html=rendered.html,
            details=details,
            version=chosen.version,
        )

    @app.post("/v1/templates/{name}/test", dependencies=[Depends(access.admin)])
    async def test_send(name: str, request: TestIn) -> TestOut:
        """Send the rendered message through the real channel, its subject marked [TEST]."""
        current_settings = _settings()
        _check_channel(current_settings, request.channel)
        with session(url) as db:
            sample = PreviewIn(channel=request.channel, version=request.version)
            chosen = _chosen(db, library, current_settings, name, sample)
        try:
            rendered, _ = preview(
                chosen.templates,
                current_settings,
                name,
                request.channel,
                request.data,
                chosen.event_type,
                request.locale,
            )
        except TemplateError as exc:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from None
        kind = current_settings.channel_classes[request.channel]
        channel_settings = current_settings.channels.of(request.channel)
        provider = channel_settings.all_providers[0]
        channel = current_settings.channels.kind_of(request.channel, provider)(
            provider, current_settings.var_dir / "outbox" / request.channel
        )
        channel.allow_private_targets = current_settings.outbound.allow_private_targets
        try:
            recipient = kind.address(channel_settings, request.to)
            message = Message(
                notification_id=f"test_{name}",
                event_id="evt_test",
                event_type=chosen.event_type or "",
                recipient=recipient,
                text=rendered.text if rendered.subject is not None else f"[TEST] {rendered.text}",
                subject=f"[TEST] {rendered.subject}" if rendered.subject is not None else None,
                html=rendered.html,
            )
            await channel.start()
            try:
                receipt = await channel.send(message)
            finally:
                await channel.close()
        except ChannelError as exc:
            raise HTTPException(
                status.HTTP_502_BAD_GATEWAY, f"{request.channel} refused the test: {exc}"
            ) from None
        return TestOut(
            sent=True,
            channel=request.channel,
            to=request.to,
            version=chosen.version,
            provider_message_id=receipt.provider_message_id,
        )


@dataclass(frozen=True, slots=True)
class _Chosen:
    templates: TemplateSet
    version: int | None  # None: unsaved edits
    event_type: str | None


def _chosen(
    db: Session, library: Library, settings: Settings, name: str, sample: PreviewIn
) -> _Chosen:
    """What to render ``sample`` with: the active version, another one, or unsaved edits.

    Unsaved edits are validated as a save would: InvalidTemplate with every error.
    """
    current = library.load(db)
    row = stored.template(db, current.resolve(name) or name)
    event_type = sample.event_type or event_type_of(settings, name, row.event_type if row else None)
    if sample.variants is not None or sample.locales is not None:
        content = merged(current.content(name), sample.variants, sample.locales)
        errors = unknown_parts(content)
        if not errors:
            errors, _ = check(current, library, settings, name, content, event_type)
        if errors:
            raise InvalidTemplate(name, errors)
        return _Chosen(TemplateSet(library, current.active, {name: content}), None, event_type)
    if sample.version is not None:
        found = stored.version(db, name, sample.version)
        if found is None:
            raise _not_found(name, sample.version)
        edited = TemplateSet(library, current.active, {name: found.content})
        return _Chosen(edited, sample.version, event_type)
    if current.resolve(name) is None:
        raise _not_found(name)
    return _Chosen(current, current.version(name), event_type)


def _out(found: TemplateVersion, active: bool) -> TemplateOut:
    content = found.content
    settings = _settings()
    event = settings.events.get(event_type_of(settings, found.name, found.event_type) or "")
    return TemplateOut(
        name=found.name,
        event_type=found.event_type,
        version=found.version,
        variants=content.get("variants") or {},
        locales=content.get("locales") or {},
        author=found.author,
        comment=found.comment,
        created_at=found.created_at,
        draft=found.draft,
        active=active,
        sample_data=event.example if event is not None else None,
    )


def _summary(found: TemplateVersion, active: bool) -> VersionSummary:
    return VersionSummary(
        version=found.version,
        author=found.author,
        comment=found.comment,
        created_at=found.created_at,
        draft=found.draft,
        active=active,
        source=found.source,
    )


def _or_404(name: str, found: TemplateVersion | None) -> TemplateVersion:
    if found is None:
        raise _not_found(name)
    return found


def _not_found(name: str, version: int | None = None) -> HTTPException:
    what = f"template {name!r}" + (f" has no version {version}" if version else " does not exist")
    return HTTPException(status.HTTP_404_NOT_FOUND, what)


def _check_name(name: str) -> None:
    if not name or len(name) > 200 or not all(c.isalnum() or c in "._-" for c in name):
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            [
                {
                    "type": "invalid_name",
                    "loc": ["path", "name"],
                    "msg": "a template name is 1 to 200 letters, digits, '.', '_' or '-'",
                }
            ],
        )


def _check_channel(settings: Settings, channel: str, *also: str) -> None:
    """422 unless ``channel`` is a registered channel (or one of ``also``)."""
    if channel not in settings.channel_classes and channel not in also:
        known = ", ".join([*settings.channel_classes, *also])
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            [
                {
                    "loc": ["body", "channel"],
                    "msg": f"unknown channel {channel!r}; known: {known}",
                    "type": "unknown_channel",
                }
            ],
        )


def _invalid(problems: list[Problem]) -> JSONResponse:
    """422: each problem in FastAPI's ``detail`` shape, and as the ``errors`` list."""
    detail = [
        {
            "type": f"template_{problem.kind}" if problem.variant else "template_error",
            "loc": _where(problem),
            "msg": problem.message,
            "line": problem.line,
            "column": problem.column,
        }
        for problem in problems
    ]
    errors = [problem.as_json() for problem in problems]
    return JSONResponse({"detail": detail, "errors": errors}, status.HTTP_422_UNPROCESSABLE_CONTENT)


def _where(problem: Problem) -> list[str]:
    if not problem.variant:
        # Rendering the saved template failed (the data, not a part): as before the store.
        return ["path", "name"]
    locale = ["locales", problem.locale] if problem.locale else ["variants"]
    return ["body", *locale, problem.variant, problem.part]
