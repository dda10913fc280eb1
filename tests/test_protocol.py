"""Client-message parsing without sockets: every frame gets a typed message or a coded error."""

from __future__ import annotations

import json

import pytest

from voxws import protocol
from voxws.protocol import Options, ProtocolError, parse


def code_of(frame: str) -> str:
    with pytest.raises(ProtocolError) as e:
        parse(frame)
    return e.value.code


def test_plain_text_is_speak() -> None:
    m = parse("你好，世界")
    assert m.type == "speak" and m.text == "你好，世界" and m.context is None and m.options == Options()
    assert parse("[laughs] hi").text == "[laughs] hi"


def test_speak_with_options() -> None:
    m = parse(json.dumps({"type": "speak", "text": "x", "context": "a:b.c-1_2", "format": "pcm_mulaw",
                          "sample_rate": 8000, "cfg_value": 1.5, "temperature": 0.7, "seed": 42, "extra": [1]}))
    assert m.context == "a:b.c-1_2" and m.has_options
    assert m.options == Options("pcm_mulaw", 8000, cfg_value=1.5, temperature=0.7, seed=42)


@pytest.mark.parametrize("frame,code", [
    ("{", "bad_message"),
    ('{"type": 1}', "bad_message"),
    ('{"text": "no type"}', "bad_message"),
    ('{"type": "speak"}', "bad_message"),
    ('{"type": "text", "text": null}', "bad_message"),
    ('{"type": "speak", "text": "x", "context": ""}', "bad_message"),
    ('{"type": "speak", "text": "x", "context": "' + "a" * 65 + '"}', "bad_message"),
    ('{"type": "speak", "text": "x", "context": 7}', "bad_message"),
    ('{"type": "speak", "text": "x", "format": 5}', "bad_message"),
    ('{"type": "speak", "text": "x", "format": "vorbis"}', "unsupported_format"),
    ('{"type": "speak", "text": "x", "sample_rate": "16000"}', "bad_message"),
    ('{"type": "speak", "text": "x", "sample_rate": 44101}', "unsupported_format"),
    ('{"type": "speak", "text": "x", "sample_rate": true}', "bad_message"),
    ('{"type": "speak", "text": "x", "cfg_value": 1e309}', "bad_message"),
    ('{"type": "speak", "text": "x", "temperature": -1}', "bad_message"),
    ('{"type": "speak", "text": "x", "seed": 2147483648}', "bad_message"),
    ('{"type": "speak", "text": "x", "seed": 1.5}', "bad_message"),
    ('{"type": "speak", "text": "x", "voice": []}', "bad_message"),
    ("[" * 100000 + "]" * 100000, None),  # not JSON-object-shaped: plain text
    ("{" + '"a":' * 1 + "[" * 100000 + "]" * 100000 + "}", "bad_message"),  # too deep
])
def test_bad_frames_get_their_code(frame: str, code: str | None) -> None:
    if code is None:
        assert parse(frame).type == "speak"
    else:
        assert code_of(frame) == code


def test_control_messages() -> None:
    for t in ("flush", "end", "cancel", "ping"):
        m = parse(json.dumps({"type": t, "context": "c1"}))
        assert m.type == t and m.context == "c1"
    assert parse('{"type":"cancel"}').context is None


def test_server_frames_are_compact_json() -> None:
    assert json.loads(protocol.queued("a", 3)) == {"type": "queued", "context": "a", "position": 3}
    e = json.loads(protocol.error("busy", "full", "a", retry_after_ms=500))
    assert e == {"type": "error", "context": "a", "code": "busy", "message": "full", "retry_after_ms": 500}
    assert set(protocol.ERROR_CODES) == {
        "bad_message", "empty_text", "text_too_long", "unsupported_format", "unknown_voice", "context_exists",
        "unknown_context", "too_many_contexts", "busy", "rate_limited", "slow_consumer", "engine_error",
        "unauthorized", "message_too_big", "idle_timeout", "shutting_down", "bad_option"}
