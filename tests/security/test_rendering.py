"""Spec: whatever a template or its data does while rendering, it fails that notification alone.

Given a running hub whose ``test.render`` event routes to one well-behaved
template and, per case, one hostile template in the same batch: a template
that raises anything (OverflowError, TypeError, RecursionError, a sandbox
SecurityError) fails its own notification with reason ``template_error``,
its batch-mate is sent, and the hub keeps serving. Event data is never
evaluated as a template. A ``when`` or ``to`` expression that raises skips its
subscription, not the event.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hub.channels.email import EmailChannel
from hub.errors import TemplateError
from hub.templates import Templates, TemplateSet, context_for, from_files
from tests.conftest import Stack
from tests.security.hostile_hub import hostile_stack
from tests.smtp_sink import SmtpSink
from tests.test_publish_to_email import address, user

HOSTILE_TEMPLATES = {
    "range": "{% for i in range(10**9) %}x{% endfor %}",
    "type": '{{ 1 + "a" }}',
    "zero": "{{ 1 / 0 }}",
    "recursion": "{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}",
    "class": "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "globals": "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
    "data-class": "{{ data.__class__.__init__.__globals__ }}",
    "format": "{{ '{0.__class__}'.format(data) }}",
    "repeat": '{{ "a" * 10**9 }}',
    "power": "{{ 10 ** 100000 }}",
}
# Renders, but larger than delivery.max_message_bytes (1 MiB).
OVERSIZED = {"huge": '{{ "x" * 900000 }}{{ "y" * 900000 }}'}

SUBSCRIPTIONS = "".join(
    f"""
[[subscriptions]]
name = "render-{case}"
event = "test.render"
channel = "email"
to = "{{{{ data.to }}}}"
template = "ssti-{case}"
when = "data.case is defined and data.case == '{case}'"
"""
    for case in [*HOSTILE_TEMPLATES, *OVERSIZED]
)

SETTINGS = (
    """
[events."test.render"]
description = "One well-behaved notification, and one per hostile template named by data.case."

[[subscriptions]]
name = "render-ok"
event = "test.render"
channel = "email"
to = "{{ data.to }}"
template = "render-ok"

[[subscriptions]]
name = "render-bad-when"
event = "test.render"
channel = "email"
to = "{{ data.to }}"
template = "render-ok"
when = "data.n is defined and data.n + 'a'"

[[subscriptions]]
name = "render-bad-to"
event = "test.render"
channel = "email"
to = "{{ data.to ~ (1 / data.zero) }}"
template = "render-ok"
when = "data.zero is defined"
"""
    + SUBSCRIPTIONS
)

TEMPLATES = {
    "render-ok": {"subject.txt": "Hi {{ data.name }}", "body.txt": "Hello {{ data.name }}."},
    **{
        f"ssti-{case}": {"subject.txt": "Hostile", "body.txt": source}
        for case, source in (HOSTILE_TEMPLATES | OVERSIZED).items()
    },
}


@pytest.fixture(scope="module")
def hub(
    tmp_path_factory: pytest.TempPathFactory, broker_url: str, smtp: SmtpSink
) -> Iterator[Stack]:
    home = tmp_path_factory.mktemp("hostile-rendering")
    with hostile_stack(home, broker_url, smtp, SETTINGS, TEMPLATES) as stack:
        yield stack


def by_subscription(event: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {n["subscription"]: n for n in event["notifications"]}


@pytest.mark.parametrize("case", list(HOSTILE_TEMPLATES))
def test_a_template_that_raises_fails_its_notification_alone_with_template_error(
    hub: Stack, smtp: SmtpSink, case: str
) -> None:
    to = address()

    event = hub.settled(hub.publish("test.render", {"to": to, "name": "Ada", "case": case}))

    notifications = by_subscription(event)
    assert set(notifications) == {"render-ok", f"render-{case}"}
    hostile = notifications[f"render-{case}"]
    assert hostile["status"] == "failed"
    assert hostile["last_error"].startswith("template_error: ")
    assert f"ssti-{case}" in hostile["last_error"]
    assert hostile["attempts"] == 1
    assert notifications["render-ok"]["status"] == "sent"
    assert [m["Subject"] for m in smtp.to(to)] == ["Hi Ada"]


def test_a_message_rendered_larger_than_max_message_bytes_fails_alone_as_limit_exceeded(
    hub: Stack, smtp: SmtpSink
) -> None:
    to = address()

    event = hub.settled(hub.publish("test.render", {"to": to, "name": "Ada", "case": "huge"}))

    notifications = by_subscription(event)
    huge = notifications["render-huge"]
    assert huge["status"] == "failed"
    assert huge["last_error"].startswith("limit_exceeded: ")
    assert "delivery.max_message_bytes" in huge["last_error"]
    assert notifications["render-ok"]["status"] == "sent"
    assert [m["Subject"] for m in smtp.to(to)] == ["Hi Ada"]


def test_a_when_or_to_expression_that_raises_skips_its_subscription_not_the_event(
    hub: Stack, smtp: SmtpSink
) -> None:
    to = address()

    event_id = hub.publish("test.render", {"to": to, "name": "Ada", "n": 1, "zero": 0})
    event = hub.settled(event_id)

    assert event["status"] == "routed"
    assert set(by_subscription(event)) == {"render-ok"}
    assert [m["Subject"] for m in smtp.to(to)] == ["Hi Ada"]


@pytest.mark.parametrize(
    "payload",
    [
        "{{ 7 * 7 }}",
        "{% for i in range(10**9) %}x{% endfor %}",
        "{{ ''.__class__.__mro__ }}",
        "{% raw %}",
        "${7*7} #{7*7} <%= 7*7 %>",
    ],
    ids=["expression", "loop", "class", "raw", "other-engines"],
)
def test_template_syntax_in_event_data_is_sent_as_text_never_evaluated(
    hub: Stack, smtp: SmtpSink, payload: str
) -> None:
    to = address()

    event = hub.settled(hub.publish("test.render", {"to": to, "name": payload}))

    assert [n["status"] for n in event["notifications"]] == ["sent"]
    [email] = smtp.to(to)
    assert email["Subject"] == f"Hi {payload}"
    assert email.get_body(("plain",)).get_content().strip() == f"Hello {payload}."


def test_after_hostile_templates_a_normal_event_is_delivered_once(
    hub: Stack, smtp: SmtpSink
) -> None:
    for case in HOSTILE_TEMPLATES:
        hub.publish("test.render", {"to": address(), "name": "Ada", "case": case})
    to = address()

    event = hub.settled(hub.publish("user.registered", user(to)))

    assert [n["status"] for n in event["notifications"]] == ["sent"]
    assert len(smtp.to(to)) == 1


# ---- The template engine on its own ----


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> TemplateSet:
    folder: Path = tmp_path_factory.mktemp("ssti")
    for name, parts in TEMPLATES.items():
        (folder / name).mkdir()
        for part, source in parts.items():
            (folder / name / part).write_text(source)
    return from_files([folder])


@pytest.fixture(scope="module")
def templates() -> Templates:
    return Templates()


def _email(files: TemplateSet, name: str, data: dict[str, Any]) -> None:
    files.render(name, EmailChannel.variant, context_for("evt_1", "test.render", data))


@pytest.mark.parametrize("case", list(HOSTILE_TEMPLATES))
def test_any_exception_while_rendering_is_a_template_error_naming_template_and_part(
    files: TemplateSet, case: str
) -> None:
    with pytest.raises(TemplateError, match=rf"ssti-{case}.*text.txt"):
        _email(files, f"ssti-{case}", {"to": "a@example.com"})


@pytest.mark.parametrize(
    ("source", "needle"),
    [("{{ data.n + 'a' }}", "TypeError"), ("{{ data.n / 0 }}", "ZeroDivisionError")],
)
def test_any_exception_in_an_expression_is_a_template_error(
    templates: Templates, source: str, needle: str
) -> None:
    context = {"data": {"n": 1}}

    with pytest.raises(TemplateError, match=needle):
        templates.expression(source, context)
    with pytest.raises(TemplateError, match=needle):
        templates.condition(source.strip("{} "), context)


@pytest.mark.parametrize("to", ["o'brien@example.com", "a&b+c@example.com", "<x>@example.com"])
def test_a_to_expression_is_rendered_without_html_escaping(templates: Templates, to: str) -> None:
    assert templates.expression("{{ data.email }}", {"data": {"email": to}}) == to


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.dictionaries(st.sampled_from(["name", "email", "to", "case"]), _json))
def test_random_data_renders_or_is_a_template_error_never_anything_else(
    files: TemplateSet, data: dict[str, Any]
) -> None:
    for name in TEMPLATES:
        with contextlib.suppress(TemplateError):
            _email(files, name, data)
