"""Spec: API keys carry scopes, expire, are revoked and rotated, and are rate limited.

Scopes: ``publish:<glob>`` publishes the event types its glob matches, ``read``
reads (GET on events, notifications, channels), ``admin`` does everything.
A missing, malformed, expired or revoked key gets 401; a valid key without
the scope gets 403 naming it; a revoked key stops within 5 s on a running API.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import text

from hub import keys
from hub.embedded import _free_port
from hub.errors import InputError
from hub.store.db import MIGRATIONS, engine, migrate
from tests.conftest import (
    Stack,
    _healthy,
    other_redis_db,
    run_hub,
    running_stack,
    start_hub_process,
    stop,
    wait_until,
)
from tests.smtp_sink import SmtpSink
from tests.test_publish_to_email import address, user
from tests.test_sms_and_alerts import task_failed

PREVIEW = {"channel": "email", "event_type": "user.registered", "data": user("ada@example.com")}


def new_key(stack: Stack, *options: str) -> tuple[str, str]:
    """A key made with ``hub keys create NAME *options``, as an operator would: (name, key)."""
    name = f"svc-{uuid.uuid4().hex[:8]}"
    created = run_hub(stack, "keys", "create", name, *options)
    assert created.returncode == 0, created.stderr
    return name, created.stdout.strip()


def registration() -> dict[str, object]:
    return {"type": "user.registered", "data": user(address())}


def keys_listed(stack: Stack, name: str) -> list[str]:
    """The lines of ``hub keys list`` about the key named ``name``."""
    listed = run_hub(stack, "keys", "list")
    assert listed.returncode == 0, listed.stderr
    return [line for line in listed.stdout.splitlines() if line.split()[0] == name]


# Scopes


def test_a_key_made_without_scope_publishes_any_type_and_reads_but_is_no_admin(
    stack: Stack,
) -> None:
    name, key = new_key(stack)

    with stack.client(key) as http:
        published = http.post("/v1/events", json=registration())
        failed = http.post("/v1/events", json={"type": "task.failed", "data": task_failed()})
        read = http.get(f"/v1/events/{published.json()['id']}")
        preview = http.post("/v1/templates/user.registered/preview", json=PREVIEW)

    assert published.status_code == failed.status_code == 202
    assert read.status_code == 200
    assert preview.status_code == 403
    [line] = keys_listed(stack, name)
    assert " publish:*,read " in line


def test_a_publish_only_key_cannot_read_nor_publish_outside_its_glob(stack: Stack) -> None:
    _, key = new_key(stack, "--scope", "publish:user.*")

    with stack.client(key) as http:
        published = http.post("/v1/events", json=registration())
        outside = http.post("/v1/events", json={"type": "task.failed", "data": task_failed()})
        reads = [
            http.get(f"/v1/events/{published.json()['id']}"),
            http.get("/v1/notifications"),
            http.get("/v1/channels"),
        ]

    assert published.status_code == 202
    assert outside.status_code == 403
    assert "'task.failed'" in outside.json()["detail"]
    assert "publish:task.failed" in outside.json()["detail"]
    for refused in reads:
        assert refused.status_code == 403, refused.request.url
        assert "'read'" in refused.json()["detail"]


def test_a_read_key_reads_but_cannot_publish(stack: Stack) -> None:
    _, key = new_key(stack, "--scope", "read")
    event_id = stack.publish("user.registered", user(address()))

    with stack.client(key) as http:
        read = http.get(f"/v1/events/{event_id}")
        listed = http.get("/v1/notifications")
        published = http.post("/v1/events", json=registration())
        batch = http.post("/v1/events:batch", json={"events": [registration()]})

    assert read.status_code == listed.status_code == 200
    assert published.status_code == batch.status_code == 403
    assert "publish" in published.json()["detail"]


def test_admin_only_endpoints_refuse_a_key_without_admin(stack: Stack) -> None:
    _, key = new_key(stack, "--scope", "publish:*", "--scope", "read")

    with stack.client(key) as http:
        refused = [
            http.post("/v1/templates/user.registered/preview", json=PREVIEW),
            http.post("/v1/notifications/ntf_none/retry"),
            http.post("/v1/notifications:retry", json={"status": ["failed"]}),
        ]
    with stack.client() as admin:
        preview = admin.post("/v1/templates/user.registered/preview", json=PREVIEW)

    for response in refused:
        assert response.status_code == 403, response.request.url
        assert "'admin'" in response.json()["detail"]
    assert preview.status_code == 200


def test_a_batch_item_of_a_type_the_key_may_not_publish_is_rejected_alone(
    stack: Stack,
) -> None:
    _, key = new_key(stack, "--scope", "publish:user.*", "--scope", "read")
    items = [registration(), {"type": "task.failed", "data": task_failed()}, registration()]

    with stack.client(key) as http:
        response = http.post("/v1/events:batch", json={"events": items})

    assert response.status_code == 202
    answer = response.json()
    assert (answer["accepted"], answer["rejected"]) == (2, 1)
    assert [r["status"] for r in answer["results"]] == ["accepted", "rejected", "accepted"]
    [error] = answer["results"][1]["errors"]
    assert error["type"] == "forbidden"
    assert error["loc"] == ["body", "events", 1, "type"]
    assert "'task.failed'" in error["msg"]
    for accepted in (answer["results"][0], answer["results"][2]):
        stack.settled(accepted["id"])


def test_healthz_and_provider_callbacks_take_no_key(stack: Stack) -> None:
    assert httpx.get(f"{stack.base_url}/healthz").status_code == 200
    callback = httpx.post(f"{stack.base_url}/v1/callbacks/twilio", data={"MessageSid": "SM1"})

    assert callback.status_code != 401  # refused by its signature check, if at all


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--scope", "write"], "unknown scope 'write'"),
        (["--scope", "publish:"], "unknown scope 'publish:'"),
        (["--expires", "soon"], "--expires"),
        (["--expires", "0s"], "--expires"),
        (["--allow-ip", "10.0.0.300/8"], "not an IP network"),
    ],
    ids=["unknown-scope", "empty-glob", "bad-duration", "zero-duration", "bad-network"],
)
def test_creating_a_key_with_a_bad_option_fails_naming_it(
    stack: Stack, options: list[str], message: str
) -> None:
    name = f"bad-{uuid.uuid4().hex[:8]}"
    created = run_hub(stack, "keys", "create", name, *options)

    assert created.returncode == 2
    assert message in created.stderr
    assert keys_listed(stack, name) == []


# Lifetime: revocation, rotation, expiry


def test_a_revoked_key_gets_401_within_5_seconds_on_a_running_api(stack: Stack) -> None:
    name, key = new_key(stack)
    with stack.client(key) as http:
        assert http.get("/v1/events/evt_none").status_code == 404  # the key is now cached

        assert run_hub(stack, "keys", "revoke", name).returncode == 0
        refused = wait_until(
            lambda: (r := http.get("/v1/events/evt_none")).status_code == 401 and r,
            timeout_s=5,
            what="the revoked key to be refused",
        )

    assert "revoked" in refused.json()["detail"]
    assert refused.headers["WWW-Authenticate"] == "Bearer"
    [line] = keys_listed(stack, name)
    assert line.split()[4] != "-"  # the REVOKED column


def test_rotating_a_key_prints_a_successor_and_the_old_key_stops(stack: Stack) -> None:
    name, old = new_key(stack, "--scope", "publish:user.*", "--scope", "read")
    with stack.client(old) as http:
        assert http.post("/v1/events", json=registration()).status_code == 202

    rotated = run_hub(stack, "keys", "rotate", name)

    assert rotated.returncode == 0, rotated.stderr
    new = rotated.stdout.strip()
    assert new.startswith(keys.PREFIX) and new != old
    with stack.client(new) as http:
        assert http.post("/v1/events", json=registration()).status_code == 202
        outside = http.post("/v1/events", json={"type": "task.failed", "data": task_failed()})
        assert outside.status_code == 403  # the successor keeps the scopes
    with stack.client(old) as http:
        wait_until(
            lambda: http.get("/v1/events/evt_none").status_code == 401,
            timeout_s=5,
            what="the rotated-out key to be refused",
        )
    revoked, live = keys_listed(stack, name)
    assert revoked.split()[4] != "-" and live.split()[4] == "-"


def test_an_expired_key_gets_401(stack: Stack) -> None:
    name, key = new_key(stack, "--expires", "3s")

    with stack.client(key) as http:
        assert http.get("/v1/events/evt_none").status_code == 404
        refused = wait_until(
            lambda: (r := http.get("/v1/events/evt_none")).status_code == 401 and r,
            timeout_s=10,
            what="the key to expire",
        )

    assert "expired" in refused.json()["detail"]
    [line] = keys_listed(stack, name)
    assert line.split()[3] != "-"  # the EXPIRES column


def test_revoking_or_rotating_an_unknown_key_fails_naming_it(stack: Stack) -> None:
    for command_name in ("revoke", "rotate"):
        result = run_hub(stack, "keys", command_name, "no-such-key")

        assert result.returncode == 2
        assert "'no-such-key'" in result.stderr


def test_keys_list_never_shows_a_key_or_its_hash(stack: Stack) -> None:
    _, key = new_key(stack)

    listed = run_hub(stack, "keys", "list").stdout

    assert key not in listed and keys.hash_key(key) not in listed
    header = ["NAME", "SCOPES", "CREATED", "EXPIRES", "REVOKED", "NETWORKS"]
    assert listed.splitlines()[0].split() == header


# Networks


def test_a_key_kept_to_other_networks_is_refused_from_here(stack: Stack) -> None:
    _, elsewhere = new_key(stack, "--allow-ip", "10.0.0.0/8")
    _, here = new_key(stack, "--allow-ip", "127.0.0.1", "--allow-ip", "::1")

    with stack.client(elsewhere) as http:
        refused = http.get("/v1/notifications")
    with stack.client(here) as http:
        allowed = http.get("/v1/notifications")

    assert refused.status_code == 403
    assert "127.0.0.1" in refused.json()["detail"]
    assert allowed.status_code == 200


# Rate limit


@pytest.fixture
def rate_limited(tmp_path: Path, broker_url: str, smtp: SmtpSink) -> Iterator[Stack]:
    """A stack whose API allows each key 3 requests a minute."""
    env = {"HUB_API__RATE_LIMIT_PER_KEY": "3/m"}
    with running_stack(tmp_path, other_redis_db(broker_url), smtp, env) as limited:
        yield limited


def test_a_key_over_its_rate_gets_429_with_retry_after_on_every_api_process(
    rate_limited: Stack,
) -> None:
    port = _free_port()
    second = start_hub_process(
        ["api", "--port", str(port)], rate_limited.env, rate_limited.home / "api2.log"
    )
    try:
        other_api = f"http://127.0.0.1:{port}"
        wait_until(lambda: _healthy(other_api), 30, "the second API")
        headers = {"Authorization": f"Bearer {rate_limited.api_key}"}
        answers = [
            httpx.get(f"{base}/v1/notifications", headers=headers)
            for base in (rate_limited.base_url, other_api, rate_limited.base_url, other_api)
        ]
    finally:
        stop(second)
    other_key = keys.create_key(rate_limited.database_url, "other", ["read"])
    with rate_limited.client(other_key) as http:
        unaffected = http.get("/v1/notifications")

    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    assert 1 <= int(answers[3].headers["Retry-After"]) <= 20
    assert "api.rate_limit_per_key" in answers[3].json()["detail"]
    assert unaffected.status_code == 200


def test_there_is_no_rate_limit_per_key_by_default(stack: Stack) -> None:
    _, key = new_key(stack, "--scope", "read")

    with stack.client(key) as http:
        statuses = {http.get("/v1/notifications").status_code for _ in range(50)}

    assert statuses == {200}


# The Python API and the store


def test_publish_scopes_match_event_types_by_glob_and_admin_holds_every_scope() -> None:
    now = datetime.now(UTC)
    publisher = keys.Principal("p", ("publish:user.*", "publish:task.failed"), now)
    admin = keys.Principal("a", (keys.ADMIN,), now)

    assert publisher.may_publish("user.registered") and publisher.may_publish("task.failed")
    assert not publisher.may_publish("task.failedx") and not publisher.may_publish("usr.x")
    assert not publisher.allows(keys.READ) and not publisher.allows(keys.ADMIN)
    assert admin.may_publish("anything") and admin.allows(keys.READ)


def test_keys_made_by_the_python_api_are_admin_unless_told(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'hub.db'}"
    migrate(url)

    stack_key = keys.create_key(url, "stack")
    reader = keys.create_key(url, "reader", [keys.READ])

    assert _scopes(url, stack_key) == (keys.ADMIN,)
    assert _scopes(url, reader) == (keys.READ,)


def test_keys_made_before_scopes_existed_become_admin(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'hub.db'}"
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["url"] = url
    command.upgrade(config, "0006")
    with engine(url).begin() as db:
        db.execute(
            text(
                "INSERT INTO api_keys (name, key_hash, created_at) "
                "VALUES ('old', :hash, CURRENT_TIMESTAMP)"
            ),
            {"hash": keys.hash_key("hub_old")},
        )

    command.upgrade(config, "head")

    assert _scopes(url, "hub_old") == (keys.ADMIN,)
    assert keys.is_valid(url, "hub_old")


def _scopes(url: str, key: str) -> tuple[str, ...]:
    principal = keys.find_key(url, keys.hash_key(key))
    assert principal is not None
    return principal.scopes


def test_a_key_cannot_take_a_name_tokens_use(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'hub.db'}"
    migrate(url)

    with pytest.raises(InputError, match="cannot start with 'jwt:'"):
        keys.create_key(url, "jwt:alice")
