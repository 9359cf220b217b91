"""A virtual key with a budget: mint it with the master key, talk with it until the budget is spent, and
see livegate stop the session and refuse the next one.

    LIVEGATE_MASTER_KEY=sk-master-demo livegate                                   # in one terminal
    LIVEGATE_MASTER_KEY=sk-master-demo python examples/budget.py                 # in another

The key API is LiteLLM's (POST /key/generate, GET /key/info); the key is then used like any OpenAI key.
The offline simulator is priced like the model it imitates (Gemini 3.8 Live), so a budget of a tenth of a
cent runs out within a few turns. Against a real Gemini the same calls spend real money.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from typing import Any

import httpx
from openai import AsyncOpenAI
from websockets.exceptions import ConnectionClosed


class Refused(Exception):
    """livegate refused a request or stopped the session; the message is livegate's own."""


def mint_key(http: httpx.Client, model: str, budget: float) -> str:
    reply = http.post("/key/generate", json={"models": [model], "max_budget": budget, "metadata": {"example": True}})
    if reply.status_code != 200:
        error = reply.json().get("error", {})
        hint = " (start livegate with LIVEGATE_MASTER_KEY set)" if reply.status_code == 403 else ""
        raise Refused(f"{error.get('code')}: {error.get('message')}{hint}")
    key: str = reply.json()["key"]
    return key


def spent(http: httpx.Client, key: str) -> float:
    """What the key has spent so far (GET /key/info, asked with the key itself)."""
    info: dict[str, Any] = http.get("/key/info", headers={"Authorization": f"Bearer {key}"}).json()["info"]
    return float(info["spend"])


async def talk_until_stopped(url: str, model: str, key: str, http: httpx.Client, turns: int) -> str | None:
    """Turn after turn with `key`; returns livegate's reason when it stops the session (None: it never did)."""
    client = AsyncOpenAI(api_key=key, websocket_base_url=url)
    async with client.realtime.connect(model=model) as conn:
        await conn.session.update(session={"type": "realtime", "output_modalities": ["text"]})
        for turn in range(1, turns + 1):
            await conn.conversation.item.create(item={"type": "message", "role": "user", "content": [
                {"type": "input_text", "text": f"This is turn {turn}. Tell me something about budgets."}]})
            await conn.response.create()
            async for event in conn:
                if event.type == "error":
                    return f"{event.error.code}: {event.error.message}"
                if event.type == "response.done":
                    usage = event.response.usage
                    tokens = usage.total_tokens if usage else 0
                    print(f"turn {turn}: {tokens} tokens; the key has spent ${spent(http, key):.6f}")
                    break
    return None


async def reconnect(url: str, model: str, key: str) -> None:
    client = AsyncOpenAI(api_key=key, websocket_base_url=url)
    async with client.realtime.connect(model=model) as conn:
        async for event in conn:
            if event.type == "error":
                raise Refused(f"{event.error.code}: {event.error.message}")
            if event.type == "session.created":
                return


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=0.001, help="the key's max_budget in USD")
    parser.add_argument("--turns", type=int, default=30, help="give up after this many turns")
    parser.add_argument("--url", default=os.environ.get("LIVEGATE_URL", "http://127.0.0.1:4000"),
                        help="livegate's address (default: $LIVEGATE_URL, else http://127.0.0.1:4000)")
    parser.add_argument("--model", default="gpt-realtime")
    args = parser.parse_args()
    master = os.environ.get("LIVEGATE_MASTER_KEY")
    if not master:
        print("set LIVEGATE_MASTER_KEY to the master key livegate was started with", file=sys.stderr)
        return 1
    ws_url = args.url.replace("http", "ws", 1) + "/v1"
    try:
        with httpx.Client(base_url=args.url, headers={"Authorization": f"Bearer {master}"}, timeout=10) as http:
            key = mint_key(http, args.model, args.budget)
            print(f"minted a key with a ${args.budget} budget for {args.model}")
            try:
                stop = asyncio.run(talk_until_stopped(ws_url, args.model, key, http, args.turns))
            except ConnectionClosed as closed:  # closed before its error event could be read
                frame = closed.rcvd or closed.sent
                stop = f"{frame.reason} (close code {frame.code})" if frame else "the connection dropped"
            if stop is None:
                print(f"the budget lasted {args.turns} turns: raise --turns or lower --budget", file=sys.stderr)
                return 1
            print(f"livegate stopped the session: {stop}")
            try:
                asyncio.run(reconnect(ws_url, args.model, key))
                print("livegate let the spent key in again", file=sys.stderr)
                return 1
            except Refused as refusal:
                print(f"the next session was refused: {refusal}")
            print(f"the key has spent ${spent(http, key):.6f} of ${args.budget}")
    except Refused as refusal:
        print(f"livegate refused: {refusal}", file=sys.stderr)
        return 1
    except (httpx.TransportError, OSError) as exc:
        print(f"cannot reach livegate at {args.url} ({exc}): is it running?", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
