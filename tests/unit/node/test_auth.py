"""Who may call what (DESIGN.md "Access"): every kind of endpoint against every credential."""

from __future__ import annotations

from pathlib import Path

import pytest

from dvecdb_client.secrets import key_values
from dvecdb_node.api.auth import check_access
from dvecdb_node.credentials import Credentials, CredentialStore
from dvecdb_node.errors import Forbidden, Unauthorized

pytestmark = pytest.mark.unit

CLOSED = Credentials(api_keys=("key",), read_only_keys=("ro",), cluster_tokens=("tok",))

ENDPOINTS = [
    ("GET", "/healthz"),
    ("GET", "/metrics"),
    ("GET", "/v1/status"),
    ("GET", "/v1/collections"),
    ("GET", "/v1/collections/c"),
    ("GET", "/v1/collections/c/vectors/a"),
    ("POST", "/v1/collections/c/search"),
    ("POST", "/v1/collections"),
    ("DELETE", "/v1/collections/c"),
    ("PUT", "/v1/collections/c/vectors"),
    ("POST", "/v1/collections/c/vectors/delete"),
    ("POST", "/v1/admin/promote"),
    ("GET", "/v1/replication/stream"),
]
# What each credential gets at each endpoint: ok, 401 or 403 (and its code).
EXPECTED = {
    None: ["ok", "ok", "401", "401", "401", "401", "401", "401", "401", "401", "401", "401", "401"],
    "key": ["ok", "ok", "ok", "ok", "ok", "ok", "ok", "ok", "ok", "ok", "ok", "403", "403"],
    "ro": ["ok", "ok", "ok", "ok", "ok", "ok", "ok", "ro", "ro", "ro", "ro", "403", "403"],
    "tok": ["ok"] * 13,
    "wrong": [
        "ok",
        "ok",
        "403",
        "403",
        "403",
        "403",
        "403",
        "403",
        "403",
        "403",
        "403",
        "403",
        "403",
    ],
}


def _outcome(method: str, path: str, token: str | None, creds: Credentials) -> str:
    try:
        check_access(method, path, token, creds)
    except Unauthorized:
        return "401"
    except Forbidden as exc:
        return "ro" if exc.code == "read_only" else "403"
    return "ok"


@pytest.mark.parametrize("token", list(EXPECTED))
def test_every_endpoint_against_every_credential(token: str | None) -> None:
    got = [_outcome(method, path, token, CLOSED) for method, path in ENDPOINTS]
    assert got == EXPECTED[token]


def test_without_secrets_everything_is_open_and_a_cluster_token_alone_guards_admin() -> None:
    open_node = Credentials()
    assert {_outcome(m, p, None, open_node) for m, p in ENDPOINTS} == {"ok"}
    cluster_only = Credentials(cluster_tokens=("tok",))
    assert _outcome("PUT", "/v1/collections/c/vectors", None, cluster_only) == "ok"
    assert _outcome("POST", "/v1/admin/fence", None, cluster_only) == "401"


def test_several_keys_of_a_kind_all_open_the_api_during_a_rotation() -> None:
    rotating = Credentials(api_keys=key_values("new, old"), cluster_tokens=("tok",))
    assert rotating.api_keys == ("new", "old")
    for key in ("new", "old"):
        assert _outcome("PUT", "/v1/collections/c/vectors", key, rotating) == "ok"
    assert _outcome("PUT", "/v1/collections/c/vectors", "older", rotating) == "403"


def test_a_secrets_folder_replaces_the_settings_and_is_read_again(tmp_path: Path) -> None:
    base = Credentials(api_keys=("from-env",), cluster_tokens=("tok",))
    store = CredentialStore(base, tmp_path)
    assert store.current == base  # no files yet: the settings hold
    (tmp_path / "apiKey").write_text("k1\n")
    (tmp_path / "readOnlyKey").write_text("r1\nr2\n")
    assert store.refresh() and store.current.api_keys == ("k1",)
    assert store.current.read_only_keys == ("r1", "r2")
    assert store.current.cluster_tokens == ("tok",)  # no clusterToken file: the setting holds
    assert not store.refresh()
    (tmp_path / "apiKey").write_text("k2\nk1\n")
    assert (
        store.refresh()
        and _outcome("PUT", "/v1/collections/c/vectors", "k2", store.current) == "ok"
    )
    assert store.current.cluster_token == "tok"


def test_a_key_holds_values_separated_by_commas_or_newlines() -> None:
    """One rule for the node, the operator and the router (dvecdb_client.secrets)."""
    assert key_values(" new, old\n\nolder ,") == ("new", "old", "older")
    assert key_values("") == key_values(None) == key_values(" ,\n") == ()
