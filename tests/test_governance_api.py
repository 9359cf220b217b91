"""The management API as a platform team uses it, on SQLite and on a real PostgreSQL: strict bodies and
queries on every endpoint (a typo is a 400 naming the field, nothing is created), teams and users with
LiteLLM's endpoints and fields, admission only when key, team and user all allow it, spend charged to all
three, key regenerate / block / unblock (also mid-session), /v1/models and /model/info, spend reports with
CSV, the live-session and recent-error endpoints."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from openai.types import Model

from livegate.accounting.keys import hash_key
from livegate.server import strict
from tests.fakes.postgres import PostgresServer
from tests.governance_support import MASTER, Gov, auth, governed, text_turn, until_closed


@pytest.fixture
async def gov(database_url: str) -> AsyncIterator[Gov]:
    async with governed(database_url) as served:
        yield served


async def _counts(gov: Gov) -> tuple[int, int, int]:
    keys = (await gov.ok("GET", "/key/list"))["total_count"]
    teams = len(await gov.ok("GET", "/team/list"))
    users = (await gov.ok("GET", "/user/list"))["total"]
    return keys, teams, users


DOC = json.loads((strict.SCHEMAS_DIR / "management.schema.json").read_text())


def _resolved(schema: dict[str, Any]) -> dict[str, Any]:
    return _resolved(DOC["$defs"][schema["$ref"].rsplit("/", 1)[-1]]) if "$ref" in schema else schema


def _valid_value(schema: dict[str, Any]) -> Any:
    """A value the schema takes (for the required fields around a wrong one)."""
    schema = _resolved(schema)
    if "anyOf" in schema:
        return _valid_value(schema["anyOf"][0])
    kinds = schema.get("type")
    kinds = [kinds] if isinstance(kinds, str) else kinds or []
    if "array" in kinds:
        return [_valid_value(schema["items"])]
    if "object" in kinds:
        return {name: _valid_value(schema["properties"][name]) for name in schema.get("required", [])}
    return "t0"


def _wrong_value(schema: dict[str, Any]) -> Any:
    """A JSON value of a type the schema does not take (None when every type is taken)."""
    schema = _resolved(schema)
    kinds = schema.get("type")
    if kinds is None:
        return None
    kinds = [kinds] if isinstance(kinds, str) else kinds
    for value, kind in (("text", "string"), ({"an": "object"}, "object"), (12345, "integer"), ([1], "array")):
        if kind not in kinds and not (kind == "integer" and "number" in kinds):
            return value
    return None


# --- the strict API ---------------------------------------------------------------------------------------------


async def test_every_endpoint_refuses_unknown_fields_and_wrong_types(gov: Gov) -> None:
    """Each endpoint of schemas/management.schema.json, with a misspelt field and with a wrong type: a 400
    naming the field, and nothing created or changed."""
    await gov.ok("POST", "/team/new", {"team_id": "t0"})
    before = await _counts(gov)
    checked = 0
    for endpoint, parts in DOC["endpoints"].items():
        method, path = endpoint.split(" ", 1)
        part = "body" if "body" in parts else "query"
        known = list(parts[part].get("properties", {}))
        typo = (known[0] + "x") if known else "unexpected"
        sent: dict[str, Any] = {"body": {typo: 1}} if part == "body" else {"params": {typo: "1"}}
        status, error = await gov.error(method, path, **sent)
        assert (status, error["code"], error["param"]) == (400, "unknown_field", typo), (endpoint, error)
        assert "nothing was created or changed" in error["message"]
        if known:
            assert f"did you mean `{known[0]}`?" in error["message"], (endpoint, error["message"])
        for name, schema in parts[part].get("properties", {}).items():
            wrong = _wrong_value(schema)
            if wrong is None or (part == "query" and not isinstance(wrong, str)):
                continue
            base = {r: _valid_value(parts[part]["properties"][r]) for r in parts[part].get("required", []) if r != name}
            sent = {"body": {**base, name: wrong}} if part == "body" else {"params": {**base, name: wrong}}
            status, error = await gov.error(method, path, **sent)
            assert status == 400 and error["param"] == name, (endpoint, name, error)
            assert error["code"] in ("invalid_type", "invalid_value"), (endpoint, name, error)
            checked += 1
    assert checked > 60
    assert await _counts(gov) == before


async def test_every_endpoint_needs_a_key_and_most_the_master_key(gov: Gov) -> None:
    key = await gov.key(key_alias="plain")
    secret = (await gov.http.post("/v1/realtime/client_secrets", headers=auth(key), json={})).json()["value"]
    for_keys = {"GET /key/info", "GET /spend/logs", "GET /spend/report", "GET /v1/models"}  # about themselves
    for endpoint in DOC["endpoints"]:
        method, path = endpoint.split(" ", 1)
        body = {} if method == "POST" else None
        response = await gov.http.request(method, path, json=body, headers={"Authorization": ""})
        assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_api_key", endpoint
        response = await gov.http.request(method, path, json=body, headers=auth(secret))
        assert response.status_code == 403, (endpoint, "a client secret opens sessions, nothing else")
        response = await gov.http.request(method, path, json=body, headers=auth(key))
        assert (response.status_code == 200) == (endpoint in for_keys), (endpoint, response.text)
        if endpoint not in for_keys:
            assert response.status_code == 403 and response.json()["error"]["code"] == "forbidden", endpoint


async def test_key_endpoint_refusals(gov: Gov) -> None:
    key = await gov.key(key_alias="first")
    other = await gov.key(key_alias="second")
    custom = "sk-custom-key-0123456789"
    await gov.key(key=custom)
    for body, param, message in (({"key": custom}, "key", "already exists"), ({"key": "sk-short"}, "key", "20"),
                                 ({"key": MASTER}, "key", "master key")):
        status, error = await gov.error("POST", "/key/generate", body)
        assert (status, error["param"]) == (400, param) and message in error["message"], error
    status, error = await gov.error("POST", "/key/update", {"key": "sk-unknown-key-00000000", "max_budget": 1})
    assert (status, error["code"]) == (404, "key_not_found")
    status, error = await gov.error("POST", "/key/delete", {})
    assert (status, error["code"]) == (400, "missing_required_parameter")
    status, error = await gov.error("POST", "/key/delete", {"keys": [other, "sk-unknown-key-00000000"]})
    assert (status, error["code"]) == (404, "key_not_found") and "1 of 2" in error["message"]
    assert (await gov.ok("GET", "/key/info", params={"key": other}))["info"]["key_alias"] == "second"  # kept
    status, error = await gov.error("GET", "/key/info")
    assert (status, error["param"]) == (400, "key")
    response = await gov.http.get("/key/info", params={"key": other}, headers=auth(key))
    assert response.status_code == 403  # a key reads only its own info
    await gov.ok("POST", "/key/delete", {"keys": [other]})
    status, error = await gov.error("GET", "/key/info", params={"key": other})
    assert (status, error["code"]) == (404, "key_not_found")
    status, error = await gov.error("POST", "/key/delete", {"keys": [other]})  # already deleted
    assert (status, error["code"]) == (404, "key_not_found")


async def test_the_issue_typo_and_litellm_fields_livegate_refuses(gov: Gov) -> None:
    status, error = await gov.error("POST", "/key/generate", {"max_budgett": 1})
    assert status == 400 and error["param"] == "max_budgett" and "did you mean `max_budget`?" in error["message"]
    status, error = await gov.error("POST", "/key/generate", {"max_budget": "5"})
    assert error["code"] == "invalid_type" and "expected a number or null, got a string" in error["message"]
    status, error = await gov.error("POST", "/key/generate", {"tpm_limit": 100})
    assert error["param"] == "tpm_limit" and "not supported by livegate" in error["message"]
    status, error = await gov.error("POST", "/team/new", {"members_with_roles": [{"user_id": "u", "rol": "admin"}]})
    assert error["param"] == "members_with_roles[0].rol" and "did you mean `role`?" in error["message"]
    status, error = await gov.error("GET", "/key/list", params={"size": "500"})
    assert error["param"] == "size" and error["code"] == "invalid_value"
    status, error = await gov.error("GET", "/key/list", params={"page": "two"})
    assert error["param"] == "page" and error["code"] == "invalid_type"
    status, error = await gov.error("POST", "/key/generate", {"budget_duration": "monthly"})
    assert error["param"] == "budget_duration" and '"30d"' in error["message"]
    response = await gov.http.post("/key/generate", content=b"not json")
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_json"
    assert await _counts(gov) == (0, 0, 0)


# --- teams, users and keys ------------------------------------------------------------------------------------


async def test_teams_users_members_and_keys_litellm_shapes(gov: Gov) -> None:
    alice = await gov.ok("POST", "/user/new", {"user_id": "alice", "user_alias": "Alice", "max_budget": 3,
                                                "user_email": "alice@example.com", "key_alias": "alice-key"})
    assert alice["key"].startswith("sk-") and alice["token"] == hash_key(alice["key"])  # auto_create_key
    await gov.ok("POST", "/user/new", {"user_id": "bob", "auto_create_key": False})
    team = await gov.ok("POST", "/team/new", {
        "team_id": "eng", "team_alias": "Engineering", "models": ["gpt-realtime"], "max_budget": 2,
        "budget_duration": "30d", "rpm_limit": 50, "max_parallel_requests": 4, "tags": ["eng"],
        "members_with_roles": [{"user_id": "alice", "role": "admin"}]})
    assert team["team_id"] == "eng" and team["budget_reset_at"] and team["members_with_roles"] == [
        {"user_id": "alice", "role": "admin"}]
    generated = await gov.ok("POST", "/team/new", {"team_alias": "no id given"})
    assert len(generated["team_id"]) == 36  # a UUID, as LiteLLM makes
    key = await gov.key(team_id="eng", user_id="alice", key_alias="eng-alice")
    # refusals that name what is wrong, and create nothing
    for param, missing in (("team_id", "nope"), ("user_id", "nobody")):
        status, error = await gov.error("POST", "/key/generate", {param: missing})
        assert (status, error["param"]) == (400, param) and f"'{missing}'" in error["message"]
    status, error = await gov.error("POST", "/team/new", {"team_id": "eng"})
    assert status == 400 and "already exists" in error["message"]
    status, error = await gov.error("POST", "/team/new", {"team_id": "x", "members_with_roles": [{"user_id": "zed"}]})
    assert status == 400 and error["param"] == "members_with_roles" and "zed" in error["message"]
    status, error = await gov.error("POST", "/user/new", {"user_id": "carol", "teams": ["nope"]})
    assert status == 400 and error["param"] == "teams"
    status, error = await gov.error("POST", "/user/new", {"user_id": "alice"})
    assert status == 400 and "already exists" in error["message"]
    assert (await _counts(gov))[1:] == (2, 2)
    # membership
    await gov.ok("POST", "/team/member_add", {"team_id": "eng", "member": [{"user_id": "bob"}]})
    info = await gov.ok("GET", "/team/info", params={"team_id": "eng"})
    assert {m["user_id"]: m["role"] for m in info["team_info"]["members_with_roles"]} == {"alice": "admin",
                                                                                          "bob": "user"}
    assert [k["key_alias"] for k in info["keys"]] == ["eng-alice"]
    assert [t["team_id"] for t in await gov.ok("GET", "/team/list", params={"user_id": "bob"})] == ["eng"]
    await gov.ok("POST", "/team/member_delete", {"team_id": "eng", "user_id": "bob"})
    status, error = await gov.error("POST", "/team/member_delete", {"team_id": "eng", "user_id": "bob"})
    assert status == 404 and error["code"] == "member_not_found"
    status, error = await gov.error("POST", "/team/member_add", {"team_id": "nope", "member": {"user_id": "bob"}})
    assert status == 404 and error["code"] == "team_not_found"
    user = await gov.ok("GET", "/user/info", params={"user_id": "alice"})
    assert user["teams"] == [{"team_id": "eng", "role": "admin"}] and len(user["keys"]) == 2
    assert user["user_info"]["user_email"] == "alice@example.com"
    # updates and lists
    updated = await gov.ok("POST", "/team/update", {"team_id": "eng", "max_budget": 5, "models": None})
    assert updated["max_budget"] == 5 and updated["models"] == []
    assert (await gov.ok("POST", "/user/update", {"user_id": "bob", "rpm_limit": 7}))["rpm_limit"] == 7
    listed = await gov.ok("GET", "/user/list", params={"page": "1", "page_size": "1"})
    assert listed["total"] == 2 and listed["total_pages"] == 2 and len(listed["users"]) == 1
    by_team = await gov.ok("GET", "/key/list", params={"team_id": "eng", "return_full_object": "true"})
    assert [k["team_id"] for k in by_team["keys"]] == ["eng"] and by_team["keys"][0]["user_id"] == "alice"
    for path, body, code in (("/team/update", {"team_id": "nope"}, "team_not_found"),
                             ("/user/update", {"user_id": "nope"}, "user_not_found"),
                             ("/team/delete", {"team_ids": ["nope"]}, "team_not_found"),
                             ("/user/delete", {"user_ids": ["nope"]}, "user_not_found")):
        status, error = await gov.error("POST", path, body)
        assert (status, error["code"]) == (404, code)
    for path, query, code in (("/team/info", {"team_id": "nope"}, "team_not_found"),
                              ("/user/info", {"user_id": "nope"}, "user_not_found")):
        status, error = await gov.error("GET", path, params=query)
        assert (status, error["code"]) == (404, code)
    # only the master key manages
    for method, path in (("POST", "/team/new"), ("GET", "/team/list"), ("POST", "/user/new"), ("GET", "/user/list"),
                         ("GET", "/model/info"), ("GET", "/session/list"), ("GET", "/errors/recent")):
        response = await gov.http.request(method, path, json={} if method == "POST" else None, headers=auth(key))
        assert response.status_code == 403, (path, response.text)
    # deleting a team deletes its keys: they stop working
    deleted = await gov.ok("POST", "/team/delete", {"team_ids": ["eng"]})
    assert deleted == {"deleted_teams": ["eng"], "deleted_keys": 1}
    assert (await gov.refused(key))[0] == 401
    assert (await gov.ok("POST", "/user/delete", {"user_ids": ["alice"]}))["deleted_keys"] == 1
    assert (await gov.http.get("/key/info", headers=auth(alice["key"]))).status_code == 401


async def test_admission_needs_key_team_and_user_to_allow_it(gov: Gov) -> None:
    await gov.ok("POST", "/user/new", {"user_id": "u1", "models": ["gpt-realtime", "offline"],
                                       "auto_create_key": False})
    await gov.ok("POST", "/team/new", {"team_id": "t1", "models": ["gpt-realtime", "gpt-realtime-mini"]})
    key = await gov.key(team_id="t1", user_id="u1", models=["all-team-models"])
    async with gov.connect(key) as ws:
        await text_turn(ws)
    status, error = await gov.refused(key, "gpt-realtime-mini")  # the team allows it, the user does not
    assert status == 403 and error["code"] == "model_not_allowed" and "user" in error["message"]
    status, error = await gov.refused(key, "offline")  # the user allows it, the team does not
    assert status == 403 and "team" in error["message"]
    # a team's limits: parallel sessions across its keys, then the rate
    other = await gov.key(team_id="t1")
    await gov.ok("POST", "/team/update", {"team_id": "t1", "max_parallel_requests": 1})
    async with gov.connect(key) as ws:
        await text_turn(ws)
        status, error = await gov.refused(other)
        assert status == 429 and error["code"] == "realtime_session_limit" and "team 't1'" in error["message"].lower()
    await asyncio.sleep(0.2)
    await gov.ok("POST", "/team/update", {"team_id": "t1", "max_parallel_requests": None, "rpm_limit": 1})
    async with gov.connect(key):
        pass
    status, error = await gov.refused(other)  # the team's second session this minute
    assert status == 429 and error["code"] == "rate_limit_exceeded" and "team 't1'" in error["message"].lower()
    # budgets: the user's, then the team's
    await gov.ok("POST", "/team/update", {"team_id": "t1", "rpm_limit": None})
    await gov.ok("POST", "/user/update", {"user_id": "u1", "max_budget": 0.5, "spend": 0.5})
    status, error = await gov.refused(key)
    assert status == 429 and error["code"] == "budget_exceeded" and "user 'u1'" in error["message"]
    async with gov.connect(other) as ws:  # not the user's key: unaffected
        await text_turn(ws)
    await gov.ok("POST", "/team/update", {"team_id": "t1", "max_budget": 1, "spend": 1})
    status, error = await gov.refused(other)
    assert status == 429 and "team 't1'" in error["message"].lower()
    # a blocked team: 403 for its keys
    await gov.ok("POST", "/team/update", {"team_id": "t1", "max_budget": None})
    await gov.ok("POST", "/team/block", {"team_id": "t1"})
    status, error = await gov.refused(other)
    assert status == 403 and error["code"] == "team_blocked"
    await gov.ok("POST", "/team/unblock", {"team_id": "t1"})
    async with gov.connect(other) as ws:
        await text_turn(ws)


async def test_spend_is_charged_to_key_team_and_user(gov: Gov) -> None:
    await gov.ok("POST", "/user/new", {"user_id": "payer", "auto_create_key": False})
    await gov.ok("POST", "/team/new", {"team_id": "billing", "team_alias": "Billing"})
    key = await gov.key(team_id="billing", user_id="payer", tags=["k"])
    async with gov.connect(key) as ws:
        await text_turn(ws)
    await asyncio.sleep(0.1)
    await gov.flush()
    row = (await gov.ok("GET", "/spend/logs", params={"team_id": "billing"}))[0]
    assert row["team_id"] == "billing" and row["user"] == "payer" and row["spend"] > 0
    key_spend = (await gov.ok("GET", "/key/info", params={"key": key}))["info"]["spend"]
    team_spend = (await gov.ok("GET", "/team/info", params={"team_id": "billing"}))["team_info"]["spend"]
    user_spend = (await gov.ok("GET", "/user/info", params={"user_id": "payer"}))["user_info"]["spend"]
    assert key_spend == pytest.approx(row["spend"]) and team_spend == pytest.approx(row["spend"])
    assert user_spend == pytest.approx(row["spend"])
    assert await gov.ok("GET", "/spend/logs", params={"user_id": "someone-else"}) == []


# --- key lifecycle --------------------------------------------------------------------------------------------


async def test_regenerate_keeps_settings_spend_and_history(gov: Gov) -> None:
    key = await gov.key(key_alias="rotating", models=["gpt-realtime"], max_budget=10, tags=["r"])
    async with gov.connect(key) as ws:
        await text_turn(ws)
    await asyncio.sleep(0.1)
    await gov.flush()
    spent = (await gov.ok("GET", "/key/info", params={"key": key}))["info"]["spend"]
    fresh = await gov.ok("POST", "/key/regenerate", {"key": key, "max_budget": 20})
    assert fresh["key"] != key and fresh["token"] == hash_key(fresh["key"])
    assert fresh["key_alias"] == "rotating" and fresh["models"] == ["gpt-realtime"] and fresh["max_budget"] == 20
    assert fresh["spend"] == pytest.approx(spent) and spent > 0
    status, error = await gov.refused(key)
    assert status == 401 and "regenerated" in error["message"]
    async with gov.connect(fresh["key"]) as ws:
        await text_turn(ws)
    await asyncio.sleep(0.1)
    await gov.flush()
    rows = await gov.ok("GET", "/spend/logs", params={"api_key": fresh["key"]})
    assert len(rows) == 2 and {r["api_key"] for r in rows} == {fresh["token"]}  # the history follows the key
    assert (await gov.ok("GET", "/key/list"))["total_count"] == 1
    # LiteLLM's path form, with a custom new key; the old secret is gone for good
    custom = "sk-custom-regenerated-000000"
    again = await gov.ok("POST", f"/key/{fresh['token']}/regenerate", {"new_key": custom})
    assert again["key"] == custom
    for old in (key, fresh["key"]):
        status, _ = await gov.error("POST", "/key/regenerate", {"key": old})
        assert status == 404
    status, error = await gov.error("POST", "/key/regenerate", {"key": custom, "new_key": "short"})
    assert status == 400 and error["param"] == "new_key"
    status, error = await gov.error("POST", "/key/regenerate", {})
    assert status == 400 and error["code"] == "missing_required_parameter"


async def test_regenerate_and_block_end_live_sessions(gov: Gov) -> None:
    key = await gov.key(key_alias="live")
    async with gov.connect(key) as ws:
        await text_turn(ws)
        fresh = await gov.ok("POST", "/key/regenerate", {"key": key})
        events = await until_closed(ws, timeout=5)
        assert ws.close_code == 4010
    error = next(e for e in events if e["type"] == "error")["error"]
    assert error["code"] == "invalid_api_key" and "regenerated" in error["message"]
    async with gov.connect(fresh["key"]) as ws:
        await text_turn(ws)
        blocked = await gov.ok("POST", "/key/block", {"key": fresh["key"]})
        assert blocked["blocked"] is True
        events = await until_closed(ws, timeout=5)
        assert ws.close_code == 4003
    assert next(e for e in events if e["type"] == "error")["error"]["code"] == "key_blocked"
    status, error = await gov.refused(fresh["key"])
    assert status == 403 and error["code"] == "key_blocked"
    assert (await gov.ok("POST", "/key/unblock", {"key": fresh["token"]}))["blocked"] is False
    async with gov.connect(fresh["key"]) as ws:
        await text_turn(ws)
    for path in ("/key/block", "/key/unblock"):
        status, error = await gov.error("POST", path, {"key": "sk-no-such-key-00000000"})
        assert (status, error["code"]) == (404, "key_not_found")
    # a team block ends its keys' sessions too
    await gov.ok("POST", "/team/new", {"team_id": "blockme"})
    member = await gov.key(team_id="blockme")
    async with gov.connect(member) as ws:
        await text_turn(ws)
        await gov.ok("POST", "/team/block", {"team_id": "blockme"})
        events = await until_closed(ws, timeout=5)
        assert ws.close_code == 4003
    assert next(e for e in events if e["type"] == "error")["error"]["code"] == "team_blocked"


# --- discovery ------------------------------------------------------------------------------------------------


async def test_models_lists_what_the_caller_may_use(gov: Gov) -> None:
    everything = await gov.ok("GET", "/v1/models")
    assert everything["object"] == "list"
    assert [m["id"] for m in everything["data"]] == ["gpt-realtime", "gpt-realtime-mini", "offline", "sim-*"]
    for entry in everything["data"]:
        Model.model_validate(entry)  # OpenAI's shape; the capability row rides in an extension field
    caps = everything["data"][0]["capabilities"]
    assert caps["output_modalities"] == ["AUDIO"] and caps["tools"] is True and caps["image_input"] is True
    await gov.ok("POST", "/team/new", {"team_id": "narrow", "models": ["gpt-realtime", "sim-one", "offline"]})
    key = await gov.key(team_id="narrow", models=["gpt-realtime", "sim-one", "gpt-realtime-mini"])
    mine = (await gov.http.get("/models", headers=auth(key))).json()
    assert [m["id"] for m in mine["data"]] == ["gpt-realtime", "sim-one"]  # key and team both allow these
    status, error = await gov.error("GET", "/v1/models", params={"limit": "5"})
    assert status == 400 and error["param"] == "limit"
    info = await gov.ok("GET", "/model/info")
    by_name = {m["model_name"]: m for m in info["data"]}
    assert by_name["gpt-realtime"]["litellm_params"]["model"] == "gemini/gemini-3.8-live"
    assert by_name["gpt-realtime"]["model_info"]["input_cost_per_audio_token"] == pytest.approx(3.0 / 1e6)
    assert by_name["offline"]["model_info"]["output_cost_per_audio_token"] == pytest.approx(12.0 / 1e6)
    assert "AIza" not in json.dumps(info) and MASTER not in json.dumps(info)  # no credential, ever
    assert (await gov.ok("GET", "/model/info", params={"model": "offline"}))["data"][0]["model_name"] == "offline"


# --- reports ----------------------------------------------------------------------------------------------------


async def test_spend_report_groups_ranges_and_csv(gov: Gov) -> None:
    await gov.ok("POST", "/team/new", {"team_id": "red", "team_alias": "Red"})
    await gov.ok("POST", "/user/new", {"user_id": "ann", "auto_create_key": False})
    red = await gov.key(team_id="red", user_id="ann", key_alias="red-key", tags=["alpha"])
    solo = await gov.key(key_alias="solo")
    for key, model, tags in ((red, "gpt-realtime", "beta"), (red, "gpt-realtime-mini", ""), (solo, "gpt-realtime", "")):
        async with gov.connect(key, model, headers={"tags": tags}) as ws:
            await text_turn(ws)
    await asyncio.sleep(0.1)
    await gov.flush()
    logs = await gov.ok("GET", "/spend/logs")
    assert len(logs) == 3
    total = sum(r["spend"] for r in logs)
    today = time.strftime("%Y-%m-%d", time.gmtime())
    by_key = await gov.ok("GET", "/spend/report", params={"start_date": today, "end_date": today})
    assert by_key["group_by"] == ["key"] and by_key["totals"]["sessions"] == 3
    assert by_key["totals"]["spend"] == pytest.approx(total)
    rows = {r["key_alias"]: r for r in by_key["rows"]}
    assert rows["red-key"]["sessions"] == 2 and rows["solo"]["sessions"] == 1
    assert rows["red-key"]["spend"] == pytest.approx(sum(r["spend"] for r in logs if r["api_key"] == hash_key(red)))
    for name in ("input_text_tokens", "output_audio_tokens", "prompt_tokens", "completion_tokens"):
        assert by_key["totals"][name] == sum(r[name] for r in logs)
    by_team = await gov.ok("GET", "/global/spend/report", params={"group_by": "team"})  # LiteLLM's path
    assert {(r["team_id"], r["team_alias"], r["sessions"]) for r in by_team["rows"]} == {("red", "Red", 2),
                                                                                        (None, None, 1)}
    by_tag = await gov.ok("GET", "/spend/report", params={"group_by": "tag"})
    tags = {r["tag"]: r["sessions"] for r in by_tag["rows"]}
    assert tags == {"alpha": 2, "beta": 1, None: 1}  # a row counts once per tag; totals once
    assert by_tag["totals"]["sessions"] == 3
    by_day_model = await gov.ok("GET", "/spend/report", params={"group_by": "day,model"})
    assert {(r["day"], r["model"], r["sessions"]) for r in by_day_model["rows"]} == {
        (today, "gpt-realtime", 2), (today, "gpt-realtime-mini", 1)}
    by_user = await gov.ok("GET", "/spend/report", params={"group_by": "internal_user", "team_id": "red"})
    assert [(r["user_id"], r["sessions"]) for r in by_user["rows"]] == [("ann", 2)]
    tagged = await gov.ok("GET", "/spend/report", params={"group_by": "model", "tag": "beta"})
    assert [(r["model"], r["sessions"]) for r in tagged["rows"]] == [("gpt-realtime", 1)]
    empty = await gov.ok("GET", "/spend/report", params={"start_date": "2020-01-01", "end_date": "2020-01-31"})
    assert empty["rows"] == [] and empty["totals"]["sessions"] == 0
    response = await gov.http.get("/spend/report", params={"group_by": "key,model", "format": "csv"})
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
    assert "attachment" in response.headers["content-disposition"]
    table = list(csv.DictReader(io.StringIO(response.text)))
    assert len(table) == 3 and {"api_key", "key_alias", "model", "spend", "input_audio_tokens"} <= set(table[0])
    assert sum(float(r["spend"]) for r in table) == pytest.approx(total)
    # a key reports on itself only
    own = (await gov.http.get("/spend/report", headers=auth(solo))).json()
    assert own["totals"]["sessions"] == 1
    assert (await gov.http.get("/spend/report", params={"api_key": red}, headers=auth(solo))).status_code == 403
    for query, param in (({"group_by": "week"}, "group_by"), ({"start_date": "2026-13-01"}, "start_date"),
                         ({"start_date": "2026-02-01", "end_date": "2026-01-01"}, "start_date"),
                         ({"format": "xml"}, "format")):
        status, error = await gov.error("GET", "/spend/report", params=query)
        assert (status, error["param"]) == (400, param), error


# --- live sessions and recent errors ----------------------------------------------------------------------------


async def test_live_sessions_end_button_and_recent_errors(gov: Gov) -> None:
    key = await gov.key(key_alias="watched", max_budget=5)
    await gov.refused("sk-not-a-key-0000000000")
    async with gov.connect(key) as ws:
        await text_turn(ws)
        listed = (await gov.ok("GET", "/session/list"))["data"]
        assert len(listed) == 1 and listed[0]["key_alias"] == "watched" and listed[0]["spend"] > 0
        assert (await gov.ok("POST", "/session/end", {"session_id": listed[0]["session_id"]}))["status"] == "ended"
        events = await until_closed(ws, timeout=5)
        assert ws.close_code == 4003
    assert next(e for e in events if e["type"] == "error")["error"]["code"] == "session_terminated"
    status, error = await gov.error("POST", "/session/end", {"session_id": "lg_nope"})
    assert (status, error["code"]) == (404, "session_not_found")
    await asyncio.sleep(0.1)
    errors = (await gov.ok("GET", "/errors/recent", params={"limit": "10"}))["data"]
    assert [e["kind"] for e in errors[:2]] == ["session", "refusal"]
    assert errors[0]["status"] == 4003 and errors[0]["code"] == "session_terminated" and errors[0]["key"] == "watched"
    assert errors[1]["code"] == "invalid_api_key" and errors[1]["status"] == 401
    assert "sk-not-a-key" not in json.dumps(errors) and key not in json.dumps(errors)


async def test_a_session_on_another_instance_is_ended_through_the_store(pg_server: PostgresServer) -> None:
    """Two gateways sharing a PostgreSQL store: the admin page of one ends a session running on the other."""
    database_url = pg_server.create_database()
    async with governed(database_url) as first, governed(database_url) as second:
        key = await first.key(max_parallel_requests=3)
        async with second.connect(key) as ws:
            await text_turn(ws)
            listed = (await first.ok("GET", "/session/list"))["data"]
            assert [s["instance"] for s in listed] == [second.accounting.instance_id]
            response = await first.http.post("/session/end", json={"session_id": listed[0]["session_id"]})
            assert response.status_code == 202 and response.json()["status"] == "stop_requested"
            await until_closed(ws, timeout=5)
            assert ws.close_code == 4003

