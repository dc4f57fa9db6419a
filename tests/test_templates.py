"""Spec: templates render strictly and can be previewed with sample data, SMS with its segments."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from hub.channels.base import Channel
from hub.channels.email import EmailChannel
from hub.channels.sms import SmsChannel
from hub.errors import TemplateError
from hub.settings import bundled_path
from hub.templates import Rendered, TemplateSet, context_for, from_files
from tests.conftest import Stack, run_hub

ADA = {"user_id": "1", "email": "ada@example.com", "name": "Ada"}


@pytest.fixture(scope="module")
def templates() -> TemplateSet:
    return from_files([bundled_path("templates")])


def _preview(
    templates: TemplateSet, name: str, data: dict[str, Any], channel: type[Channel[Any]]
) -> tuple[Rendered, dict[str, str | int]]:
    rendered = templates.render(
        name, channel.variant, context_for("evt_1", "user.registered", data)
    )
    return rendered, channel.describe(rendered.text)


def test_email_preview_has_subject_text_and_escaped_html(templates: TemplateSet) -> None:
    rendered, details = _preview(
        templates, "user.registered", {**ADA, "name": "<b>Ada</b>"}, EmailChannel
    )

    assert rendered.subject == "Welcome, <b>Ada</b>!"
    assert "Hi <b>Ada</b>," in rendered.text
    assert rendered.html is not None and "&lt;b&gt;Ada&lt;/b&gt;" in rendered.html
    assert details == {}


@pytest.mark.parametrize(
    ("name", "encoding", "segments"),
    [("Ada", "GSM-7", 1), ("Ada Łukasiewicz", "UCS-2", 1), ("A" * 200, "GSM-7", 2)],
)
def test_sms_preview_counts_segments(
    templates: TemplateSet, name: str, encoding: str, segments: int
) -> None:
    rendered, details = _preview(
        templates, "user.registered.sms", {**ADA, "name": name}, SmsChannel
    )

    assert rendered.text == f"Welcome, {name}! Your account ada@example.com is ready."
    assert (details["encoding"], details["segments"]) == (encoding, segments)


def test_a_missing_variable_is_a_template_error_naming_it(templates: TemplateSet) -> None:
    with pytest.raises(TemplateError, match=r"user.registered.*subject.txt.*no attribute 'name'"):
        _preview(templates, "user.registered", {"email": "a@b.c"}, EmailChannel)


def test_an_unknown_template_is_a_template_error(templates: TemplateSet) -> None:
    with pytest.raises(TemplateError, match="'nope': no such template"):
        _preview(templates, "nope", {}, SmsChannel)


def test_the_api_previews_an_sms_with_its_segment_count(stack: Stack) -> None:
    with stack.client() as http:
        response = http.post(
            "/v1/templates/user.registered.sms/preview",
            json={"channel": "sms", "event_type": "user.registered", "data": ADA},
        )

    assert response.status_code == 200
    body = response.json()
    assert body["text"] == "Welcome, Ada! Your account ada@example.com is ready."
    assert body["details"] == {"encoding": "GSM-7", "units": 52, "segments": 1}


def test_the_api_answers_422_for_a_template_error(stack: Stack) -> None:
    with stack.client() as http:
        response = http.post(
            "/v1/templates/user.registered/preview", json={"channel": "email", "data": {}}
        )

    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["loc"] == ["path", "name"] and "no attribute" in error["msg"]


def test_the_cli_previews_an_sms_with_its_segment_count(stack: Stack) -> None:
    result = run_hub(
        stack,
        "templates",
        "preview",
        "user.registered.sms",
        "--channel",
        "sms",
        "--data",
        '{"name": "Ada", "email": "a@b.c"}',
    )

    assert result.returncode == 0, result.stderr
    assert "Welcome, Ada! Your account a@b.c is ready." in result.stdout
    assert "segments: 1" in result.stdout


def test_the_cli_lists_and_shows_the_outbox(stack: Stack) -> None:
    # The test stack has no Slack webhook, so task.failed alerts land in Slack's outbox.
    event = stack.settled(
        stack.publish(
            "task.failed",
            {"service": "s", "task_name": "t", "task_id": "1", "exception": "E", "message": "m"},
        )
    )
    [notification] = event["notifications"]

    listed = run_hub(stack, "outbox", "--channel", "slack")
    shown = run_hub(stack, "outbox", "--channel", "slack", "--show")

    assert listed.returncode == shown.returncode == 0
    assert notification["id"] in listed.stdout
    assert '"text"' in shown.stdout


def test_a_template_folder_is_used_whole_never_mixed_with_the_bundled_one(
    tmp_path: Path,
) -> None:
    # Given a user folder overriding the welcome email's subject and text, but not its HTML
    own = tmp_path / "user.registered"
    own.mkdir()
    (own / "subject.txt").write_text("Hello {{ data.name }}")
    (own / "body.txt").write_text("Plain welcome, {{ data.name }}.")
    templates = from_files([tmp_path, bundled_path("templates")])

    rendered = templates.render(
        "user.registered", "email", {"data": {"name": "Ada", "email": "a@example.com"}}
    )

    # Then the bundled HTML is not sent beside the new text
    assert (rendered.subject, rendered.text, rendered.html) == (
        "Hello Ada",
        "Plain welcome, Ada.",
        None,
    )


def test_a_folder_the_user_does_not_override_still_comes_from_the_bundle(tmp_path: Path) -> None:
    templates = from_files([tmp_path, bundled_path("templates")])

    rendered = templates.render(
        "user.registered",
        "email",
        context_for(
            "evt_1", "user.registered", {"name": "Ada", "email": "a@example.com", "user_id": "u1"}
        ),
    )

    assert rendered.html is not None


def test_an_sms_of_a_template_without_an_sms_variant_sends_its_alert_body(
    templates: TemplateSet,
) -> None:
    # An escalation step pages by SMS with the failure alert's own template.
    context = context_for(
        "evt_1",
        "task.failed",
        {
            "service": "billing",
            "task_name": "charge",
            "task_id": "t1",
            "exception": "E",
            "message": "m",
        },
    )

    sms = templates.render("task.failed", "sms", context)
    alert = templates.render("task.failed", "alert", context)

    assert sms.text == alert.text and "charge failed in billing" in sms.text
    assert sms.subject is None
    assert "sms" in (templates.variants("task.failed") or set())
