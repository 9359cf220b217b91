"""Transform steps: the helpers that keep state between inputs, out of the expression language.

A JMESPath function is a function of its arguments (jmespath's own are, and so are livegate's, except
the fresh values `new_id`, `now` and `now_ms`). A codec is not: each chunk continues the stream its
resampler filters. Such a helper is a step a rule declares under `transform:`, naming its state:

    transform:
      g711: {step: encode_audio, state: session.output_encoder, codec: "=session.output_codec",
             audio: "=part.inlineData.data"}

The translator runs a rule's steps after its `let`s and before its `set`s, binds each result to its
name for the rule (as `let` does), and keeps each step's next state in the session key `state:`
names. That key is declared `type: stream` in mappings/state.yaml, with the files whose steps may use
it as writers; no expression reads it and no `set` writes it (the loader checks both).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from livegate.mapping.expressions import EXPLICIT_NULL, Build, Runtime, Scope

Run = Callable[..., tuple[Any, Any]]  # (state, **inputs) -> (result, next state)


@dataclass(frozen=True)
class StepKind:
    name: str
    stream: str  # what its state is; the steps sharing a state key must keep the same kind of state
    inputs: tuple[str, ...]
    run: Run


STEPS: dict[str, StepKind] = {}


def _step(name: str, stream: str, inputs: tuple[str, ...]) -> Callable[[Run], Run]:
    def register(run: Run) -> Run:
        STEPS[name] = StepKind(name, stream, inputs, run)
        return run

    return register


def _telephony() -> Any:
    """livegate.translation.audio, imported by the first telephony session: numpy would add about 0.2 s to every
    start-up of a gateway that may never see G.711."""
    from livegate.translation import audio

    return audio


def _text(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string, not {type(value).__name__}")
    return value


@_step("decode_audio", stream="G.711 decoder", inputs=("codec", "audio"))
def _decode_audio(state: Any, codec: str | None, audio: Any) -> tuple[Any, Any]:
    """The client's G.711 chunk (codec pcmu or pcma) as base64 PCM16 at 16 kHz, continuing the stream;
    null without a codec."""
    if codec is None:
        return None, state
    if state is None or state.codec != codec:
        state = _telephony().TelephonyDecoder(_text("codec", codec))
    return state.decode(_text("audio", audio)), state


@_step("encode_audio", stream="G.711 encoder", inputs=("codec", "audio"))
def _encode_audio(state: Any, codec: str | None, audio: Any) -> tuple[Any, Any]:
    """Gemini's PCM16 24 kHz chunk as base64 G.711 at 8 kHz, continuing the stream; null without a codec.
    An empty string when the chunk completes no 8 kHz sample yet (its samples go out with the next)."""
    if codec is None:
        return None, state
    if state is None or state.codec != codec:
        state = _telephony().TelephonyEncoder(_text("codec", codec))
    return state.encode(_text("audio", audio)), state


@_step("flush_audio", stream="G.711 encoder", inputs=("codec",))
def _flush_audio(state: Any, codec: str | None) -> tuple[Any, Any]:
    """The encoder's last samples (the resampler's delay) at the end of an audio item; the stream ends
    (the next chunk starts a new one). Null without a codec."""
    if codec is None:
        return None, state
    if state is None or state.codec != codec:
        state = _telephony().TelephonyEncoder(_text("codec", codec))
    return state.flush(), None


@_step("audio_level", stream="answer loudness meter", inputs=("response", "audio", "mime", "window_ms", "level"))
def _audio_level(state: Any, response: str | None, audio: Any, mime: str | None,
                 window_ms: float | None, level: float | None) -> tuple[Any, Any]:
    """How loud the first `window_ms` of a response's audio (Gemini's PCM16) is: null while it is still being
    heard (and after), then once {mean_level, ms}: the mean absolute sample value over what was heard. The
    verdict comes early once what was heard already makes the window's mean reach `level`, whatever follows
    (speech does after a chunk). A new response starts a new meter."""
    from livegate.translation.audio_level import LevelMeter

    if response is None or not window_ms:
        return None, state
    if state is None or state.response != response:
        state = LevelMeter(response, float(window_ms), float(level or 0.0))
    return state.hear(_text("audio", audio), mime), state


@dataclass(frozen=True)
class Transform:
    """One compiled `transform:` entry: `name` is bound to the step's result, its state kept in `state`."""

    name: str
    kind: StepKind
    state: str  # the session key
    inputs: tuple[tuple[str, Build], ...]

    def __call__(self, runtime: Runtime, scope: Scope) -> tuple[Any, Any]:
        """(result, next state) of the step, given the state the session holds now."""
        args = {}
        for name, build in self.inputs:
            value = build(runtime, scope)
            args[name] = None if value is EXPLICIT_NULL else value
        return self.kind.run(scope["session"].get(self.state), **args)
