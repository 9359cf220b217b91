"""Budgets tried offline: the simulator is charged like the model it imitates (its capability row names a
price row), and `LIVEGATE_MASTER_KEY=... livegate` (the README's first command with a master key) hands out
keys whose budgets run out on the simulator."""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from livegate.accounting.prices import PriceTable
from livegate.config import load_config, parse_config
from livegate.paths import MAPPINGS_DIR
from livegate.server import create_app
from livegate.server.accounting_routes import build_accounting
from livegate.translation.capabilities import shipped_table
from tests.support import refusal, serve

PRICES = PriceTable.load()


def test_every_capability_row_names_a_price_the_price_table_has() -> None:
    table = yaml.safe_load((MAPPINGS_DIR / "models.yaml").read_text())
    assert all("price" in row for row in table["models"])  # every row says (null: no price)
    named = [table["default"]["price"], *(row["price"] for row in table["models"] if row["price"])]
    assert len(named) >= 5
    for model in named:
        assert PRICES.lookup(model) is not None, model
    models = shipped_table()
    assert models.price_model("livegate-simulator") == "gemini-3.8-live"  # the built-in config's model
    assert models.price_model("any-name") == table["default"]["price"]  # a model no row matches
    assert models.price_model("gemini-live-2.5-flash-preview") == "gemini-2.5-flash-native-audio"
    assert models.price_model("gemini-3.5-transcribe-live") == "gemini-3.5-transcribe-live"  # null: its own
    assert "price" not in models.capabilities("livegate-simulator", "aistudio")  # not a capability
    assert not any("livegate-simulator" in row["match"] for row in yaml.safe_load(
        (MAPPINGS_DIR / "prices.yaml").read_text())["models"])  # no $0 row any more


def test_only_ids_served_by_the_simulator_alone_get_its_price() -> None:
    config = parse_config({"model_list": [
        {"model_name": "a", "livegate_params": {"model": "simulator/any-name"}},
        {"model_name": "b", "livegate_params": {"model": "simulator/gemini-9-imaginary"}},
        {"model_name": "c", "litellm_params": {"model": "gemini/gemini-9-imaginary", "api_key": "AIza-x"}},
    ]})
    accounting = build_accounting(config)
    assert accounting.simulated == frozenset({"any-name"})
    price = accounting.price("any-name", None)
    assert price is not None and price == PRICES.lookup("gemini-3.8-live")
    assert accounting.price("gemini-9-imaginary", None) is None  # a real upstream's unknown price stays unknown
    cheaper = accounting.price("any-name", {"output_cost_per_audio_token": 1e-6})  # model_info still overrides
    assert cheaper is not None and cheaper.output_audio == 1e-6


def test_the_master_key_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LIVEGATE_MASTER_KEY", raising=False)
    monkeypatch.delenv("LITELLM_MASTER_KEY", raising=False)
    assert load_config(None).master_key is None  # the README's first command: an open gateway
    monkeypatch.setenv("LITELLM_MASTER_KEY", "sk-from-litellm-env")
    assert load_config(None).master_key == "sk-from-litellm-env"
    monkeypatch.setenv("LIVEGATE_MASTER_KEY", "sk-from-livegate-env")
    assert load_config(None).master_key == "sk-from-livegate-env"
    assert parse_config({"general_settings": {"master_key": "sk-in-the-file"}}).master_key == "sk-in-the-file"


async def test_a_budget_runs_out_on_the_built_in_simulator(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LIVEGATE_MASTER_KEY", "sk-offline-master-key")
    monkeypatch.setenv("LIVEGATE_DB", str(tmp_path / "offline.db"))
    from livegate.cli import with_default_store

    config = with_default_store(load_config(None))  # what `livegate` with no --config serves
    app = create_app(config, simulator_chunk_delay=0)
    async with serve(app) as url, httpx.AsyncClient(
            base_url=url, headers={"Authorization": "Bearer sk-offline-master-key"}) as http:
        created = await http.post("/key/generate", json={"max_budget": 0.0002, "models": ["my-agent"]})
        assert created.status_code == 200, created.text
        key = created.json()["key"]
        ws_url = url.replace("http", "ws") + "/v1/realtime?model=my-agent"
        turns, errors = 0, []
        async with connect(ws_url, additional_headers={"Authorization": f"Bearer {key}"}) as ws:
            await ws.send(json.dumps({"type": "session.update", "session": {"type": "realtime",
                                                                             "output_modalities": ["text"]}}))
            with contextlib.suppress(ConnectionClosed):
                await _ask(ws, "Hello there, simulator")
                while True:
                    async with asyncio.timeout(10):
                        event = json.loads(await ws.recv())
                    if event["type"] == "response.done":
                        turns += 1
                        await _ask(ws, f"Turn {turns}: tell me more about budgets")
                    elif event["type"] == "error":
                        errors.append(event["error"])
            assert ws.close_code == 4029
        assert turns >= 1 and errors[-1]["code"] == "insufficient_quota"
        status, error = await refusal(connect(ws_url, additional_headers={"Authorization": f"Bearer {key}"}))
        assert status == 429 and error["code"] == "budget_exceeded"
        await asyncio.sleep(0.1)
        await app.state.gateway.accounting.writer.flush()
        rows = (await http.get("/spend/logs", params={"api_key": key})).json()
        assert len(rows) == 1 and rows[0]["upstream_model"] == "livegate-simulator"
        price = PRICES.lookup("gemini-3.8-live")
        assert price is not None
        expected = sum(rows[0][f"{name}_tokens"] * getattr(price, name) for name in (
            "input_text", "input_audio", "output_text", "output_audio"))
        assert rows[0]["spend"] == pytest.approx(expected) and rows[0]["spend"] >= 0.0002


async def _ask(ws: Any, text: str) -> None:
    with contextlib.suppress(ConnectionClosed):  # livegate may be closing: what it sent is still read
        await ws.send(json.dumps({"type": "conversation.item.create", "item": {
            "type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}}))
        await ws.send(json.dumps({"type": "response.create"}))
