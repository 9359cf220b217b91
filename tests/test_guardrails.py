"""Guardrails end to end: the openai SDK -> livegate -> the Gemini Live simulator (docs/operating/observability.md).

Typed turns and spoken ones (a sentence spoken by espeak-ng; the simulator is told its words, as its stand-in
for speech recognition), blocked before they are answered; answers blocked mid-stream; the HTTP guardrail's
allow, block, rewrite, fail-open and fail-closed against a guardrail service started on loopback.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi import FastAPI, Request
from openai import AsyncOpenAI

from livegate.config import parse_config
from livegate.server import create_app
from livegate.simulator import GeminiLiveSimulator
from tests.support import serve

MASTER = "sk-guardrail-test"
REFUSAL = "I can't discuss that."
DENIED = {"guardrail_name": "no-falcon", "litellm_params": {"guardrail": "deny_list", "mode": "pre_call",
                                                            "deny": ["project falcon"], "default_on": True,
                                                            "refusal": REFUSAL}}
NO_ZEBRA = {"guardrail_name": "no-zebra", "litellm_params": {"guardrail": "deny_list", "mode": "during_call",
                                                             "deny": ["zebra"], "default_on": True}}


def config(sim_url: str, guardrails: list[dict[str, Any]], **general: Any) -> Any:
    return parse_config({
        "model_list": [{"model_name": "gpt-realtime", "livegate_params": {
            "model": "gemini/gemini-3.8-live", "api_key": "AIza-x", "api_base": sim_url}}],
        "guardrails": guardrails, "general_settings": {"master_key": MASTER, **general}})


@contextlib.asynccontextmanager
async def gateway(guardrails: list[dict[str, Any]], **general: Any) -> AsyncIterator[tuple[str, GeminiLiveSimulator]]:
    async with GeminiLiveSimulator(chunk_delay=0) as sim, \
            serve(create_app(config(sim.url, guardrails, **general), simulator_chunk_delay=0)) as url:
        yield url, sim


def connect(url: str) -> Any:
    return AsyncOpenAI(api_key=MASTER, websocket_base_url=url.replace("http", "ws") + "/v1").realtime.connect(
        model="gpt-realtime")


async def until_done(conn: Any, count: int = 1) -> list[Any]:
    """Events up to the `count`-th response.done (error events included: a block sends one)."""
    events = []
    async with asyncio.timeout(20):
        async for event in conn:
            events.append(event)
            if event.type == "response.done":
                count -= 1
                if count == 0:
                    return events
    raise AssertionError("the connection closed first")


def sent_to_gemini(sim: GeminiLiveSimulator) -> str:
    return str([m for s in sim.sessions for m in s.received])


async def say(conn: Any, text: str) -> None:
    await conn.conversation.item.create(item={"type": "message", "role": "user",
                                              "content": [{"type": "input_text", "text": text}]})
    await conn.response.create()


# --- typed turns -------------------------------------------------------------------------------------------

async def test_a_blocked_typed_turn_is_answered_with_the_refusal_and_never_reaches_gemini() -> None:
    async with gateway([DENIED]) as (url, sim), connect(url) as conn:
        await conn.session.update(session={"type": "realtime", "output_modalities": ["text"]})
        await conn.conversation.item.create(event_id="evt_falcon", item={"type": "message", "role": "user", "content": [
            {"type": "input_text", "text": "Tell me about Project  Falcon"}]})
        await conn.response.create()
        events = await until_done(conn)
        await say(conn, "What is the weather like?")
        after = await until_done(conn)
    notice = next(e for e in events if e.type == "error")
    assert notice.error.code == "guardrail_blocked" and notice.error.event_id == "evt_falcon"
    assert "no-falcon" in notice.error.message
    done = events[-1].response
    assert done.status == "completed" and done.output[0].content[0].text == REFUSAL
    assert done.usage.total_tokens == 0, "the refusal used no tokens"
    assert not any(e.type == "conversation.item.added" and e.item.role == "user" for e in events), \
        "the blocked message was not added"
    assert "alcon" not in sent_to_gemini(sim), "Gemini never saw the blocked turn"
    assert after[-1].response.output[0].content[0].text == "[livegate simulator] You said: What is the weather like?"


async def test_pii_masked_before_gemini_gets_the_turn() -> None:
    mask = {"guardrail_name": "pii", "litellm_params": {"guardrail": "pii", "action": "mask", "default_on": True}}
    async with gateway([mask]) as (url, sim), connect(url) as conn:
        await conn.session.update(session={"type": "realtime", "output_modalities": ["text"]})
        await say(conn, "Write to jane.doe@example.com, card 4111 1111 1111 1111")
        events = await until_done(conn)
    added = next(e for e in events if e.type == "conversation.item.added" and e.item.role == "user")
    assert added.item.content[0].text == "Write to [EMAIL], card [CARD]"
    assert "jane.doe" not in sent_to_gemini(sim) and "4111" not in sent_to_gemini(sim)
    assert events[-1].response.output[0].content[0].text.endswith("You said: Write to [EMAIL], card [CARD]")


# --- answers -----------------------------------------------------------------------------------------------

async def test_a_blocked_answer_stops_mid_stream_with_the_part_sent() -> None:
    async with gateway([NO_ZEBRA]) as (url, _), connect(url) as conn:
        await conn.session.update(session={"type": "realtime", "output_modalities": ["text"]})
        await say(conn, "one two three four five six seven eight zebra nine ten eleven twelve")
        events = await until_done(conn)
        await say(conn, "Hello again")
        after = await until_done(conn)
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    done = events[-1].response
    assert done.status == "incomplete" and done.status_details.reason == "content_filter"
    kept = done.output[0].content[0].text
    assert kept == deltas and kept.startswith("[livegate simulator] You said: one two")
    assert "zebra" not in deltas.lower() and "eleven" not in deltas
    assert done.output[0].status == "incomplete"
    assert after[-1].response.status == "completed", "the session goes on"


# --- spoken turns (espeak-ng) -----------------------------------------------------------------------------

SPOKEN = "Tell me about project falcon. My card is 4111 1111 1111 1111."


def speech(text: str, tmp_path: Path) -> list[str]:
    """`text` spoken by espeak-ng as 24 kHz PCM16 chunks (base64), then the silence that ends the turn."""
    from tests.webrtc_support import espeak  # skips without espeak-ng

    samples = espeak(text, tmp_path / "speech.wav")[::2]  # 48 kHz -> 24 kHz
    pcm = (np.clip(samples / max(1.0, float(np.abs(samples).max())) * 12000, -32768, 32767)).astype("<i2").tobytes()
    pcm += bytes(int(0.8 * 24000) * 2)
    return [base64.b64encode(pcm[i:i + 9600]).decode() for i in range(0, len(pcm), 9600)]


async def test_a_blocked_spoken_turn_gets_a_spoken_refusal(tmp_path: Path) -> None:
    async with gateway([DENIED], store_prompts_in_spend_logs=True) as (url, sim):
        sim.hearing.append(SPOKEN)
        async with connect(url) as conn:
            await conn.session.update(session={"type": "realtime", "audio": {"input": {
                "transcription": {"model": "whisper-1"}}}})
            for chunk in speech(SPOKEN, tmp_path):
                await conn.input_audio_buffer.append(audio=chunk)
            events = await until_done(conn)
            session_id = events[0].session.id
        assert sim.sessions[0].setup is not None
        notice = next(e for e in events if e.type == "error")
        assert notice.error.code == "guardrail_blocked"
        responses = [e.response for e in events if e.type == "response.done"]
        assert len(responses) == 1, "the blocked turn's own answer was dropped"
        assert responses[0].output[0].content[0].transcript == f"[livegate simulator] {REFUSAL}"
        assert any(e.type == "response.output_audio.delta" for e in events), "the refusal is spoken"
        assert "You said" not in str([e for e in events if e.type.startswith("response.")])
        # the transcript kept in the spend store is redacted
        async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {MASTER}"}) as http:
            for _ in range(50):
                answer = await http.get(f"/spend/logs/{session_id}")
                if answer.status_code == 200:
                    break
                await asyncio.sleep(0.1)
        kept = answer.json()["transcript"]
        user = [t for t in kept["turns"] if t["role"] == "user"]
        assert user and "[CARD]" in user[0]["text"] and "4111" not in str(kept)


async def test_a_spoken_answer_is_cut_when_a_guardrail_blocks_it(tmp_path: Path) -> None:
    async with gateway([NO_ZEBRA]) as (url, sim):
        words = "one two three four five six seven zebra eight nine ten"
        sim.hearing.append(words)
        async with connect(url) as conn:
            await conn.session.update(session={"type": "realtime"})
            for chunk in speech(words, tmp_path):
                await conn.input_audio_buffer.append(audio=chunk)
            events = await until_done(conn)
    done = events[-1].response
    assert done.status == "incomplete" and done.status_details.reason == "content_filter"
    said = "".join(e.delta for e in events if e.type == "response.output_audio_transcript.delta")
    assert done.output[0].content[0].transcript == said and "zebra" not in said and said.startswith("[livegate")
    full = sum(1 for m in sim.sessions[0].sent if "inlineData" in str(m))
    audio = sum(1 for e in events if e.type == "response.output_audio.delta")
    assert 0 < audio < full, "the audio stopped at once"


# --- the HTTP guardrail --------------------------------------------------------------------------------------

@contextlib.asynccontextmanager
async def guardrail_service() -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
    """LiteLLM's Generic Guardrail API, as an operator would run it: blocks 'falcon', rewrites 'secret'."""
    app, seen = FastAPI(), []

    @app.post("/check")
    async def check(request: Request) -> dict[str, Any]:
        body = await request.json()
        seen.append({"body": body, "auth": request.headers.get("authorization")})
        text = body["texts"][0]
        if "falcon" in text.lower():
            return {"action": "BLOCKED", "blocked_reason": "falcon"}
        if "secret" in text:
            return {"action": "GUARDRAIL_INTERVENED", "texts": [text.replace("secret", "[withheld]")]}
        return {"action": "NONE"}

    @app.post("/slow")
    async def slow() -> dict[str, Any]:
        await asyncio.sleep(2)
        return {"action": "NONE"}

    async with serve(app) as url:
        yield url, seen


def http_guardrail(url: str, fallback: str, timeout: float = 2.0) -> dict[str, Any]:
    return {"guardrail_name": f"service-{fallback}", "litellm_params": {
        "guardrail": "generic_guardrail_api", "api_base": url, "api_key": "gr-key", "default_on": True,
        "unreachable_fallback": fallback, "timeout": timeout, "refusal": REFUSAL}}


async def test_http_guardrail_blocks_rewrites_and_allows() -> None:
    async with guardrail_service() as (service, seen), \
            gateway([http_guardrail(service + "/check", "fail_closed")]) as (url, sim), connect(url) as conn:
        await conn.session.update(session={"type": "realtime", "output_modalities": ["text"]})
        await say(conn, "about falcon")
        blocked = await until_done(conn)
        await say(conn, "my secret word")
        rewritten = await until_done(conn)
        await say(conn, "hello")
        allowed = await until_done(conn)
    assert blocked[-1].response.output[0].content[0].text == REFUSAL
    assert rewritten[-1].response.output[0].content[0].text.endswith("You said: my [withheld] word")
    assert allowed[-1].response.output[0].content[0].text.endswith("You said: hello")
    assert seen[0]["auth"] == "Bearer gr-key" and seen[0]["body"]["input_type"] == "request"
    assert "falcon" not in sent_to_gemini(sim) and "secret" not in sent_to_gemini(sim)


@pytest.mark.parametrize("fallback", ["fail_closed", "fail_open"])
async def test_http_guardrail_unreachable_or_slow(fallback: str) -> None:
    async with guardrail_service() as (service, _):
        down = http_guardrail("http://127.0.0.1:9/check", fallback)  # the discard port: nothing listens
        slow = {**http_guardrail(service + "/slow", fallback, timeout=0.3), "guardrail_name": "slow"}
        for guardrail in (down, slow):
            async with gateway([guardrail]) as (url, sim), connect(url) as conn:
                await conn.session.update(session={"type": "realtime", "output_modalities": ["text"]})
                await say(conn, "hello there")
                events = await until_done(conn)
            text = events[-1].response.output[0].content[0].text
            if fallback == "fail_closed":
                assert text == REFUSAL and "hello there" not in sent_to_gemini(sim)
            else:
                assert text.endswith("You said: hello there")


# --- which guardrails a session runs -----------------------------------------------------------------------

def deny(name: str, word: str) -> dict[str, Any]:
    return {"guardrail_name": name, "litellm_params": {"guardrail": "deny_list", "deny": [word], "refusal": REFUSAL}}


async def test_guardrails_named_by_the_model_entry_the_key_and_its_team() -> None:
    guardrails = [deny("by-model", "alpha"), deny("by-key", "bravo"), deny("by-team", "charlie"),
                  deny("unused", "delta")]
    async with GeminiLiveSimulator(chunk_delay=0) as sim:
        cfg = parse_config({
            "model_list": [{"model_name": "gpt-realtime", "livegate_params": {
                "model": "gemini/gemini-3.8-live", "api_key": "AIza-x", "api_base": sim.url,
                "guardrails": ["by-model"]}}],
            "guardrails": guardrails, "general_settings": {"master_key": MASTER}})
        async with serve(create_app(cfg, simulator_chunk_delay=0)) as url, httpx.AsyncClient(
                base_url=url, headers={"Authorization": f"Bearer {MASTER}"}) as http:
            team = (await http.post("/team/new", json={"team_alias": "support",
                                                       "metadata": {"guardrails": ["by-team"]}})).json()
            key = (await http.post("/key/generate", json={"team_id": team["team_id"],
                                                          "metadata": {"guardrails": ["by-key"]}})).json()["key"]
            answers: dict[str, list[str]] = {}
            for who, secret in (("team key", key), ("master", MASTER)):
                client = AsyncOpenAI(api_key=secret, websocket_base_url=url.replace("http", "ws") + "/v1")
                async with client.realtime.connect(model="gpt-realtime") as conn:
                    await conn.session.update(session={"type": "realtime", "output_modalities": ["text"]})
                    for word in ("alpha", "bravo", "charlie", "delta"):
                        await say(conn, f"say {word}")
                        answers.setdefault(who, []).append((await until_done(conn))[-1].response.output[0]
                                                           .content[0].text)
    assert answers["team key"][:3] == [REFUSAL] * 3 and answers["team key"][3].endswith("You said: say delta")
    assert answers["master"][0] == REFUSAL, "the model entry's guardrail runs for every key"
    assert [a.split(": ")[-1] for a in answers["master"][1:]] == ["say bravo", "say charlie", "say delta"]
