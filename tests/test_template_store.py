"""Spec: templates are edited through the API: validated on save, versioned, previewed, test-sent.

A save is checked before anything is stored: syntax errors come back with
variant, part, line and column; variables outside the event type's schema,
optional fields used unguarded, SSTI payloads and SMS over
``channels.sms.max_segments`` are refused; unbalanced HTML is a warning.
Every worker renders the version active when it claims a notification, and
the notification records it. The files in ``templates/`` are the seed: an edit
made at run time wins until its file changes again.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from hub.store.db import migrate, session
from hub.store.models import Notification
from hub.store.templates import add_version, template
from hub.templates import RETIRED_KEPT, Library, sync_files
from tests.conftest import Stack, other_redis_db, running_stack
from tests.smtp_sink import SmtpSink
from tests.test_publish_to_email import address, user
from tests.test_subscriptions import subscribed

WELCOME = {
    "email": {
        "subject": "Welcome, {{ data.name }}!",
        "text": "Hi {{ data.name }},\nyour account {{ data.email }} is ready.",
        "html": '{% extends "_layouts/email.html" %}{% block body %}'
        "<p>Hi <b>{{ data.name }}</b></p>{% endblock %}",
    },
    "sms": {"body": "Welcome, {{ data.name }}!"},
}


@pytest.fixture(scope="module")
def editor(
    tmp_path_factory: pytest.TempPathFactory, broker_url: str, smtp: SmtpSink
) -> Iterator[Stack]:
    """A hub with four worker processes: every one must switch versions at once."""
    home = tmp_path_factory.mktemp("template-store")
    # A broker database of its own: the session stack's workers must not take its tasks.
    broker = other_redis_db(broker_url)
    with running_stack(home, broker, smtp, worker_args=("--concurrency", "4")) as stack:
        yield stack


def _name() -> str:
    return f"welcome-{uuid.uuid4().hex[:8]}"


def _put(stack: Stack, name: str, **body: Any) -> Any:
    with stack.client() as http:
        return http.put(f"/v1/templates/{name}", json={"event_type": "user.registered", **body})


def _saved(stack: Stack, name: str, **body: Any) -> int:
    response = _put(stack, name, **body)
    assert response.status_code == 200, response.text
    return int(response.json()["version"])


def _get(stack: Stack, path: str, **params: Any) -> Any:
    with stack.client() as http:
        response = http.get(path, params=params)
    assert response.status_code == 200, response.text
    return response.json()


def _post(stack: Stack, path: str, body: dict[str, Any]) -> Any:
    with stack.client() as http:
        return http.post(path, json=body)


def test_a_save_makes_a_version_and_a_partial_put_merges_by_part(editor: Stack) -> None:
    name = _name()
    assert _saved(editor, name, variants=WELCOME, comment="first") == 1

    assert _saved(editor, name, variants={"email": {"subject": "Hello {{ data.name }}"}}) == 2
    assert _saved(editor, name, variants={"email": {"html": None}}) == 3

    active = _get(editor, f"/v1/templates/{name}")
    assert active["version"] == 3 and active["event_type"] == "user.registered"
    assert active["variants"]["email"] == {
        "subject": "Hello {{ data.name }}",
        "text": WELCOME["email"]["text"],
    }
    assert active["variants"]["sms"] == WELCOME["sms"]
    listed = _get(editor, "/v1/templates", limit=1000)["items"]
    assert {"name": name, "version": 3} in [
        {"name": t["name"], "version": t["version"]} for t in listed
    ]


def test_a_syntax_error_is_refused_at_its_line_and_column_and_nothing_is_saved(
    editor: Stack,
) -> None:
    name = _name()
    _saved(editor, name, variants=WELCOME)

    response = _put(editor, name, variants={"email": {"text": "Hi,\nthere {{ data.name "}})

    assert response.status_code == 422
    [error] = response.json()["errors"]
    assert (error["variant"], error["part"], error["line"], error["column"]) == (
        "email",
        "text",
        2,
        7,
    )
    assert response.json()["detail"][0]["loc"] == ["body", "variants", "email", "text"]
    assert [v["version"] for v in _get(editor, f"/v1/templates/{name}/versions")["items"]] == [1]


@pytest.mark.parametrize(
    ("source", "needle"),
    [
        ("Your plan: {{ data.plan }}", "plan"),
        ("Call {{ data.phone }}", "optional"),
        ("{{ data.name | upper | nosuchfilter }}", "nosuchfilter"),
    ],
)
def test_variables_are_checked_against_the_event_schema_on_save(
    editor: Stack, source: str, needle: str
) -> None:
    response = _put(editor, _name(), variants={"sms": {"body": source}})

    assert response.status_code == 422, response.text
    [error] = response.json()["errors"]
    assert needle in error["message"] and error["line"] == 1


def test_an_optional_field_guarded_with_is_defined_or_default_is_accepted(editor: Stack) -> None:
    body = (
        "{% if data.phone is defined %}{{ data.phone }}{% endif %}"
        " {{ data.locale | default('en') }}"
    )

    assert _saved(editor, _name(), variants={"sms": {"body": body}}) == 1


@pytest.mark.parametrize(
    "payload",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ cycler.__init__.__globals__ }}",
        "{{ self._TemplateReference__context }}",
        "{{ data._private }}",
        "{{ range(10**9) | list }}",
        "{% for i in range(100000000) %}x{% endfor %}",
        "{{ 'a' * 1000000000 }}",
        "{% set s = namespace(v='a') %}"
        "{% for i in range(40) %}{% set s.v = s.v ~ s.v %}{% endfor %}",
    ],
)
def test_every_ssti_payload_is_refused_at_save(editor: Stack, payload: str) -> None:
    response = _put(editor, _name(), variants={"sms": {"body": payload}})

    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["line"] == 1


def test_unbalanced_html_saves_with_a_warning_at_its_line(editor: Stack) -> None:
    html = "<div>\n<p>Hi {{ data.name }}</p>\n<table><tr><td>x</td></tr>\n</div>"
    response = _put(editor, _name(), variants={"email": {"subject": "Hi", "html": html}})

    assert response.status_code == 200, response.text
    [warning] = response.json()["warnings"]
    assert warning["part"] == "html" and warning["line"] == 3 and "table" in warning["message"]


def test_an_sms_over_max_segments_is_refused_with_its_count(editor: Stack) -> None:
    response = _put(editor, _name(), variants={"sms": {"body": "{{ data.name }} " + "x" * 480}})

    assert response.status_code == 422
    assert "4 SMS segments" in response.json()["errors"][0]["message"]


def test_preview_uses_the_example_data_picks_the_nearest_locale_and_shows_unsaved_edits(
    editor: Stack,
) -> None:
    name = _name()
    french = {
        "email": {"subject": "Bienvenue, {{ data.name }} !", "text": "Bonjour {{ data.name }}"}
    }
    _saved(editor, name, variants=WELCOME, locales={"fr": french})

    default = _post(editor, f"/v1/templates/{name}/preview", {"channel": "email"}).json()
    canadian = _post(
        editor, f"/v1/templates/{name}/preview", {"channel": "email", "locale": "fr-CA"}
    ).json()
    sms = _post(editor, f"/v1/templates/{name}/preview", {"channel": "sms"}).json()
    unsaved = _post(
        editor,
        f"/v1/templates/{name}/preview",
        {"channel": "email", "variants": {"email": {"subject": "Draft for {{ data.email }}"}}},
    ).json()
    broken = _post(
        editor,
        f"/v1/templates/{name}/preview",
        {"channel": "email", "variants": {"email": {"subject": "{% if %}"}}},
    )

    assert default["subject"] == "Welcome, Ada Lovelace!" and default["version"] == 1
    assert 'style="' in default["html"] and "<b>Ada Lovelace</b>" in default["html"]
    assert canadian["subject"] == "Bienvenue, Ada Lovelace !"
    assert canadian["html"] is None and canadian["text"] == "Bonjour Ada Lovelace"
    assert sms["details"]["segments"] == 1 and sms["details"]["encoding"] == "GSM-7"
    assert unsaved["subject"] == "Draft for ada@example.com" and unsaved["version"] is None
    assert broken.status_code == 422 and broken.json()["errors"][0]["line"] == 1
    assert _get(editor, f"/v1/templates/{name}")["version"] == 1


def test_an_email_without_a_text_part_gets_one_made_from_its_html(editor: Stack) -> None:
    name = _name()
    html = '<h1>Hi {{ data.name }}</h1><p>See <a href="https://example.com/x">your account</a></p>'
    _saved(editor, name, variants={"email": {"subject": "Hi", "html": html}})

    shown = _post(editor, f"/v1/templates/{name}/preview", {"channel": "email"}).json()

    assert "Hi Ada Lovelace" in shown["text"]
    assert "your account (https://example.com/x)" in shown["text"]


def test_versions_diff_and_rollback(editor: Stack) -> None:
    name = _name()
    _saved(editor, name, variants=WELCOME, comment="first")
    _saved(editor, name, variants={"sms": {"body": "Hello {{ data.name }}"}}, comment="shorter")

    versions = _get(editor, f"/v1/templates/{name}/versions")["items"]
    diff = _get(editor, f"/v1/templates/{name}/diff", **{"from": 1, "to": 2})["diff"]
    rolled = _post(editor, f"/v1/templates/{name}/rollback", {"version": 1})

    assert [(v["version"], v["comment"], v["active"]) for v in versions] == [
        (2, "shorter", True),
        (1, "first", False),
    ]
    assert "-Welcome, {{ data.name }}!" in diff and "+Hello {{ data.name }}" in diff
    assert f"--- {name}@1/sms/body" in diff
    assert rolled.status_code == 200 and rolled.json()["version"] == 3
    active = _get(editor, f"/v1/templates/{name}")
    assert active["version"] == 3 and active["variants"]["sms"] == WELCOME["sms"]
    assert _get(editor, f"/v1/templates/{name}/versions/2")["variants"]["sms"]["body"] == (
        "Hello {{ data.name }}"
    )


def test_a_draft_is_previewed_without_going_live_until_published(editor: Stack) -> None:
    name = _name()
    _saved(editor, name, variants=WELCOME)
    draft = _saved(editor, name, variants={"sms": {"body": "Soon, {{ data.name }}"}}, draft=True)

    live = _post(editor, f"/v1/templates/{name}/preview", {"channel": "sms"}).json()
    previewed = _post(
        editor, f"/v1/templates/{name}/preview", {"channel": "sms", "version": draft}
    ).json()
    published = _post(editor, f"/v1/templates/{name}/publish", {"version": draft})

    assert live["text"] == "Welcome, Ada Lovelace!"
    assert previewed["text"] == "Soon, Ada Lovelace"
    assert published.status_code == 200
    assert _get(editor, f"/v1/templates/{name}")["version"] == draft


def test_a_new_template_cannot_start_as_a_draft(editor: Stack) -> None:
    name = _name()

    response = _put(editor, name, variants=WELCOME, draft=True)

    assert response.status_code == 422
    assert "cannot be a draft" in response.json()["errors"][0]["message"]
    with editor.client() as http:
        assert http.get(f"/v1/templates/{name}").status_code == 404


def test_a_test_send_goes_through_the_real_channel_marked_as_a_test(
    editor: Stack, smtp: SmtpSink
) -> None:
    name, to = _name(), address("editor")
    _saved(editor, name, variants=WELCOME)

    response = _post(editor, f"/v1/templates/{name}/test", {"channel": "email", "to": to})

    assert response.status_code == 200, response.text
    smtp.wait_for(lambda sink: bool(sink.to(to)))
    [message] = smtp.to(to)
    assert message["Subject"] == "[TEST] Welcome, Ada Lovelace!"


def test_writes_need_the_admin_scope(editor: Stack) -> None:
    from hub import keys

    reader = keys.create_key(editor.database_url, "reader", scopes=("read",))
    with editor.client(reader) as http:
        response = http.put("/v1/templates/nope", json={"variants": WELCOME})

    assert response.status_code == 403


def test_after_a_save_every_worker_renders_the_new_version(editor: Stack, smtp: SmtpSink) -> None:
    name = _name()
    _saved(editor, name, variants={"email": {"subject": "Old {{ data.name }}", "text": "old"}})
    definition = {
        "name": f"sub-{name}",
        "event": "user.registered",
        "channel": "email",
        # Not data.email itself: the bundled welcome subscription mails that.
        "to": "tmpl.{{ data.email }}",
        "template": name,
        "filter": {"data.name": {"eq": name}},
    }
    with subscribed(editor, definition):
        # Every worker process compiles the old version first.
        warm = [address("warm") for _ in range(20)]
        for to in warm:
            editor.publish("user.registered", user(to, name=name))
        smtp.wait_for(lambda sink: all(sink.to(f"tmpl.{to}") for to in warm), 60)

        version = _saved(editor, name, variants={"email": {"subject": "New {{ data.name }}"}})
        after = [address("after") for _ in range(50)]
        events = [editor.publish("user.registered", user(to, name=name)) for to in after]
        smtp.wait_for(lambda sink: all(sink.to(f"tmpl.{to}") for to in after), 60)

    subjects = {to: smtp.to(f"tmpl.{to}")[0]["Subject"] for to in after}
    assert set(subjects.values()) == {f"New {name}"}
    with session(editor.database_url) as db:
        versions = db.scalars(
            select(Notification.template_version).where(
                Notification.event_id.in_(events), Notification.subscription == f"sub-{name}"
            )
        ).all()
    assert sorted(versions) == [version] * 50


def test_files_seed_the_store_and_a_run_time_edit_wins_until_the_file_changes(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'hub.db'}"
    migrate(url)
    folder = tmp_path / "templates" / "hello"
    folder.mkdir(parents=True)
    (folder / "subject.txt").write_text("Hello from the file")
    (folder / "body.txt").write_text("Body")
    dirs = [tmp_path / "templates"]

    assert sync_files(url, dirs) == ["hello"]
    with session(url) as db:
        add_version(
            db,
            "hello",
            {"variants": {"email": {"subject": "Edited", "text": "Body"}}, "locales": {}},
            event_type=None,
            author="ada",
            comment="edit",
            draft=False,
            source="api",
        )
    assert sync_files(url, dirs) == []
    with session(url) as db:
        assert _subject(db) == "Edited"

    (folder / "subject.txt").write_text("Hello again from the file")
    assert sync_files(url, dirs) == ["hello"]
    with session(url) as db:
        found = template(db, "hello")
        assert found is not None and found.active_version == 3
        assert _subject(db) == "Hello again from the file"


def _subject(db: Any) -> str | None:
    rendered = Library().load(db).render("hello", "email", {"data": {}})
    return rendered.subject


def test_an_sms_folder_is_the_sms_variant_of_its_template_and_an_alert_reuses_subject_and_body(
    editor: Stack,
) -> None:
    welcome = _get(editor, "/v1/templates/user.registered")

    assert welcome["variants"]["sms"]["body"].startswith("Welcome, {{ data.name }}!")
    assert welcome["variants"]["alert"]["title"] == welcome["variants"]["email"]["subject"]
    assert welcome["variants"]["alert"]["body"] == welcome["variants"]["email"]["text"]
    assert welcome["sample_data"]["name"] == "Ada Lovelace"
    alert = _post(editor, "/v1/templates/user.registered/preview", {"channel": "alert"}).json()
    assert alert["subject"] == "Welcome, Ada Lovelace!" and alert["html"] is None


def test_a_long_lived_process_keeps_a_bounded_number_of_retired_versions(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'hub.db'}"
    migrate(url)
    library = Library()
    for n in range(RETIRED_KEPT + 20):
        with session(url) as db:
            add_version(
                db,
                "churn",
                {"variants": {"sms": {"body": f"v{n}"}}, "locales": {}},
                event_type=None,
                author="ada",
                comment="",
                draft=False,
                source="api",
            )
            current = library.load(db)
        assert current.render("churn", "sms", {}).text == f"v{n}"

    assert library.content("churn", RETIRED_KEPT + 20) is not None
    assert library.content("churn", 1) is None
    assert sum(library.content("churn", v) is not None for v in range(1, RETIRED_KEPT + 21)) == (
        RETIRED_KEPT + 1
    )
