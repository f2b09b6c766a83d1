"""Access tokens: a verified token is remembered until it expires, never past it, and only under
the key that verified it."""

from __future__ import annotations

import time
import uuid

import jwt
import pytest

from carebase.platform import tokens
from carebase.platform.authz import Principal
from carebase.platform.errors import NotAuthenticated
from carebase import settings as settings_module
from carebase.settings import Settings, set_settings


@pytest.fixture
def keyed(tmp_path):
    previous = settings_module._settings  # the suite's server runs on these: put them back after
    set_settings(Settings(secret_key="tokens-test-" + uuid.uuid4().hex, home=tmp_path, database_url="postgresql://x"))
    tokens._VERIFIED.clear()
    yield
    tokens._VERIFIED.clear()
    set_settings(previous)


def _principal() -> Principal:
    return Principal.of(uuid.uuid4(), uuid.uuid4(), ["doctor"], uuid.uuid4())


def test_a_token_is_verified_once_and_then_remembered(keyed, monkeypatch):
    principal = _principal()
    token = tokens.issue_access_token(principal, 60)
    assert tokens.decode_access_token(token) == principal

    def no_second_check(*args, **kwargs):
        raise AssertionError("verified the same token again")

    monkeypatch.setattr(jwt, "decode", no_second_check)
    assert tokens.decode_access_token(token) == principal


def test_a_remembered_token_still_expires(keyed):
    token = tokens.issue_access_token(_principal(), 1)
    tokens.decode_access_token(token)
    time.sleep(1.2)
    with pytest.raises(NotAuthenticated) as err:
        tokens.decode_access_token(token)
    assert err.value.code == "token-expired"
    assert not tokens._VERIFIED


def test_another_key_verifies_afresh_and_refuses_what_it_did_not_sign(keyed, tmp_path):
    token = tokens.issue_access_token(_principal(), 60)
    tokens.decode_access_token(token)
    set_settings(Settings(secret_key="another-" + uuid.uuid4().hex, home=tmp_path, database_url="postgresql://x"))
    with pytest.raises(NotAuthenticated) as err:
        tokens.decode_access_token(token)
    assert err.value.code == "invalid-token"


def test_a_tampered_token_is_refused_even_next_to_its_remembered_original(keyed):
    token = tokens.issue_access_token(_principal(), 60)
    tokens.decode_access_token(token)
    head, payload, sig = token.split(".")
    with pytest.raises(NotAuthenticated):
        tokens.decode_access_token(f"{head}.{payload}.{sig[:-4]}AAAA")


def test_the_memory_is_bounded(keyed, monkeypatch):
    monkeypatch.setattr(tokens, "_VERIFIED_MAX", 3)
    issued = [tokens.issue_access_token(_principal(), 60) for _ in range(5)]
    for token in issued:
        tokens.decode_access_token(token)
    assert [t for _, t in tokens._VERIFIED] == issued[-3:]
