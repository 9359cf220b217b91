"""Metrics labels come from bounded sets (issue 18, item 8): a client's own close code is a label only when
livegate knows it, else `other`. And a setting puts /metrics and readiness behind the master key (off by
default, as LiteLLM's are); liveliness stays open."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

from livegate.config import ConfigError, parse_config
from tests.test_accounting_api import MASTER, _auth, _connect, _served


async def test_unknown_close_codes_fold_into_other(tmp_path: Path) -> None:
    async with _served(tmp_path, reattach_grace_s=0) as served:
        for code in (1000, 3000, 3001, 4100, 4999, 4321):
            async with _connect(served, MASTER) as ws:
                await ws.recv()  # session.created
                await ws.close(code=code)
        expected = 'livegate_sessions_ended_total{close_code="other",route="/v1/realtime"} 5.0'
        for _ in range(100):  # the sessions' ends are counted as their tasks finish
            text = (await served.http.get("/metrics")).text
            if expected in text and 'close_code="1000"' in text:
                break
            await asyncio.sleep(0.05)
    codes = set(re.findall(r'livegate_sessions_ended_total\{close_code="([^"]+)"', text))
    assert codes == {"1000", "other"} and expected in text, text


async def test_monitoring_endpoints_need_the_master_key_when_asked(tmp_path: Path) -> None:
    async with _served(tmp_path) as open_by_default:
        assert (await open_by_default.http.get("/metrics")).status_code == 200
        assert (await open_by_default.http.get("/health/readiness")).status_code == 200
    async with _served(tmp_path / "closed", require_master_key_for_monitoring=True) as served:
        key = await served.key()
        for path in ("/metrics", "/health/readiness"):
            for headers in ({}, _auth(key), _auth("sk-wrong-000000000000"), {"x-goog-api-key": key}):
                response = await served.http.get(path, headers=headers)
                assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_api_key"
                assert "livegate_" not in response.text
            assert (await served.http.get(path, headers=_auth(MASTER))).status_code == 200
        assert (await served.http.get("/health/liveliness")).status_code == 200


def test_litellm_metrics_auth_setting_is_honoured_and_needs_a_master_key() -> None:
    config = parse_config({"general_settings": {"master_key": MASTER},
                           "litellm_settings": {"require_auth_for_metrics_endpoint": True}})
    assert config.monitoring_needs_master_key
    assert not parse_config({"general_settings": {"master_key": MASTER}}).monitoring_needs_master_key
    with pytest.raises(ConfigError, match=r"needs general_settings\.master_key"):
        parse_config({"livegate_settings": {"require_master_key_for_monitoring": True}})
