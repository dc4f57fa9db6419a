"""Spec: a template is checked when saved, and every problem comes with where it is."""

from __future__ import annotations

from typing import Any

import jinja2
import pytest

from hub.channels.sms import SmsChannel
from hub.errors import TemplateError
from hub.template_checks import (
    Finding,
    html_findings,
    render_finding,
    required_only,
    sms_finding,
    syntax_findings,
    undefined_findings,
    unsafe_findings,
)
from hub.templates import Templates

NAME = "user.registered/body.txt"


@pytest.fixture(scope="module")
def env() -> jinja2.Environment:
    # The environment templates render in: sandboxed, strict undefined.
    return Templates([]).env


def renderer(env: jinja2.Environment, source: str) -> Any:
    """Render ``source`` as template NAME with ``data``, as the store would."""
    code = env.compile(source, name=NAME, filename=NAME)
    template = env.template_class.from_code(env, code, env.make_globals(None), None)
    return lambda data: template.render(event={"type": "user.registered"}, data=data)


# --- syntax ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "line", "column"),
    [
        pytest.param("Hello\n{{ data.name ", 2, 1, id="unclosed {{ at the end"),
        pytest.param("Hi {% foo %}", 1, 4, id="unknown tag"),
        pytest.param("Hi\n\n  {% if data.vip %}\nVIP\n", 3, 3, id="if without endif: the if"),
        pytest.param("{% for x in y %}{% if a %}{% endif %}\n\n", 1, 1, id="for without endfor"),
        pytest.param("a\n  {{ x }} {{ y + }}\nb", 2, 11, id="the second tag on the line"),
        pytest.param("{{ x }}\n  {{ 'abc }}", 2, 3, id="unclosed string"),
        pytest.param("ok {{ x ) }}", 1, 4, id="unbalanced parenthesis"),
        pytest.param("a {{- x }}\n  {%- if y -%} {{ z | }}", 2, 16, id="whitespace control"),
        pytest.param("{{ x }}\r\n{{ y | }}", 2, 1, id="CRLF line endings"),
        pytest.param("a\n\n {{ x | nosuch }}", 3, 2, id="unknown filter"),
        pytest.param("text {# note", 1, 6, id="unclosed comment"),
    ],
)
def test_a_syntax_error_has_the_line_and_column_of_its_tag(
    env: jinja2.Environment, source: str, line: int, column: int
) -> None:
    [finding] = syntax_findings(env, source, NAME)

    assert (finding.line, finding.column, finding.kind) == (line, column, "syntax")
    assert finding.message


def test_a_valid_template_has_no_syntax_findings(env: jinja2.Environment) -> None:
    source = '{% extends "_layouts/email.html" %}{% block body %}Hi {{ data.name }}{% endblock %}'

    assert syntax_findings(env, source, NAME) == []


def test_the_syntax_message_is_jinjas(env: jinja2.Environment) -> None:
    [finding] = syntax_findings(env, "Hi {% foo %}", NAME)

    assert finding.message == "Encountered unknown tag 'foo'."


# --- template injection ---------------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ cycler.__init__.__globals__ }}",
        "{{ self._TemplateReference__context }}",
        "{{ x._private }}",
        "{{ data['__class__'] }}",
        "{{ data | attr('__class__') }}",
        "{{ data | map(attribute='__class__') | list }}",
        "{{ data.mro }}",
        "{{ joiner.func_globals }}",
        "{{ range(10**9) | list }}",
        "{% for i in range(100000000) %}{{ i }}{% endfor %}",
        "{{ 'a' * 1000000000 }}",
        "{{ ('a' * 1000) * 1000 * 1000 }}",
        "{{ 'a' * 10 ** 9 }}",
        "{{ 2 ** 100000 }}",
        "{{ lipsum(n=100000) }}",
        "{% set x = 'ab' %}{% for i in range(64) %}{% set x = x ~ x %}{% endfor %}{{ x }}",
        "{% set x %}a{% endset %}{% for i in range(64) %}{% set x = x * 2 %}{% endfor %}",
        "{% set ns = namespace(s='a') %}{% for i in range(64) %}"
        "{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
    ],
)
def test_an_injection_payload_is_refused_with_its_line(
    env: jinja2.Environment, payload: str
) -> None:
    findings = unsafe_findings(env, f"Hello,\n\n{payload}\n", NAME)

    assert findings, payload
    assert {finding.kind for finding in findings} == {"unsafe"}
    assert {finding.line for finding in findings} == {3}


@pytest.mark.parametrize(
    ("payload", "explained"),
    [
        ("{{ ''.__class__.__mro__ }}", "`__class__` is private"),
        ("{{ self.foo }}", "`self`"),
        ("{{ cycler.reset }}", "`cycler.reset`"),
        ("{{ range(10**9) | list }}", "range() of 1,000,000,000 items (at most 10,000)"),
        ("{{ 'a' * 1000000000 }}", "1,000,000,000 items (at most 1,000,000)"),
        ("{% for i in y %}{% set x = x ~ x %}{% endfor %}", "`x` is built from itself"),
    ],
)
def test_a_refusal_says_why(env: jinja2.Environment, payload: str, explained: str) -> None:
    messages = [finding.message for finding in unsafe_findings(env, payload, NAME)]

    assert any(explained in message for message in messages), messages


@pytest.mark.parametrize(
    "source",
    [
        "{{ data.user.name | default('there') }}",
        "{% for item in data['items'] %}{{ loop.index }}. {{ item.sku }}{% endfor %}",
        '{% extends "_layouts/email.html" %}{% block body %}Hi{% endblock %}',
        '{% include "_partials/footer.txt" %}',
        "{% for i in range(10) %}{{ cycler('odd', 'even').next() }}{% endfor %}",
        "{% set ns = namespace(total=0) %}{% for i in data.items %}"
        "{% set ns.total = ns.total + i.price %}{% endfor %}{{ ns.total }}",
        "{% set line = '' %}{% for i in data.items %}{% set line = line ~ i.sku %}{% endfor %}",
        "{{ '-' * 40 }}\n{{ data.count * 3 }} {{ 2 ** 10 }}",
        "{{ range(0, 10**9, 10**6) | list | length }}",
        "{{ data.name | e }} {{ event.type }} {{ data.items | map(attribute='sku') | join }}",
    ],
)
def test_an_ordinary_template_is_accepted(env: jinja2.Environment, source: str) -> None:
    assert unsafe_findings(env, source, NAME) == []


def test_an_enormous_constant_expression_is_judged_without_being_computed(
    env: jinja2.Environment,
) -> None:
    # 10**10**10 would take the process's memory if evaluated; ** groups left to right in Jinja.
    findings = unsafe_findings(env, "{{ 'a' * (10 ** 1000) ** 1000 }}", NAME)

    assert findings and all(finding.kind == "unsafe" for finding in findings)


def test_a_source_that_does_not_parse_is_left_to_the_syntax_check(
    env: jinja2.Environment,
) -> None:
    assert unsafe_findings(env, "{{ ''.__class__ ", NAME) == []


# --- rendering with the event's sample data -------------------------------------

SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["name", "user", "items"],
    "properties": {
        "name": {"type": "string"},
        "plan": {"type": "string"},
        "user": {
            "type": "object",
            "required": ["email"],
            "properties": {"email": {"type": "string"}, "phone": {"type": "string"}},
        },
        "items": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["sku"],
                "properties": {"sku": {"type": "string"}, "note": {"type": "string"}},
            },
        },
        "extra": {"type": "object"},
    },
}
EXAMPLE: dict[str, Any] = {
    "name": "Ada",
    "plan": "pro",
    "user": {"email": "ada@example.com", "phone": "+15550100"},
    "items": [{"sku": "A1", "note": "gift"}, {"sku": "B2"}],
    "extra": {"anything": 1},
}


def test_required_only_keeps_what_the_schema_requires_at_every_depth() -> None:
    assert required_only(EXAMPLE, SCHEMA) == {
        "name": "Ada",
        "user": {"email": "ada@example.com"},
        "items": [{"sku": "A1"}, {"sku": "B2"}],
    }


def test_required_only_keeps_an_object_whose_schema_says_nothing_of_its_keys() -> None:
    schema = {"type": "object", "required": ["extra"], "properties": {"extra": {}}}

    assert required_only({"extra": {"a": 1}, "b": 2}, schema) == {"extra": {"a": 1}}


def test_required_only_does_not_change_the_example() -> None:
    example = {"user": {"email": "a@example.com", "phone": "1"}}

    required_only(example, {"required": ["user"], "properties": {"user": {"required": []}}})

    assert example == {"user": {"email": "a@example.com", "phone": "1"}}


def test_a_template_using_required_fields_and_guarded_optional_ones_passes(
    env: jinja2.Environment,
) -> None:
    source = (
        "Hi {{ data.name }} <{{ data.user.email }}>\n"
        "{% if data.plan is defined %}Plan: {{ data.plan }}{% endif %}\n"
        "Phone: {{ data.user.phone | default('none') }}\n"
        "{% for item in data['items'] %}{{ item.sku }} {{ item.note | default('') }}{% endfor %}"
    )

    assert undefined_findings(renderer(env, source), NAME, EXAMPLE, SCHEMA) == []


def test_a_variable_outside_the_event_is_an_error_at_its_line(env: jinja2.Environment) -> None:
    render = renderer(env, "Hi {{ data.name }}\n\n{{ data.plna }}")

    [finding] = undefined_findings(render, NAME, EXAMPLE, SCHEMA)

    assert finding == Finding("'dict object' has no attribute 'plna'", 3, kind="undefined")


def test_a_filter_on_a_missing_field_is_an_error(env: jinja2.Environment) -> None:
    render = renderer(env, "{{ data.nickname | upper }}")

    [finding] = undefined_findings(render, NAME, EXAMPLE, SCHEMA)

    assert (finding.kind, finding.line) == ("undefined", 1)


def test_an_unguarded_optional_field_is_refused_with_a_hint(env: jinja2.Environment) -> None:
    render = renderer(env, "Hi {{ data.name }},\nyour plan: {{ data.plan | upper }}")

    [finding] = undefined_findings(render, NAME, EXAMPLE, SCHEMA)

    assert finding == Finding(
        "data.plan is optional in the event schema: guard it with `is defined` or `| default`",
        2,
        kind="undefined",
    )


def test_an_unguarded_optional_field_deep_in_an_array_is_found(env: jinja2.Environment) -> None:
    render = renderer(env, "{% for item in data['items'] %}\n{{ item.note }}\n{% endfor %}")

    [finding] = undefined_findings(render, NAME, EXAMPLE, SCHEMA)

    assert finding.line == 2
    assert finding.message.startswith("data.items[].note is optional")


def test_the_same_failure_in_both_renders_is_reported_once(env: jinja2.Environment) -> None:
    render = renderer(env, "{{ data.nope }}{{ data.plan }}")

    assert len(undefined_findings(render, NAME, EXAMPLE, SCHEMA)) == 1


def test_a_failure_wrapped_by_the_renderer_keeps_its_template_line(
    env: jinja2.Environment,
) -> None:
    render = renderer(env, "one\ntwo {{ 1 + 'a' }}")
    try:
        try:
            render({})
        except Exception as exc:
            raise TemplateError(NAME, "could not render") from exc
    except TemplateError as wrapped:
        finding = render_finding(wrapped, NAME)

    assert (finding.line, finding.kind) == (2, "render")
    assert finding.message.startswith("TypeError: ")


def test_the_sandbox_refusing_at_render_time_is_an_unsafe_finding(
    env: jinja2.Environment,
) -> None:
    # Built at render time, so no static check can see it.
    render = renderer(env, "\n{{ data.name | attr('__cla' ~ 'ss__') }}")
    try:
        render(EXAMPLE)
    except jinja2.exceptions.SecurityError as exc:
        finding = render_finding(exc, NAME)

    assert (finding.line, finding.kind) == (2, "unsafe")


# --- HTML balance ---------------------------------------------------------------


def test_balanced_html_with_void_elements_and_optional_end_tags_passes() -> None:
    source = (
        "<html><head><meta charset='utf-8'><link rel=stylesheet href=x.css></head><body>\n"
        "<p>One<br>two<img src='{{ data.logo }}' alt=''>\n<p>Three<hr>\n"
        "<ul><li>a<li>b</ul><table><tr><td>1<td>2<tr><td>3</table>\n"
        '{% if data.vip %}<div class="vip">{{ data.name }}</div>{% endif %}\n'
        "<input type=checkbox><br/></body></html>"
    )

    assert html_findings(source) == []


def test_an_unclosed_element_is_flagged_where_it_opens() -> None:
    source = "<div>\n  <table><tr><td>{{ data.name }}</td></tr>\n  <a href='{{ url }}'>go\n</div>"

    findings = html_findings(source)

    assert findings == [
        Finding("<a> is never closed", 3, 3, "html"),
        Finding("<table> is never closed", 2, 3, "html"),
    ]


def test_an_element_never_closed_by_the_end_is_flagged() -> None:
    assert html_findings("<p>hi</p>\n{{ x }} <div class='a'>") == [
        Finding("<div> is never closed", 2, 9, "html")
    ]


def test_a_stray_end_tag_is_flagged() -> None:
    assert html_findings("<p>hi</p>\n{% if x %}</div>{% endif %}") == [
        Finding("</div> closes no open <div>", 2, 11, "html")
    ]


def test_jinja_tags_do_not_count_as_html() -> None:
    assert html_findings("{{ '<div>' }}{% set x = '<table>' %}{# <a> #}") == []


# --- SMS ------------------------------------------------------------------------


def test_an_sms_within_its_segments_passes() -> None:
    assert sms_finding(SmsChannel.describe("Your code is 1234"), max_segments=1) is None


def test_an_sms_over_its_segments_is_refused_with_count_encoding_and_limit() -> None:
    finding = sms_finding(SmsChannel.describe("Łódź " * 30), max_segments=2)

    assert finding == Finding(
        "3 SMS segments (UCS-2), more than channels.sms.max_segments = 2", kind="sms_segments"
    )
