"""``/v1/models`` for OpenAI clients, and which rate-limit bucket a request draws from."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from live_server import live_server
from pydantic import SecretStr

from ragkit.server.limits import rate_limit_bucket


def test_openai_client_lists_and_retrieves_models(server_rag: Any) -> None:
    openai = pytest.importorskip("openai")
    from ragkit.server import ServerSettings, create_app

    before = int(time.time())
    app = create_app(
        server_rag, ServerSettings(api_keys=(SecretStr("k-1"),), model_id="ragkit-test")
    )
    with live_server(app) as base:
        client = openai.OpenAI(base_url=base + "/v1", api_key="k-1", max_retries=0, timeout=30)
        models = client.models.list()
        assert [m.id for m in models.data] == ["ragkit-test"]
        card = models.data[0]
        assert card.object == "model" and card.owned_by == "ragkit"
        assert before - 1 <= card.created <= int(time.time()) + 1
        assert client.models.retrieve("ragkit-test").id == "ragkit-test"
        with pytest.raises(openai.NotFoundError):
            client.models.retrieve("gpt-4o")
        stranger = openai.OpenAI(base_url=base + "/v1", api_key="nope", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            stranger.models.list()


def test_models_route_shape(make_client: Any) -> None:
    body = make_client().get("/v1/models").json()
    assert body["object"] == "list"
    assert [(m["id"], m["object"], m["owned_by"]) for m in body["data"]] == [
        ("ragkit", "model", "ragkit")
    ]
    assert isinstance(body["data"][0]["created"], int)
    assert "/v1/models" in make_client().get("/openapi.json").json()["paths"]


@pytest.fixture
def app_client(server_rag: Any) -> Iterator[Any]:
    """``app_client(address, **settings)``: a TestClient whose requests come from ``address``."""
    from fastapi.testclient import TestClient

    from ragkit.server import ServerSettings, create_app

    opened: list[Any] = []

    def make(address: str, **settings: Any) -> Any:
        app = create_app(server_rag, ServerSettings(**settings))
        client = TestClient(app, client=(address, 50000))
        client.__enter__()
        opened.append(client)
        return client

    yield make
    for client in opened:
        client.__exit__(None, None, None)


def test_loopback_clients_without_keys_are_not_limited(app_client: Any) -> None:
    client = app_client("127.0.0.1", rate_limit_per_minute=2)
    assert [client.get("/v1/index/stats").status_code for _ in range(10)] == [200] * 10
    v6 = app_client("::1", rate_limit_per_minute=2)
    assert [v6.get("/v1/index/stats").status_code for _ in range(5)] == [200] * 5


def test_loopback_limit_can_be_turned_back_on(app_client: Any) -> None:
    client = app_client("127.0.0.1", rate_limit_per_minute=2, rate_limit_loopback=True)
    codes = [client.get("/v1/index/stats").status_code for _ in range(3)]
    assert codes == [200, 200, 429]


def test_other_addresses_are_limited_per_address(app_client: Any) -> None:
    client = app_client("192.0.2.7", rate_limit_per_minute=2)  # e.g. behind a local proxy
    assert [client.get("/v1/index/stats").status_code for _ in range(3)] == [200, 200, 429]


def test_keys_are_limited_per_key_even_on_loopback(app_client: Any) -> None:
    keys = (SecretStr("key-a"), SecretStr("key-b"))
    client = app_client("127.0.0.1", rate_limit_per_minute=2, api_keys=keys)

    def get(key: str) -> int:
        r = client.get("/v1/index/stats", headers={"Authorization": f"Bearer {key}"})
        return int(r.status_code)

    assert [get("key-a") for _ in range(3)] == [200, 200, 429]
    assert [get("key-b") for _ in range(2)] == [200, 200]  # its own bucket
    assert get("wrong") == 401


def test_rate_limit_bucket_rules() -> None:
    assert rate_limit_bucket(None, "127.0.0.1", limit_loopback=False) is None
    assert rate_limit_bucket(None, "127.0.0.1", limit_loopback=True) == "addr:127.0.0.1"
    assert rate_limit_bucket(None, "10.0.0.2", limit_loopback=False) == "addr:10.0.0.2"
    assert rate_limit_bucket(None, None, limit_loopback=False) == "addr:unknown"
    keyed = rate_limit_bucket("secret", "127.0.0.1", limit_loopback=False)
    assert keyed is not None and keyed.startswith("key:") and "secret" not in keyed
    assert keyed == rate_limit_bucket("secret", "10.0.0.2", limit_loopback=False)
