"""Spec: with ``api.jwt`` set, the API takes bearer JWTs beside API keys.

A token is verified (signature, ``exp``, ``nbf``, ``iss``, ``aud``) with a
shared HS256 secret or the public key a JWKS file holds under the token's
``kid``. Its holder is ``jwt:<sub>``; its scopes are those of its ``scope``
claim (space-separated) or ``scp`` (a string or a list). A token that does
not verify gets 401 like a bad key, quoting none of it; a valid token without
the scope gets 403 naming the scope. API keys keep working on the same hub.
Settings errors name the key under ``api.jwt`` and its line.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import importlib.util
import json
import secrets
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from hub.errors import ConfigError
from hub.settings import bundled_path, load_settings
from tests.conftest import Stack, missing_service, other_redis_db, run_hub, running_stack
from tests.smtp_sink import SmtpSink
from tests.test_publish_to_email import address, user
from tests.test_sms_and_alerts import task_failed

ISSUER = "https://id.example.com/"
AUDIENCE = "hub"
SECRET = secrets.token_hex(32)
KID = "key-2026"


def claims(**changes: Any) -> dict[str, Any]:
    """A token's claims: alice, for this hub, valid for five minutes; None drops a claim."""
    now = int(time.time())
    default = {"iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "iat": now, "exp": now + 300}
    return {name: value for name, value in {**default, **changes}.items() if value is not None}


def hs256(**changes: Any) -> str:
    return jwt.encode(claims(**changes), SECRET, algorithm="HS256")


def registration() -> dict[str, object]:
    return {"type": "user.registered", "data": user(address())}


def call(stack: Stack, token: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
    with stack.client(token) as http:
        return http.request(method, path, **kwargs)


def assert_refused_as_unauthorized(response: httpx.Response, token: str, problem: str) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert problem in response.json()["detail"]
    for part in filter(None, token.split(".")):
        assert part not in response.text


# A shared secret (HS256)


@pytest.fixture(scope="class")
def hub(
    tmp_path_factory: pytest.TempPathFactory, broker_url: str, smtp: SmtpSink
) -> Iterator[Stack]:
    """A hub that takes HS256 tokens signed with SECRET, set through env vars."""
    env = {
        "HUB_API__JWT__ISSUER": ISSUER,
        "HUB_API__JWT__AUDIENCE": AUDIENCE,
        "HUB_API__JWT__SECRET": SECRET,
    }
    home = tmp_path_factory.mktemp("jwt-secret")
    with running_stack(home, other_redis_db(broker_url), smtp, env) as stack:
        yield stack


class TestASharedSecret:
    def test_a_token_with_publish_and_read_scopes_publishes_and_reads(self, hub: Stack) -> None:
        token = hs256(scope="publish:user.* read")

        published = call(hub, token, "POST", "/v1/events", json=registration())
        read = call(hub, token, "GET", f"/v1/events/{published.json()['id']}")
        listed = call(hub, token, "GET", "/v1/notifications")

        assert published.status_code == 202, published.text
        assert read.status_code == listed.status_code == 200

    def test_a_token_without_the_scope_gets_403_naming_it(self, hub: Stack) -> None:
        publisher = hs256(scope="publish:user.*")
        reader = hs256(sub="bob", scope="read")
        failed = {"type": "task.failed", "data": task_failed()}

        unread = call(hub, publisher, "GET", "/v1/notifications")
        outside = call(hub, publisher, "POST", "/v1/events", json=failed)
        unpublished = call(hub, reader, "POST", "/v1/events", json=registration())

        assert unread.status_code == outside.status_code == unpublished.status_code == 403
        assert unread.json()["detail"] == "token 'jwt:alice' lacks the 'read' scope this needs"
        assert "publish:task.failed" in outside.json()["detail"]
        assert "'jwt:bob'" in unpublished.json()["detail"]
        assert "publish:<glob>" in unpublished.json()["detail"]

    def test_scp_grants_scopes_as_a_list(self, hub: Stack) -> None:
        token = hs256(scp=["read", "publish:task.*"])

        listed = call(hub, token, "GET", "/v1/notifications")
        failed = call(
            hub, token, "POST", "/v1/events", json={"type": "task.failed", "data": task_failed()}
        )
        outside = call(hub, token, "POST", "/v1/events", json=registration())

        assert listed.status_code == 200
        assert failed.status_code == 202, failed.text
        assert outside.status_code == 403

    @pytest.mark.parametrize(
        ("changes", "problem"),
        [
            ({"exp": int(time.time()) - 120}, "expired"),
            ({"nbf": int(time.time()) + 600}, "not valid yet"),
            ({"aud": "another-service"}, "audience"),
            ({"iss": "https://evil.example.com/"}, "issuer"),
            ({"sub": None}, "'sub'"),
            ({"exp": None}, "'exp'"),
        ],
        ids=["expired", "not-yet-valid", "wrong-audience", "wrong-issuer", "no-sub", "no-exp"],
    )
    def test_a_token_whose_claims_do_not_verify_gets_401(
        self, hub: Stack, changes: dict[str, Any], problem: str
    ) -> None:
        token = hs256(scope="read", **changes)

        refused = call(hub, token, "GET", "/v1/notifications")

        assert_refused_as_unauthorized(refused, token, problem)

    @pytest.mark.parametrize(
        "forge",
        [
            lambda: jwt.encode(claims(scope="read"), secrets.token_hex(32), algorithm="HS256"),
            lambda: _with_claims(hs256(scope="read"), claims(scope="admin")),
            lambda: jwt.encode(claims(scope="read"), None, algorithm="none"),
        ],
        ids=["another-secret", "claims-changed-after-signing", "unsigned"],
    )
    def test_a_token_with_a_bad_signature_gets_401(self, hub: Stack, forge: Any) -> None:
        token = forge()

        refused = call(hub, token, "GET", "/v1/notifications")

        assert_refused_as_unauthorized(refused, token, "invalid")

    def test_api_keys_keep_working_beside_tokens(self, hub: Stack) -> None:
        name = f"svc-{uuid.uuid4().hex[:8]}"
        created = run_hub(hub, "keys", "create", name, "--scope", "read")
        assert created.returncode == 0, created.stderr
        reader = created.stdout.strip()

        published = call(hub, hub.api_key, "POST", "/v1/events", json=registration())
        listed = call(hub, reader, "GET", "/v1/notifications")
        unpublished = call(hub, reader, "POST", "/v1/events", json=registration())
        unknown = call(hub, "hub_no-such-key", "GET", "/v1/notifications")

        assert published.status_code == 202
        assert listed.status_code == 200
        assert unpublished.status_code == 403
        assert f"API key '{name}'" in unpublished.json()["detail"]
        assert_refused_as_unauthorized(unknown, "hub_no-such-key", "invalid API key")


def _with_claims(token: str, changed: dict[str, Any]) -> str:
    """``token`` with its claims replaced and its signature kept."""
    header, _, signature = token.split(".")
    return ".".join([header, _b64(json.dumps(changed).encode()), signature])


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


# A JWKS file (RS256, by kid)


@pytest.fixture(scope="module")
def rsa_key() -> Any:
    """An RSA private key, standing for the identity provider's."""
    if importlib.util.find_spec("cryptography") is None:
        missing_service("cryptography is not installed; RS256 and ES256 need pyjwt[crypto]")
    from cryptography.hazmat.primitives.asymmetric import rsa

    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def write_jwks(path: Path, private_key: Any, kid: str = KID) -> Path:
    """A JWKS file holding the public half of ``private_key`` under ``kid``."""
    from jwt.algorithms import RSAAlgorithm

    public = RSAAlgorithm.to_jwk(private_key.public_key(), as_dict=True)
    path.write_text(json.dumps({"keys": [{**public, "kid": kid, "alg": "RS256", "use": "sig"}]}))
    return path


def rs256(private_key: Any, kid: str = KID, **changes: Any) -> str:
    return jwt.encode(claims(**changes), private_key, algorithm="RS256", headers={"kid": kid})


@pytest.fixture(scope="class")
def jwks_hub(
    tmp_path_factory: pytest.TempPathFactory, broker_url: str, smtp: SmtpSink, rsa_key: Any
) -> Iterator[Stack]:
    """A hub that takes RS256 tokens by the keys of a JWKS file, set as one JSON env var."""
    home = tmp_path_factory.mktemp("jwt-jwks")
    jwks = write_jwks(home / "jwks.json", rsa_key)
    table = {"issuer": ISSUER, "audience": AUDIENCE, "jwks_file": str(jwks)}
    env = {"HUB_API__JWT": json.dumps(table)}
    with running_stack(home, other_redis_db(broker_url), smtp, env) as stack:
        yield stack


class TestAJwksFile:
    def test_an_rs256_token_is_verified_by_the_key_its_kid_names(
        self, jwks_hub: Stack, rsa_key: Any
    ) -> None:
        token = rs256(rsa_key, scope="publish:user.* read")

        published = call(jwks_hub, token, "POST", "/v1/events", json=registration())
        read = call(jwks_hub, token, "GET", f"/v1/events/{published.json()['id']}")

        assert published.status_code == 202, published.text
        assert read.status_code == 200

    def test_a_token_naming_another_key_gets_401(self, jwks_hub: Stack, rsa_key: Any) -> None:
        token = rs256(rsa_key, kid="key-1999", scope="read")

        refused = call(jwks_hub, token, "GET", "/v1/notifications")

        assert_refused_as_unauthorized(refused, token, "no key of api.jwt.jwks_file")

    def test_a_token_signed_by_another_key_under_the_same_kid_gets_401(
        self, jwks_hub: Stack
    ) -> None:
        from cryptography.hazmat.primitives.asymmetric import rsa

        impostor = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        token = rs256(impostor, scope="read")

        refused = call(jwks_hub, token, "GET", "/v1/notifications")

        assert_refused_as_unauthorized(refused, token, "invalid")

    def test_a_token_hmac_signed_with_the_public_key_gets_401(
        self, jwks_hub: Stack, rsa_key: Any
    ) -> None:
        # The classic algorithm confusion: the public key, which anyone has,
        # used as an HS256 secret; the key's own algorithm is RS256.
        from cryptography.hazmat.primitives import serialization

        public_pem = rsa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        header = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": KID}).encode())
        body = _b64(json.dumps(claims(scope="admin")).encode())
        signature = hmac.new(public_pem, f"{header}.{body}".encode(), hashlib.sha256).digest()
        token = f"{header}.{body}.{_b64(signature)}"

        refused = call(jwks_hub, token, "GET", "/v1/notifications")

        assert_refused_as_unauthorized(refused, token, "invalid")


# Settings


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No HUB_ env var of the running stacks: errors then name the file's lines."""
    import os

    for name in list(os.environ):
        if name.startswith("HUB_"):
            monkeypatch.delenv(name)


def settings_with(tmp_path: Path, table: str) -> tuple[Path, str]:
    """A settings file: the bundled one plus ``table`` (an [api.jwt] table); and its text."""
    path = tmp_path / "settings.toml"
    path.write_text(bundled_path("settings.toml").read_text() + table)
    return path, path.read_text()


def line_of(text: str, wanted: str) -> int:
    return text.splitlines().index(wanted) + 1


JWT_TABLE = f'\n[api.jwt]\nissuer = "{ISSUER}"\naudience = "{AUDIENCE}"\n'


@pytest.mark.usefixtures("clean_env")
def test_jwt_is_off_by_default_and_a_secret_turns_it_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plain, _ = settings_with(tmp_path, "")
    assert load_settings(plain).api.jwt is None

    path, _ = settings_with(tmp_path, JWT_TABLE)
    monkeypatch.setenv("HUB_API__JWT__SECRET", SECRET)
    configured = load_settings(path).api.jwt

    assert configured is not None
    assert configured.allowed_algorithms == ["HS256"]
    assert SECRET not in repr(configured)


@pytest.mark.usefixtures("clean_env")
@pytest.mark.parametrize(
    ("lines", "key", "problem"),
    [
        (['jwks_file = "missing.json"'], "api.jwt.jwks_file", "cannot read"),
        (['jwks_file = "{tmp}/bad.json"'], "api.jwt.jwks_file", "is not JSON"),
        (['jwks_file = "{tmp}/empty.json"'], "api.jwt.jwks_file", "did not contain any keys"),
        (['secret = "too-short"'], "api.jwt.secret", "at least 32 bytes"),
        ([], "api.jwt", "set one of api.jwt.jwks_file or api.jwt.secret (neither is set)"),
    ],
    ids=["missing-file", "bad-json", "no-keys", "short-secret", "neither"],
)
def test_a_bad_jwt_setting_names_its_key_and_line(
    tmp_path: Path, lines: list[str], key: str, problem: str
) -> None:
    (tmp_path / "bad.json").write_text('{"keys": [')
    (tmp_path / "empty.json").write_text('{"keys": []}')
    table = JWT_TABLE + "".join(f"{line.format(tmp=tmp_path)}\n" for line in lines)
    path, text = settings_with(tmp_path, table)
    named = lines[0].format(tmp=tmp_path) if lines else "[api.jwt]"

    with pytest.raises(ConfigError) as error:
        load_settings(path)

    assert f"{path}:{line_of(text, named)}: {key}: " in str(error.value)
    assert problem in str(error.value)
    assert "too-short" not in str(error.value)


@pytest.mark.usefixtures("clean_env")
@pytest.mark.parametrize(
    ("line", "key", "problem"),
    [
        (f'secret = "{SECRET}"', "api.jwt", "(both are set)"),
        ('algorithms = ["HS256"]', "api.jwt.algorithms", "HS256 cannot be verified"),
    ],
    ids=["secret-too", "hmac-algorithm"],
)
def test_a_jwks_file_takes_no_secret_nor_hmac_algorithm(
    tmp_path: Path, rsa_key: Any, line: str, key: str, problem: str
) -> None:
    jwks = write_jwks(tmp_path / "jwks.json", rsa_key)
    path, text = settings_with(tmp_path, f'{JWT_TABLE}jwks_file = "{jwks}"\n{line}\n')
    named = line if key == "api.jwt.algorithms" else "[api.jwt]"

    with pytest.raises(ConfigError) as error:
        load_settings(path)

    assert f"{path}:{line_of(text, named)}: {key}: " in str(error.value)
    assert problem in str(error.value)
    assert SECRET not in str(error.value)


@pytest.mark.usefixtures("clean_env")
def test_a_jwks_file_holding_a_private_key_is_refused(tmp_path: Path, rsa_key: Any) -> None:
    from jwt.algorithms import RSAAlgorithm

    jwks = tmp_path / "jwks.json"
    private = RSAAlgorithm.to_jwk(rsa_key, as_dict=True)
    jwks.write_text(json.dumps({"keys": [{**private, "kid": KID}]}))
    path, _ = settings_with(tmp_path, f'{JWT_TABLE}jwks_file = "{jwks}"\n')

    with pytest.raises(ConfigError, match="api.jwt.jwks_file: .* holds a private key"):
        load_settings(path)


@pytest.mark.usefixtures("clean_env")
def test_a_bad_secret_in_an_env_var_names_the_env_var(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, _ = settings_with(tmp_path, JWT_TABLE)
    monkeypatch.setenv("HUB_API__JWT__SECRET", "too-short")

    with pytest.raises(ConfigError) as error:
        load_settings(path)

    assert "env var HUB_API__JWT__SECRET: api.jwt.secret: " in str(error.value)
    assert "too-short" not in str(error.value)
