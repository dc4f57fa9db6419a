"""Spec: one-click unsubscribe (RFC 8058) from emails of a category to a stored recipient.

Such an email carries ``List-Unsubscribe: <{public_url}/v1/unsubscribe/{token}>``
and ``List-Unsubscribe-Post: List-Unsubscribe=One-Click``. The token is signed
and names one recipient and one category. A ``POST`` to the link, without an
API key, turns that category off (later notifications of it are ``suppressed``
as ``category_off``); a ``GET`` only shows a page whose button POSTs. A token
the hub did not sign gets 404.
"""

from __future__ import annotations

import base64
import os
import stat
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from channels.email import build_email
from hub import links
from hub.channels.base import Message
from hub.errors import ConfigError, PermanentError
from hub.settings import Settings, load_settings
from tests.conftest import Stack
from tests.smtp_sink import SmtpSink
from tests.test_publish_to_email import address, user
from tests.test_subscriptions import subscribed

ONE_CLICK = {"content": "List-Unsubscribe=One-Click"}
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


# ---- Against the running hub -----------------------------------------------------------


def _recipient(stack: Stack, rid: str, **fields: Any) -> dict[str, Any]:
    with stack.client() as http:
        response = http.put(f"/v1/recipients/{rid}", json=fields)
    assert response.status_code in (200, 201), response.text
    return dict(response.json())


def _preferences(stack: Stack, rid: str) -> dict[str, Any]:
    with stack.client() as http:
        return dict(http.get(f"/v1/recipients/{rid}").json()["preferences"])


def _of_category(run: str, category: str | None) -> dict[str, Any]:
    """A subscription without ``to`` (it sends to the recipients an event names)."""
    return {
        "name": f"unsub-{run}-{category or 'none'}",
        "event": "user.registered",
        "channel": "email",
        "template": "user.registered",
        "filter": {"data.run": {"eq": run}},
        **({"category": category} if category else {}),
    }


@contextmanager
def _subscribed(stack: Stack, run: str, *categories: str | None) -> Iterator[None]:
    with ExitStack() as subscriptions:
        for category in categories:
            subscriptions.enter_context(subscribed(stack, _of_category(run, category)))
        yield


def _event_to(stack: Stack, run: str, rid: str, signup: str | None = None) -> dict[str, Any]:
    """Publish this run's event naming ``rid``; the settled event, by subscription name."""
    body = {
        "type": "user.registered",
        "data": {**user(signup or address("signup")), "run": run},
        "recipients": [rid],
    }
    with stack.client() as http:
        response = http.post("/v1/events", json=body)
    assert response.status_code == 202, response.text
    event = stack.settled(response.json()["id"])
    return {n["subscription"]: n for n in event["notifications"] if n["recipient_id"] == rid}


def _link(message: EmailMessage) -> str:
    value = str(message["List-Unsubscribe"]).strip()
    assert value.startswith("<") and value.endswith(">"), value
    return value[1:-1]


def _local(stack: Stack, link: str) -> str:
    """The link as the test reaches the API: its path on the stack's own address."""
    path = httpx.URL(link).raw_path.decode()
    assert path.startswith(links.UNSUBSCRIBE_PATH)
    return f"{stack.base_url}{path}"


def _scope(link: str) -> tuple[str, str] | None:
    """Whom and what category a link unsubscribes, read with the stack's key."""
    return links.read_unsubscribe(load_settings(), link.rsplit("/", 1)[1])


def _unsubscribe_link(stack: Stack, smtp: SmtpSink, run: str, category: str) -> tuple[str, str]:
    """A new recipient, sent one email of ``category``; its id and the email's link."""
    rid, email = f"reader-{run}", address("reader")
    _recipient(stack, rid, email=email)
    with _subscribed(stack, run, category):
        _event_to(stack, run, rid)
    [message] = smtp.to(email)
    return rid, _local(stack, _link(message))


def test_an_email_of_a_category_to_a_recipient_has_one_click_headers(
    stack: Stack, smtp: SmtpSink
) -> None:
    run = uuid.uuid4().hex[:12]
    rid, email, signup = f"reader-{run}", address("reader"), address("signup")
    _recipient(stack, rid, email=email)

    with _subscribed(stack, run, "news"):
        _event_to(stack, run, rid, signup)

    [message] = smtp.to(email)
    link = _link(message)
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert link.startswith(f"{load_settings().api.base_url}/v1/unsubscribe/")
    assert _scope(link) == (rid, "news")
    # The bundled welcome email of the same event goes to an address, not a recipient.
    [welcome] = smtp.to(signup)
    assert welcome["List-Unsubscribe"] is None


def test_an_email_without_a_category_has_no_unsubscribe_headers(
    stack: Stack, smtp: SmtpSink
) -> None:
    run = uuid.uuid4().hex[:12]
    rid, email = f"reader-{run}", address("reader")
    _recipient(stack, rid, email=email)

    with _subscribed(stack, run, None):
        sent = _event_to(stack, run, rid)

    assert sent[f"unsub-{run}-none"]["status"] == "sent"
    [message] = smtp.to(email)
    assert (message["List-Unsubscribe"], message["List-Unsubscribe-Post"]) == (None, None)


def test_get_shows_a_page_whose_button_posts_and_changes_nothing(
    stack: Stack, smtp: SmtpSink
) -> None:
    run = uuid.uuid4().hex[:12]
    rid, link = _unsubscribe_link(stack, smtp, run, "news")

    page = httpx.get(link)

    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert '<form method="post"' in page.text and "news" in page.text
    assert page.headers["referrer-policy"] == "no-referrer"
    assert _preferences(stack, rid) == {}


def test_a_one_click_post_turns_the_category_off_and_the_next_event_is_suppressed(
    stack: Stack, smtp: SmtpSink
) -> None:
    run = uuid.uuid4().hex[:12]
    rid, link = _unsubscribe_link(stack, smtp, run, "news")

    # No API key: the token is the authority.
    response = httpx.post(link, headers=FORM, **ONE_CLICK)

    assert response.status_code == 200, response.text
    assert response.json() == {"status": "unsubscribed", "category": "news"}
    assert _preferences(stack, rid) == {"categories": {"news": False}}
    with _subscribed(stack, run, "news"):
        after = _event_to(stack, run, rid)
    notification = after[f"unsub-{run}-news"]
    assert notification["status"] == "suppressed"
    assert notification["last_error"].startswith("category_off: ")


def test_an_empty_post_works_and_twice_is_once(stack: Stack, smtp: SmtpSink) -> None:
    run = uuid.uuid4().hex[:12]
    rid, link = _unsubscribe_link(stack, smtp, run, "news")

    first, again = httpx.post(link), httpx.post(link, headers={"Accept": "text/html"})

    assert (first.status_code, again.status_code) == (200, 200)
    assert again.headers["content-type"].startswith("text/html")
    assert _preferences(stack, rid) == {"categories": {"news": False}}


def test_a_token_for_one_category_leaves_the_others_on(stack: Stack, smtp: SmtpSink) -> None:
    run = uuid.uuid4().hex[:12]
    rid, email = f"reader-{run}", address("reader")
    _recipient(stack, rid, email=email, preferences={"categories": {"offers": True}})

    with _subscribed(stack, run, "news", "offers"):
        _event_to(stack, run, rid)
        by_scope = {_scope(_link(message)): _link(message) for message in smtp.to(email)}
        assert set(by_scope) == {(rid, "news"), (rid, "offers")}
        response = httpx.post(_local(stack, by_scope[(rid, "news")]), **ONE_CLICK)
        assert response.status_code == 200
        after = _event_to(stack, run, rid)

    assert _preferences(stack, rid) == {"categories": {"news": False, "offers": True}}
    assert after[f"unsub-{run}-news"]["status"] == "suppressed"
    assert after[f"unsub-{run}-offers"]["status"] == "sent"


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_a_tampered_forged_or_malformed_token_is_refused(
    stack: Stack, smtp: SmtpSink, method: str
) -> None:
    run = uuid.uuid4().hex[:12]
    rid, link = _unsubscribe_link(stack, smtp, run, "news")
    base, token = link.rsplit("/", 1)
    payload, mac = token.split(".")
    flipped = "A" if mac[0] != "A" else "B"
    other = links.sign(b"k" * 32, links.UNSUBSCRIBE, [rid, "news"])
    wider = links.sign(b"k" * 32, links.UNSUBSCRIBE, [rid, "news", "extra"])
    alias = base64.urlsafe_b64encode(b'["someone-else","news"]').decode().rstrip("=")

    for bad in (
        f"{payload}.{flipped}{mac[1:]}",  # the mac changed
        f"{alias}.{mac}",  # the fields changed
        other,  # signed with another key
        wider,
        payload,
        f"{token}.x",
        "not-a-token",
        "%00",
    ):
        response = httpx.request(method, f"{base}/{bad}", **ONE_CLICK)
        assert response.status_code in (400, 404), (bad, response.status_code)
        assert "news" not in response.text
    assert _preferences(stack, rid) == {}


# ---- Tokens, keys, headers and settings, in process ------------------------------------


def _settings(tmp_path: Path, **fields: Any) -> Settings:
    # A copy, not Settings(...): the stack's HUB_VAR_DIR in the environment would win.
    return load_settings().model_copy(update={"var_dir": tmp_path / "var", **fields})


def test_a_token_names_its_recipient_and_category_and_its_purpose(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    key = links.secret_key(settings)
    token = links.sign(key, links.UNSUBSCRIBE, ["ünïcode id", "news"])

    assert links.read_unsubscribe(settings, token) == ("ünïcode id", "news")
    assert links.verify(key, "ack", token) is None
    assert links.verify(b"x" * 32, links.UNSUBSCRIBE, token) is None


def test_without_a_secret_key_one_is_kept_in_var_private_and_reused(tmp_path: Path) -> None:
    settings = _settings(tmp_path)

    key = links.secret_key(settings)

    kept = tmp_path / "var" / links.KEY_FILE
    assert kept.read_bytes() == key and len(key) >= 32
    assert stat.S_IMODE(os.stat(kept).st_mode) == 0o600
    assert [p.name for p in kept.parent.iterdir()] == [links.KEY_FILE]
    assert links.secret_key(_settings(tmp_path)) == key


def test_the_secret_key_setting_signs_links_and_must_be_long(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "s" * 32
    settings = _settings(tmp_path, secret_key=SecretStr(secret))
    url = links.unsubscribe_url(settings, "ada", "news")

    assert links.secret_key(settings) == secret.encode()
    assert not (tmp_path / "var").exists()
    assert url.startswith("http://127.0.0.1:8000/v1/unsubscribe/")
    monkeypatch.setenv("HUB_SECRET_KEY", "short")
    with pytest.raises(ConfigError, match="secret_key"):
        load_settings()


def test_public_url_is_the_base_of_links(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HUB_API__PUBLIC_URL", "https://hub.example.com/notify/")
    settings = load_settings()
    assert settings.api.base_url == "https://hub.example.com/notify"
    assert links.unsubscribe_url(settings, "ada", "news").startswith(
        "https://hub.example.com/notify/v1/unsubscribe/"
    )
    for bad in ("hub.example.com", "https://hub.example.com/?a=1", "https://h/a\r\nX: y"):
        monkeypatch.setenv("HUB_API__PUBLIC_URL", bad)
        with pytest.raises(ConfigError, match="public_url"):
            load_settings()


def _message(unsubscribe_url: str | None) -> Message:
    return Message(
        notification_id="ntf_1",
        event_id="evt_1",
        event_type="user.registered",
        recipient="ada@example.com",
        text="Hello",
        subject="Hi",
        unsubscribe_url=unsubscribe_url,
    )


def test_the_email_writer_folds_a_long_link_and_refuses_a_line_break() -> None:
    url = "https://hub.example.com/v1/unsubscribe/" + "a" * 120

    data = build_email(_message(url), "hub@example.com").data

    assert f"List-Unsubscribe:\r\n <{url}>\r\n".encode() in data
    assert b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n" in data
    with pytest.raises(PermanentError, match="invalid_header"):
        build_email(_message("https://h/x\r\nBcc: eve@example.com"), "hub@example.com")
