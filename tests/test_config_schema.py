"""The config file is checked against schemas/config.schema.json: every key declared with its meaning, wrong
types named with what was expected, environment references read, the reference rendered from the schema."""

from __future__ import annotations

from typing import Any

import pytest

from livegate.config import ConfigError, parse_config
from livegate.config_schema import known_keys, render_reference, schema


def _declared(node: dict[str, Any], path: str, out: list[tuple[str, dict[str, Any]]]) -> None:
    defs = schema()["$defs"]
    if "$ref" in node:
        node = {**defs[node["$ref"].split("/")[-1]], **node}
    for key, child in node.get("properties", {}).items():
        out.append((f"{path}.{key}", child))
        _declared(child, f"{path}.{key}", out)
    if "items" in node:
        _declared(node["items"], f"{path}[]", out)


def test_every_key_says_what_it_is_for() -> None:
    keys: list[tuple[str, dict[str, Any]]] = []
    _declared(schema(), "", keys)
    assert len(keys) > 40
    for name, node in keys:
        defs = schema()["$defs"]
        resolved = {**defs[node["$ref"].split("/")[-1]], **node} if "$ref" in node else node
        assert resolved.get("description"), f"{name}: no description"
        assert "type" in resolved, f"{name}: no type"


@pytest.mark.parametrize(("data", "message"), [
    ({"livegate_settings": {"reattach_grace_s": "long"}},
     'livegate_settings.reattach_grace_s: expected a number >= 0 (got "long")'),
    ({"livegate_settings": {"client_compression": "yes"}},
     "livegate_settings.client_compression: expected true or false"),
    ({"livegate_settings": {"spend_buffer_rows": 2.5}},
     "livegate_settings.spend_buffer_rows: expected a positive integer"),
    ({"livegate_settings": {"key_check_seconds": 0}},
     "livegate_settings.key_check_seconds: expected a positive number"),
    ({"model_list": [{"model_name": "m", "livegate_params": {"model": "openai/gpt"}}]},
     "model_list[0].livegate_params.model: expected `<provider>/<model id>` with provider gemini"),
    ({"model_list": [{"model_name": "m", "livegate_params": {"api_base": "x"}}]},
     "model_list[0].livegate_params.model: required"),
    ({"model_list": [{"livegate_params": {"model": "simulator/x"}}]}, "model_list[0].model_name: required"),
    ({"general_settings": {"database_url": "mysql://root:hunter2@db"}},
     "general_settings.database_url: expected postgresql://USER:PASSWORD@HOST:PORT/DB"),
    ({"model_list": {"model_name": "m"}}, "model_list: expected a list"),
])
def test_a_wrong_type_names_the_key_and_what_was_expected(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    assert message in str(info.value)
    assert "hunter2" not in str(info.value)  # a secret's value is never echoed


def test_environment_references_are_read_and_an_unset_one_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LG_MASTER", "sk-from-env")
    assert parse_config({"general_settings": {"master_key": "os.environ/LG_MASTER"}}).master_key == "sk-from-env"
    monkeypatch.delenv("LG_MASTER")
    with pytest.raises(ConfigError, match=r"general_settings\.master_key: environment variable LG_MASTER is not set"):
        parse_config({"general_settings": {"master_key": "os.environ/LG_MASTER"}})
    # A LiteLLM setting livegate does not read may name a variable that is not set here.
    parse_config({"router_settings": {"model_group_alias": "os.environ/NOT_SET_ANYWHERE"}})
    # ... but one it reads (the fleet's Redis) must be set.
    with pytest.raises(ConfigError, match=r"router_settings\.redis_password: environment variable NOT_SET_ANYWHERE"):
        parse_config({"router_settings": {"redis_password": "os.environ/NOT_SET_ANYWHERE"}})


def test_the_fleet_redis_in_litellm_s_words(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_PASSWORD", "hunter2")
    limits = parse_config({"router_settings": {"redis_host": "10.0.0.5", "redis_port": 6380,
                                               "redis_password": "os.environ/REDIS_PASSWORD"},
                           "litellm_settings": {"redis_host": "ignored", "redis_url": "redis://cache:6379/1"},
                           "general_settings": {"fail_closed_budget_enforcement": True},
                           "livegate_settings": {"lease_ttl_seconds": 9,
                                                 "budget_reservation_output_tokens": 512}}).limits
    assert (limits.redis_host, limits.redis_port, limits.redis_password) == ("10.0.0.5", 6380, "hunter2")
    assert limits.redis_url == "redis://cache:6379/1", "router_settings wins key by key over litellm_settings"
    assert limits.fail_closed and limits.lease_ttl_s == 9 and limits.reservation_output_tokens == 512
    assert "hunter2" not in repr(limits)
    assert not parse_config({}).limits.redis
    with pytest.raises(ConfigError, match=r"router_settings\.redis_url: expected redis://\[:PASSWORD@\]HOST:PORT/DB$"):
        parse_config({"router_settings": {"redis_url": "http://:hunter2@cache:6379"}})
    with pytest.raises(ConfigError, match=r"router_settings\.redis_hots: unknown key; did you mean `redis_host`\?"):
        parse_config({"router_settings": {"redis_hots": "cache"}})


def test_a_redis_without_redis_py_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "redis" else real(name, *a))
    with pytest.raises(ConfigError, match=r"needs redis-py: pip install 'livegate\[redis\]'"):
        parse_config({"router_settings": {"redis_host": "cache"}})
    assert not parse_config({}).limits.redis, "no Redis configured: redis-py is not needed"


def test_the_reference_lists_every_key_with_its_default() -> None:
    text = render_reference()
    for key in known_keys("livegate_settings"):
        assert f"`livegate_settings.{key}`" in text
    assert "| `livegate_settings.reattach_grace_s` | number | `30` |" in text
    assert "`general_settings.master_key` | string, secret |" in text
    assert "`model_list[].livegate_params` | object |  | The upstream (the same fields" in text
