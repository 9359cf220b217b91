"""Helper functions whose fast paths must keep the meaning of the slow, obvious version."""

from __future__ import annotations

import base64
import binascii
import itertools
import json
import random

import pytest

from livegate.mapping.functions import b64_standard, is_base64
from livegate.translation.translator import _may_hold_snake_keys, camelize, camelize_frame


def _decodes(data: str) -> bool:
    """The obvious check: Python's strict decoder, after normalising alphabet and padding."""
    try:
        base64.b64decode(b64_standard(data), validate=True)
    except (binascii.Error, ValueError):
        return False
    return True


def test_every_real_encoding_is_accepted_in_both_alphabets_padded_or_not() -> None:
    rng = random.Random(7)
    for length in range(0, 70):
        raw = rng.randbytes(length)
        for encoded in (base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode()):
            assert is_base64(encoded), encoded
            assert is_base64(encoded.rstrip("=")), encoded


def test_never_accepts_what_the_decoder_rejects() -> None:
    """Exhaustive over short strings of representative characters, then random longer ones."""
    alphabet = "Aa9+/-_= \n*é"
    for length in range(0, 6):
        for chars in itertools.product(alphabet, repeat=length):
            data = "".join(chars)
            if is_base64(data):
                assert _decodes(data), repr(data)
    rng = random.Random(11)
    for _ in range(20000):
        data = "".join(rng.choice("QUJD+/_-=" if rng.random() < 0.9 else "QUJD+/_-= \x00é\n")
                       for _ in range(rng.randrange(0, 40)))
        if is_base64(data):
            assert _decodes(data), repr(data)


@pytest.mark.parametrize("data", ["A", "AAAAA", "AA=A", "AAA==", "A===", "====", "AA\nAA", "AAAA ", "QUJD\u00e9",
                                  "AAAA=", "AAAAA==="])
def test_malformed_base64_is_rejected(data: str) -> None:
    assert not is_base64(data)


def _random_json(rng: random.Random, depth: int = 0) -> object:
    words = ["turn_complete", "modelTurn", "a_b", "é_x", "data", "x\n_y", "_", "k\"_q", "plain", "mime_type"]
    kind = rng.random()
    if depth > 3 or kind < 0.3:
        return rng.choice([rng.choice(words), 1, None, True, "AA_-", 'say "a_b": x'])
    if kind < 0.5:
        return [_random_json(rng, depth + 1) for _ in range(rng.randrange(3))]
    return {rng.choice(words): _random_json(rng, depth + 1) for _ in range(rng.randrange(4))}


def test_camelize_is_skipped_only_when_it_would_change_nothing() -> None:
    rng = random.Random(3)
    for _ in range(3000):
        message = {"serverContent": _random_json(rng)}
        for raw in (json.dumps(message), json.dumps(message, ensure_ascii=False, separators=(",", ":")),
                    json.dumps(message, indent=1).encode()):
            parsed = json.loads(raw)
            assert camelize_frame(parsed) == camelize(message), raw
            assert (camelize_frame(parsed) is parsed) == (camelize(parsed) is parsed)
            if camelize(parsed) is not parsed:  # the translator's pre-scan of the raw text never misses one
                assert _may_hold_snake_keys(raw), raw
    escaped = '{"server\\u005fcontent": {"turnComplete": true}}'  # an underscore spelled as a JSON escape
    assert camelize(json.loads(escaped)) != json.loads(escaped) and _may_hold_snake_keys(escaped)
