"""Guardrails: checks on what the user says (`pre_call`: each user turn's text, or its transcript as it
arrives) and on what the model says (`during_call`: the answer's transcript as it streams).

The config shape is LiteLLM's (`guardrails:` at the top of the file; `guardrail_name`, and `litellm_params`
with `guardrail`, `mode`, `default_on`). Built-ins:
- `deny_list`: phrases (case-insensitive, whole words) and regexes;
- `pii`: the redaction detectors (redaction.py): `action: block` (default) or `mask` (the text is rewritten
  with placeholders before Gemini gets it; only a typed user turn can be rewritten);
- `generic_guardrail_api`: POST the text to `api_base` (LiteLLM's Generic Guardrail API shape: `{"texts",
  "input_type"}` in, `{"action": "NONE" | "BLOCKED" | "GUARDRAIL_INTERVENED", "blocked_reason", "texts"}`
  out), with a `timeout` and `unreachable_fallback: fail_closed | fail_open` for an answer that does not come
  or does not parse.

Which run for a session: every `default_on` guardrail, plus the ones its model entry (`guardrails:` in its
params), its key (`metadata.guardrails`) and its key's team (`metadata.guardrails`) name. A session's
guardrails of one stage run in config order, each seeing the previous one's rewrite; the first block wins.

The runner is I/O (an HTTP guardrail awaits its answer): the session core asks for a check with a command
(`CheckGuardrail`), the pump awaits `SessionGuardrails.check` and hands the `Verdict` back to the core.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from livegate.observability.redaction import ORDER, Redactor

log = logging.getLogger("livegate.guardrails")

STAGES = ("pre_call", "during_call")
KINDS = ("deny_list", "pii", "generic_guardrail_api")
DEFAULT_REFUSAL = "I'm sorry, I can't help with that."
DEFAULT_TIMEOUT_S = 2.0

Action = Literal["allow", "block", "rewrite"]


class GuardrailConfigError(ValueError):
    """A guardrail entry that cannot be built (the message names the entry and the field)."""


@dataclass(frozen=True)
class Verdict:
    """What a check decided: allow, block (by `guardrail`, for `reason`), or rewrite the text (`text`)."""

    action: Action
    guardrail: str | None = None
    reason: str = ""
    text: str | None = None
    refusal: str = DEFAULT_REFUSAL

    def as_event(self, stage: str) -> dict[str, Any]:
        """The decision as the mapping rules read it (`event.guardrail`, lifecycle/guardrail_blocked)."""
        out: dict[str, Any] = {"verdict": self.action, "stage": stage, "refusal": self.refusal}
        if self.guardrail is not None:
            out["name"] = self.guardrail
        if self.reason:
            out["reason"] = self.reason
        if self.text is not None:
            out["text"] = self.text
        return out


ALLOW = Verdict("allow")


@dataclass(frozen=True)
class CheckContext:
    session_id: str | None = None


class Guardrail:
    """One configured guardrail. Subclasses decide; `check` never raises (a failure is a verdict)."""

    kind = ""

    def __init__(self, name: str, params: Mapping[str, Any]) -> None:
        self.name = name
        mode = params.get("mode", "pre_call")
        modes = [mode] if isinstance(mode, str) else list(mode or [])
        for m in modes:
            if m not in STAGES:
                raise GuardrailConfigError(f"guardrails[{name}].litellm_params.mode: {m!r} does not apply to "
                                           f"realtime sessions; use {' or '.join(STAGES)}")
        self.modes = frozenset(modes)
        self.default_on = bool(params.get("default_on", False))
        self.refusal = str(params.get("refusal") or DEFAULT_REFUSAL)

    async def check(self, text: str, stage: str, context: CheckContext) -> Verdict:
        raise NotImplementedError

    def block(self, reason: str) -> Verdict:
        return Verdict("block", self.name, reason, refusal=self.refusal)


class DenyList(Guardrail):
    kind = "deny_list"

    def __init__(self, name: str, params: Mapping[str, Any]) -> None:
        super().__init__(name, params)
        phrases = [str(p) for p in params.get("deny") or []]
        try:
            self.patterns = [re.compile(r"(?<!\w)" + r"\s+".join(map(re.escape, p.split())) + r"(?!\w)", re.IGNORECASE)
                             for p in phrases if p.strip()]
            self.patterns += [re.compile(str(p)) for p in params.get("patterns") or []]
        except re.error as exc:
            raise GuardrailConfigError(f"guardrails[{name}].litellm_params.patterns: {exc}") from None
        if not self.patterns:
            raise GuardrailConfigError(f"guardrails[{name}].litellm_params: a deny_list needs `deny` phrases or "
                                       "`patterns`")

    async def check(self, text: str, stage: str, context: CheckContext) -> Verdict:
        for pattern in self.patterns:
            if pattern.search(text):
                return self.block("a denied phrase")  # the phrase itself is not repeated anywhere
        return ALLOW


class PiiGuardrail(Guardrail):
    kind = "pii"

    def __init__(self, name: str, params: Mapping[str, Any]) -> None:
        super().__init__(name, params)
        try:
            self.redactor = Redactor(params.get("detectors") or ORDER, params.get("custom_patterns") or None)
        except (ValueError, re.error) as exc:
            raise GuardrailConfigError(f"guardrails[{name}].litellm_params.detectors: {exc}") from None
        self.action = params.get("action", "block")
        if self.action not in ("block", "mask"):
            raise GuardrailConfigError(f"guardrails[{name}].litellm_params.action: expected block or mask")

    async def check(self, text: str, stage: str, context: CheckContext) -> Verdict:
        findings = self.redactor.find(text)
        if not findings:
            return ALLOW
        kinds = ", ".join(sorted({f.kind for f in findings}))
        if self.action == "mask":
            return Verdict("rewrite", self.name, f"masked {kinds}", self.redactor.redact(text), self.refusal)
        return self.block(f"personal data ({kinds})")


class HttpGuardrail(Guardrail):
    """LiteLLM's Generic Guardrail API: the text goes to a service of the operator's, which decides."""

    kind = "generic_guardrail_api"

    def __init__(self, name: str, params: Mapping[str, Any]) -> None:
        super().__init__(name, params)
        self.url = params.get("api_base")
        if not isinstance(self.url, str) or not self.url.startswith(("http://", "https://")):
            raise GuardrailConfigError(f"guardrails[{name}].litellm_params.api_base: expected an http(s) URL")
        self.api_key = params.get("api_key")
        self.timeout = float(params.get("timeout", DEFAULT_TIMEOUT_S))
        fallback = params.get("unreachable_fallback", "fail_closed")
        if fallback not in ("fail_closed", "fail_open"):
            raise GuardrailConfigError(f"guardrails[{name}].litellm_params.unreachable_fallback: expected fail_closed "
                                       "or fail_open")
        self.fail_open = fallback == "fail_open"
        self.extra = dict(params.get("additional_provider_specific_params") or {})
        self._client: Any = None

    def __repr__(self) -> str:  # never print the key
        return f"HttpGuardrail({self.name!r}, {self.url!r})"

    async def check(self, text: str, stage: str, context: CheckContext) -> Verdict:
        import httpx

        if self._client is None:
            self._client = httpx.AsyncClient()
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        body = {"texts": [text], "input_type": "request" if stage == "pre_call" else "response",
                "litellm_call_id": context.session_id, "additional_provider_specific_params": self.extra}
        try:
            async with asyncio.timeout(self.timeout):
                answer = await self._client.post(self.url, json=body, headers=headers)
            if answer.status_code != 200:
                return self._unreachable(f"HTTP {answer.status_code}")
            data = answer.json()
        except TimeoutError:
            return self._unreachable(f"no answer within {self.timeout:g} s")
        except (httpx.HTTPError, ValueError) as exc:
            return self._unreachable(type(exc).__name__)
        action = data.get("action") if isinstance(data, dict) else None
        if action == "NONE":
            return ALLOW
        if action == "BLOCKED":
            return self.block(str(data.get("blocked_reason") or "blocked by the guardrail service")[:200])
        texts = data.get("texts") if isinstance(data, dict) else None
        if action == "GUARDRAIL_INTERVENED" and isinstance(texts, list) and texts and isinstance(texts[0], str):
            return Verdict("rewrite", self.name, "rewritten by the guardrail service", texts[0], self.refusal)
        return self._unreachable("an answer that is not NONE, BLOCKED or GUARDRAIL_INTERVENED")

    def _unreachable(self, why: str) -> Verdict:
        if self.fail_open:
            log.warning("guardrail %s: %s; the text passes (unreachable_fallback: fail_open)", self.name, why)
            return ALLOW
        log.warning("guardrail %s: %s; the text is blocked (unreachable_fallback: fail_closed)", self.name, why)
        return self.block(f"the guardrail service failed ({why})")

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None


_BUILDERS: dict[str, type[Guardrail]] = {"deny_list": DenyList, "pii": PiiGuardrail,
                                         "generic_guardrail_api": HttpGuardrail}


def build_guardrails(entries: Iterable[Mapping[str, Any]]) -> dict[str, Guardrail]:
    """The config's `guardrails:` list, built and checked (GuardrailConfigError names what is wrong)."""
    out: dict[str, Guardrail] = {}
    for i, entry in enumerate(entries):
        name = entry.get("guardrail_name")
        params = entry.get("litellm_params") or {}
        if not isinstance(name, str) or not name:
            raise GuardrailConfigError(f"guardrails[{i}].guardrail_name: required")
        if name in out:
            raise GuardrailConfigError(f"guardrails[{i}].guardrail_name: {name!r} is defined twice")
        kind = params.get("guardrail")
        if kind not in _BUILDERS:
            raise GuardrailConfigError(f"guardrails[{i}] ({name}).litellm_params.guardrail: {kind!r} is not a "
                                       f"guardrail livegate runs; use one of {', '.join(KINDS)}")
        out[name] = _BUILDERS[kind](name, params)
    return out


Observer = Callable[[str, str, Verdict, float], None]  # (guardrail, stage, verdict, seconds)


@dataclass
class SessionGuardrails:
    """The guardrails one session runs, by stage, in config order."""

    by_stage: dict[str, list[Guardrail]]
    context: CheckContext = field(default_factory=CheckContext)
    observers: list[Observer] = field(default_factory=list)

    @property
    def stages(self) -> dict[str, bool]:
        """Which stages have guardrails (the translator reads it as `config.guardrails`)."""
        return {stage: bool(self.by_stage.get(stage)) for stage in STAGES}

    async def check(self, stage: str, text: str) -> Verdict:
        """Run the stage's guardrails in order; the first block wins, a rewrite feeds the next."""
        rewritten: Verdict | None = None
        for guardrail in self.by_stage.get(stage, ()):
            started = time.perf_counter()
            try:
                verdict = await guardrail.check(text, stage, self.context)
            except Exception:  # a guardrail bug fails closed: the text is not let through unchecked
                log.exception("guardrail %s failed", guardrail.name)
                verdict = guardrail.block("the guardrail failed")
            seconds = time.perf_counter() - started
            for observe in self.observers:
                observe(guardrail.name, stage, verdict, seconds)
            if verdict.action == "block":
                return verdict
            if verdict.action == "rewrite" and verdict.text is not None:
                text, rewritten = verdict.text, verdict
        if rewritten is not None:
            return Verdict("rewrite", rewritten.guardrail, rewritten.reason, text, rewritten.refusal)
        return ALLOW


class Guardrails:
    """The gateway's guardrails (built from the config once), and which ones a session runs."""

    def __init__(self, guardrails: Mapping[str, Guardrail]) -> None:
        self.all = dict(guardrails)

    def for_session(self, named: Iterable[str], session_id: str | None = None) -> SessionGuardrails | None:
        """The default-on guardrails plus the `named` ones (model entry, key, team); None when there are none.
        A name no guardrail has is logged and skipped (a key may outlive a config change)."""
        wanted = {name for name, g in self.all.items() if g.default_on}
        for name in named:
            if name in self.all:
                wanted.add(name)
            else:
                log.warning("no guardrail named %r is configured; it was skipped", name)
        if not wanted:
            return None
        by_stage: dict[str, list[Guardrail]] = {}
        for name, guardrail in self.all.items():
            if name in wanted:
                for stage in STAGES:
                    if stage in guardrail.modes:
                        by_stage.setdefault(stage, []).append(guardrail)
        return SessionGuardrails(by_stage, CheckContext(session_id)) if by_stage else None

    async def close(self) -> None:
        for guardrail in self.all.values():
            if isinstance(guardrail, HttpGuardrail):
                await guardrail.close()


def names_in(metadata: Any) -> list[str]:
    """The guardrail names a key's or team's metadata asks for (`metadata.guardrails`, as LiteLLM keeps them)."""
    names = metadata.get("guardrails") if isinstance(metadata, dict) else None
    return [str(n) for n in names] if isinstance(names, list) else []
