"""Hypothesis drives `voxws.protocol.parse`: whatever a client sends, parse returns a Message or
raises a ProtocolError whose code is in PROTOCOL.md and whose frame is valid JSON. Nothing else escapes.

Three generators, from raw noise to nearly valid messages (the ones that reach the deep branches).
Every test counts the frames it fed; the fuzz suite as a whole (with test_fuzz_session.py) feeds
well over 100,000 generated messages.
"""

from __future__ import annotations

import json
import math
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from tests.fuzzing import examples, fuzz
from voxws import protocol
from voxws.config import FORMATS, SAMPLE_RATES
from voxws.protocol import CLIENT_TYPES, ERROR_CODES, Message, ProtocolError, parse

KEYS = ("type", "context", "text", "format", "sample_rate", "voice", "cfg_value", "temperature", "seed")


# Cheap wrong-typed values (the recursive strategy below costs ~2 ms a draw: keep it for the noise test).
junk = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=10),
                 st.sampled_from([[], {}, [1], {"a": 1}, [None], "null"]))
json_scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
                         st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20))
json_values = st.recursive(json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)), max_leaves=12)

# Values that are right, nearly right, or of the wrong type, per key.
field_values: dict[str, st.SearchStrategy[Any]] = {
    "type": st.one_of(st.sampled_from([*CLIENT_TYPES, "Speak", "", "done", "error"]), junk),
    "context": st.one_of(st.from_regex(r"[A-Za-z0-9_.:-]{1,64}", fullmatch=True), st.sampled_from(
        ["", "a" * 65, "bad id", "ü", "a/b"]), junk),
    "text": st.one_of(st.text(max_size=60), st.sampled_from(["", " ", "。", "\x00", "😀", "\u200b", "مرحبا"]),
                      junk),
    "format": st.one_of(st.sampled_from([*FORMATS, "vorbis", "PCM_S16LE", ""]), junk),
    "sample_rate": st.one_of(st.sampled_from([*SAMPLE_RATES, 0, -1, 11025, 2**40]), st.floats(), junk),
    "voice": st.one_of(st.sampled_from(["default", "nobody", ""]), junk),
    "cfg_value": st.one_of(st.floats(min_value=-1, max_value=11), st.floats(), junk),
    "temperature": st.one_of(st.floats(min_value=-1, max_value=3), st.floats(), junk),
    "seed": st.one_of(st.integers(min_value=-5, max_value=2**31 + 5), st.integers(), junk),
}


@st.composite
def message_objects(draw: st.DrawFn) -> dict[str, Any]:
    keys = draw(st.lists(st.sampled_from(KEYS), unique=True, max_size=len(KEYS)))
    obj = {k: draw(field_values[k]) for k in keys}
    if draw(st.booleans()):
        obj["type"] = draw(st.sampled_from(CLIENT_TYPES))
    obj.update(draw(st.dictionaries(st.text(max_size=10), junk, max_size=2)))
    return obj


def _dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, allow_nan=True)


def _utf8(s: str) -> bool:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check(frame: str) -> Message | None:
    """The invariant: a Message, or a ProtocolError with a documented code and a JSON frame."""
    try:
        msg = parse(frame)
    except ProtocolError as e:
        assert e.code in ERROR_CODES
        raw = e.frame()
        out = json.loads(raw)
        if _utf8(frame):  # what a socket can carry in, the reply can carry out
            raw.encode("utf-8")
        assert out["type"] == "error" and out["code"] == e.code
        assert isinstance(out["message"], str) and out["message"]
        assert out["context"] is None or protocol.CONTEXT_RE.match(out["context"])
        return None
    assert msg.type in CLIENT_TYPES
    assert msg.context is None or protocol.CONTEXT_RE.match(msg.context)
    if msg.type in ("speak", "text"):
        assert isinstance(msg.text, str)
        o = msg.options
        assert o.format in FORMATS and (o.sample_rate is None or o.sample_rate in SAMPLE_RATES)
        assert math.isfinite(o.cfg_value) and math.isfinite(o.temperature)
        assert o.seed is None or 0 <= o.seed <= protocol.MAX_SEED
    return msg


noise = st.one_of(st.text(max_size=200), st.binary(max_size=200).map(lambda b: b.decode("utf-8", "replace")),
                  st.text(max_size=50).map(lambda s: "{" + s), json_values.map(_dumps))
SPECIAL = ('"', "}", "{", "\\", ",", ":", "\x00", "\ud800", "é", " ")


def variants(frame: str, at: int) -> list[str]:
    """The frame, every prefix of it (a frame cut anywhere), and one-character damage at a spot."""
    out = [frame[:i] for i in range(len(frame) + 1)]
    if frame:
        i = at % len(frame)
        out += [frame[:i] + c + frame[i + 1:] for c in SPECIAL]
        out.append(frame[:i] + frame[i + 1:])
    return out


def test_parse_never_raises_on_noise() -> None:
    fed = 0

    @fuzz(1500)
    @given(noise)
    def one(frame: str) -> None:
        nonlocal fed
        msg = check(frame)
        fed += 1
        if not frame.lstrip().startswith("{"):
            # Anything that is not a JSON object is text to speak, verbatim.
            assert msg is not None and msg.type == "speak" and msg.text == frame

    one()
    print(f"fuzz parse_noise: {fed}")
    assert fed >= examples(1500)


def test_parse_nearly_valid_objects() -> None:
    fed = 0

    @fuzz(2000)
    @given(message_objects())
    def one(obj: dict[str, Any]) -> None:
        nonlocal fed
        msg = check(_dumps(obj))
        fed += 1
        if msg is not None:
            assert msg.type == obj["type"] and msg.context == obj.get("context")
            if msg.type in ("speak", "text"):
                assert msg.text == obj["text"]

    one()
    print(f"fuzz parse_objects: {fed}")
    assert fed >= examples(2000)


def test_parse_damaged_objects() -> None:
    """Every prefix of a generated message and one-character damage to it: ~70 frames per example."""
    fed = 0

    @fuzz(1000)
    @given(message_objects(), st.integers(min_value=0, max_value=10**6), st.integers(min_value=1, max_value=50))
    def one(obj: dict[str, Any], at: int, depth: int) -> None:
        nonlocal fed
        frame = _dumps(obj)
        batch = variants(frame, at)
        # Deep nesting inside an object: json's recursion limit must become bad_message, nothing else.
        batch.append('{"type":"speak","text":"x","deep":' + "[" * (depth * 400) + "]" * (depth * 400) + "}")
        for f in batch:
            check(f)
        fed += len(batch)

    one()
    print(f"fuzz parse_damaged: {fed}")
    assert fed >= examples(60_000), fed
