"""Helper functions callable from mapping expressions (JMESPath custom functions).

Everything a mapping needs that JMESPath lacks: ids, the clock, base64 and JSON helpers, dynamic
keys, and named templates (`shape`). One `Helpers` instance per translator, so ids and clocks can be
made deterministic for tests.

Each is a function of its arguments, as jmespath's own are, except the fresh values: `new_id` (a new
id each call) and `now` / `now_ms` (the clock). Helpers that carry state from one input to the next
(codec streams) are transform steps instead (mapping/transforms.py), whose state the session holds.
"""

from __future__ import annotations

import itertools
import secrets
import time
from collections.abc import Callable
from typing import Any, TypeVar

import orjson
from jmespath import functions

from livegate.mapping.expressions import EXPLICIT_NULL, truthy

_URLSAFE_TO_STD = str.maketrans("-_", "+/")


class RandomIds:
    """Unguessable ids in OpenAI's `prefix_...` style (20 hex digits of the OS's randomness, as
    `secrets.token_hex(10)` gives); cheap, since every event gets one: the randomness is read 4 KB at a time,
    not with a system call per id. The pool is per object (per session)."""

    __slots__ = ("_at", "_pool")
    _DIGITS = 20
    _POOL_BYTES = 4096

    def __init__(self) -> None:
        self._pool = ""
        self._at = 0

    def new(self, prefix: str) -> str:
        at = self._at
        if at + self._DIGITS > len(self._pool):
            self._pool, at = secrets.token_bytes(self._POOL_BYTES).hex(), 0
        self._at = at + self._DIGITS
        return f"{prefix}_{self._pool[at:at + self._DIGITS]}"


class SequentialIds:
    """Deterministic ids for tests and snapshots: `resp_001`, `resp_002`, `item_001`..."""

    def __init__(self) -> None:
        self._counters: dict[str, itertools.count[int]] = {}

    def new(self, prefix: str) -> str:
        counter = self._counters.setdefault(prefix, itertools.count(1))
        return f"{prefix}_{next(counter):03d}"


_STANDARD = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def b64_standard(data: str) -> str:
    """Base64 in the standard alphabet with padding, whichever alphabet or padding came in, and canonical:
    the bits of the last character that encode no byte are zero (lenient decoders ignore them, strict ones
    such as Gemini's types refuse them; the bytes are the same)."""
    if "-" in data or "_" in data:
        data = data.translate(_URLSAFE_TO_STD)
    body = len(data.rstrip("="))
    unused = (0, 0, 0b1111, 0b11)[body % 4]  # 2 chars carry 1 byte (4 spare bits), 3 chars 2 bytes (2)
    if unused:
        index = _STANDARD.find(data[body - 1])
        if index & unused:
            data = data[:body - 1] + _STANDARD[index & ~unused] + data[body:]
    missing = -len(data) % 4
    return data + "=" * missing if missing else data


_BASE64_CHARS = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/-_="


def is_base64(data: str) -> bool:
    """Base64 in either alphabet, padded or not, checked without decoding (every audio chunk passes here).

    Padding, when present, must complete the last group of four exactly; a lone last character
    (length % 4 == 1) can't encode a byte. No whitespace, no padding inside.
    """
    if data.encode().translate(None, _BASE64_CHARS):  # anything outside both alphabets (non-ASCII included)
        return False
    body = len(data.rstrip("="))
    padding = len(data) - body
    if padding and (padding > 2 or len(data) % 4):
        return False
    return body % 4 != 1 and data.find("=", 0, body) < 0


def base64_size(data: str) -> int:
    """The bytes a valid base64 string decodes to, from its length alone (no decoding)."""
    return len(data.rstrip("=")) * 3 // 4


def whole_samples(data: str, width: float) -> bool:
    """Whether base64 `data` decodes to whole samples of `width` bytes, from its length alone."""
    return base64_size(data) % int(width) == 0


F = TypeVar("F", bound=Callable[..., Any])


def pure(implementation: Callable[..., Any]) -> Callable[[F], F]:
    """Marks a helper as `implementation`, a plain function of the same arguments: generated expressions
    call it directly (mapping/codegen.py's FunctionCall), the helper stays for JMESPath's own dispatch."""
    def mark(method: F) -> F:
        method.direct = implementation  # type: ignore[attr-defined]
        return method
    return mark


def parse_data_url(url: str | None) -> dict[str, Any] | None:
    """`data:<mime>[;param...];base64,<data>` as {mime_type, data, bytes}; None when it is not one."""
    if not url or not url.startswith("data:") or "," not in url:
        return None
    head, data = url[5:].split(",", 1)
    params = head.split(";")
    if params[-1].lower() != "base64" or not data or not is_base64(data):
        return None
    return {"mime_type": params[0].strip().lower(), "data": data, "bytes": base64_size(data)}


def deep_merge(base: Any, update: Any) -> Any:
    """`update` merged into `base`: objects merge key by key, an explicit null replaces.

    Below the top level, an object carrying a `type` is a variant (an audio format, a turn detection
    mode) and replaces the old one whole instead of mixing fields of two variants.
    """
    if not isinstance(base, dict) or not isinstance(update, dict):
        return update
    out = dict(base)
    for key, value in update.items():
        old = out.get(key)
        variant = isinstance(value, dict) and "type" in value
        out[key] = deep_merge(old, value) if isinstance(old, dict) and not variant else value
    return out


class Helpers(functions.Functions):
    """The custom functions. Signatures are checked by JMESPath when called."""

    def __init__(self, ids: RandomIds | SequentialIds | None = None,
                 clock: Callable[[], float] = time.time,
                 shapes: dict[str, Callable[[Any], Any]] | None = None) -> None:
        super().__init__()
        self.ids = ids or RandomIds()
        self.clock = clock
        self.shapes = shapes if shapes is not None else {}

    @functions.signature({"types": ["string"]})
    def _func_new_id(self, prefix: str) -> str:
        """A fresh id with the given prefix (`new_id('resp')`)."""
        return self.ids.new(prefix)

    @functions.signature()
    def _func_now(self) -> int:
        """Unix time in whole seconds."""
        return int(self.clock())

    @functions.signature()
    def _func_now_ms(self) -> int:
        """Unix time in whole milliseconds (for timers the pump keeps)."""
        return int(self.clock() * 1000)

    @functions.signature({"types": ["string"]})
    @pure(b64_standard)
    def _func_b64_standard(self, data: str) -> str:
        return b64_standard(data)

    @functions.signature({"types": ["string", "null"]})
    def _func_duration_ms(self, duration: str | None) -> int | None:
        """A protobuf Duration as JSON (`"1.5s"`) in whole milliseconds; null when absent or malformed."""
        if not duration or not duration.endswith("s"):
            return None
        try:
            return round(float(duration[:-1]) * 1000)
        except ValueError:
            return None

    @functions.signature({"types": ["string"]})
    @pure(is_base64)
    def _func_is_base64(self, data: str) -> bool:
        return is_base64(data)

    @functions.signature({"types": ["string"]}, {"types": ["number"]})
    @pure(whole_samples)
    def _func_whole_samples(self, data: str, width: int) -> bool:
        return whole_samples(data, width)

    @functions.signature({"types": []})
    def _func_to_json(self, value: Any) -> str:
        """Compact JSON text of any value (OpenAI sends function arguments as a JSON string)."""
        return orjson.dumps(value).decode()

    @functions.signature({"types": ["string"]})
    def _func_parse_json_or_string(self, text: str) -> Any:
        """The JSON value `text` holds, or `text` itself when it is not JSON."""
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:
            return text

    @functions.signature({"types": ["object", "null"]}, {"types": ["string", "null"]}, {"types": []})
    def _func_get(self, obj: dict[str, Any] | None, key: str | None, default: Any) -> Any:
        """`obj[key]`, or `default` when `obj` has no such key: JMESPath has no dynamic keys.

        A null key is null, never the default: `get(tables.voices, typo, 'alloy')` must not quietly
        pick the default for a key that was never there to look up.
        """
        if key is None:
            return None
        if obj is None:
            return default
        return obj.get(key, default)

    @functions.signature({"types": ["object", "null"]}, {"types": ["string"]})
    def _func_field(self, obj: dict[str, Any] | None, key: str) -> Any:
        """`obj[key]` where a present-but-null field stays null in a template instead of dropping."""
        if obj is None or key not in obj:
            return None
        value = obj[key]
        return EXPLICIT_NULL if value is None else value

    @functions.signature({"types": ["object", "null"]}, {"types": ["object", "null"]})
    def _func_deep_merge(self, base: dict[str, Any] | None, update: dict[str, Any] | None) -> Any:
        """`update` merged into `base` (see `deep_merge`)."""
        if update is None:
            return base
        top = {**(base or {})}
        for key, value in update.items():
            top[key] = deep_merge(top.get(key), value)
        return top

    @functions.signature({"types": ["object", "null"]}, {"types": ["string"]}, {"types": []})
    def _func_with_key(self, obj: dict[str, Any] | None, key: str, value: Any) -> dict[str, Any]:
        """A copy of `obj` with `key` set to `value` (removed when `value` is null)."""
        out = dict(obj or {})
        if value is None:
            out.pop(key, None)
        else:
            out[key] = value
        return out

    @functions.signature({"types": ["array", "null"]}, {"types": ["string"]}, {"types": []})
    def _func_find(self, items: list[Any] | None, key: str, value: Any) -> Any:
        """The first object in `items` whose `key` equals `value`, or null (a filter cannot see outer names)."""
        for item in items or ():
            if isinstance(item, dict) and item.get(key) == value:
                return item
        return None

    @functions.signature({"types": ["array", "null"]}, {"types": ["string"]}, {"types": []})
    def _func_remove(self, items: list[Any] | None, key: str, value: Any) -> list[Any]:
        """A copy of `items` without the objects whose `key` equals `value`."""
        return [item for item in items or () if not (isinstance(item, dict) and item.get(key) == value)]

    @functions.signature({"types": ["array", "null"]}, {"types": ["string"]}, {"types": []}, {"types": ["object"]})
    def _func_patch(self, items: list[Any] | None, key: str, value: Any, changes: dict[str, Any]) -> list[Any]:
        """A copy of `items` where each object whose `key` equals `value` has `changes` merged in (null removes)."""
        out = []
        for item in items or ():
            if isinstance(item, dict) and item.get(key) == value:
                item = {**item, **changes}
                item = {k: v for k, v in item.items() if v is not None}
            out.append(item)
        return out

    @functions.signature({"types": ["array", "null"]}, {"types": []})
    def _func_append(self, items: list[Any] | None, value: Any) -> list[Any]:
        """A copy of `items` with `value` added at the end."""
        return [*(items or []), value]

    @functions.signature({"types": []}, {"types": []}, {"types": []})
    def _func_if(self, condition: Any, then: Any, otherwise: Any) -> Any:
        """`then` when `condition` is truthy (JMESPath truthiness), else `otherwise`."""
        return then if truthy(condition) else otherwise

    @functions.signature({"types": ["number"]}, {"types": ["number"]})
    def _func_add(self, a: float, b: float) -> float:
        return a + b

    @functions.signature({"types": ["string"]}, {"types": []})
    def _func_shape(self, name: str, value: Any) -> Any:
        """Apply the named template from mappings/shapes/ to `value` (bound as `it`)."""
        try:
            template = self.shapes[name]
        except KeyError:
            raise functions.exceptions.JMESPathError(f"unknown shape {name!r}") from None
        return template(value)

    @functions.signature({"types": ["object", "null"]}, {"types": ["object", "null"]})
    def _func_changed_keys(self, update: dict[str, Any] | None, current: dict[str, Any] | None) -> list[str]:
        """The keys `update` sets to something other than null and other than `current` has."""
        current = current or {}
        return [key for key, value in (update or {}).items() if value is not None and value != current.get(key)]

    @functions.signature({"types": []}, {"types": ["string"]})
    def _func_at(self, value: Any, path: str) -> Any:
        """The value at a dotted path (`at(event.session, 'audio.output.speed')`), for paths held in tables."""
        for key in path.split("."):
            if not isinstance(value, dict):
                return None
            value = value.get(key)
        return value

    @functions.signature({"types": ["string"]}, {"types": ["string"]})
    def _func_decode_audio_once(self, codec: str, data: str) -> str:
        """A whole G.711 clip (an item's audio) as base64 PCM16 at 16 kHz, apart from the live stream."""
        from livegate.translation import audio  # numpy: only for telephony sessions (see mapping/transforms.py)

        return audio.TelephonyDecoder(codec).decode(data)

    @functions.signature({"types": ["string", "null"]})
    def _func_data_url(self, url: str | None) -> dict[str, Any] | None:
        """A base64 data URL as {mime_type (lower case), data, bytes (decoded size)}; null for anything else
        (an http URL, a file id, a URL that is not base64)."""
        return parse_data_url(url)

    @functions.signature({"types": ["array", "null"]}, {"types": []})
    def _func_index_of(self, items: list[Any] | None, value: Any) -> int | None:
        """The position of the first element equal to `value`, null when there is none (to name `param`)."""
        for index, item in enumerate(items or []):
            if item == value:
                return index
        return None

    @functions.signature({"types": ["array", "null"]}, {"types": ["string", "null"]}, {"types": ["string", "null"]})
    def _func_after(self, items: list[Any] | None, key: str | None, value: str | None) -> list[Any]:
        """The objects of `items` after the last one whose `key` equals `value`; all of them when none does
        (or `value` is null)."""
        items = items or []
        for index in range(len(items) - 1, -1, -1):
            if value is not None and isinstance(items[index], dict) and items[index].get(key) == value:
                return items[index + 1:]
        return list(items)

    @functions.signature({"types": ["array", "null"]}, {"types": ["string"]}, {"types": []})
    def _func_split_after_last(self, items: list[Any] | None, key: str, value: Any) -> list[list[Any]]:
        """[head, tail]: `items` cut after the last object whose `key` equals `value` (head ends with it);
        [[], items] when none does. The turns after the model's last one are the question it owes."""
        items = items or []
        for index in range(len(items) - 1, -1, -1):
            if isinstance(items[index], dict) and items[index].get(key) == value:
                return [items[: index + 1], items[index + 1:]]
        return [[], list(items)]

    @functions.signature({"types": ["string", "null"]}, {"types": ["number"]})
    def _func_low_level_silence(self, mime: str | None, ms: float) -> list[str]:
        """`ms` of room-tone-level noise (not digital zero) as base64 PCM16 chunks of 100 ms, at the rate
        of `mime` (`audio/pcm;rate=16000`; 16 kHz without one): what a voice activity detector hears as
        the speaker having stopped, where a stream that just ends is not heard at all."""
        from livegate.translation.audio_level import low_level_noise

        return low_level_noise(mime, ms)

    @functions.signature({"types": ["number", "null"]}, {"types": ["number", "null"]})
    def _func_multiply(self, a: float | None, b: float | None) -> float | None:
        """`a * b` (JMESPath has no arithmetic), null when either is null; floor() it for a token count."""
        return None if a is None or b is None else a * b
