"""The bad-input corpus over a real socket: every hostile or odd frame gets its documented answer
(docs/reliability.md lists the choices where PROTOCOL.md is silent), and another client keeps
streaming, frame-perfect, the whole time."""

from __future__ import annotations

import asyncio
import json

import pytest
from websockets.exceptions import ConnectionClosed

from tests.conftest import running, url
from tests.wsclient import collect, open_ws, run
from voxws.engines.synthetic import natural_steps, tag_hash

DONE = "done"
PONG = "pong"
NEST = 30_000  # far past Python's JSON recursion limit, still under max_message_bytes

# (frame, expected): expected is an error code, "done" (spoken) or "pong". The socket stays open.
CORPUS: list[tuple[str | bytes, str]] = [
    # JSON that is not an object is text to speak (PROTOCOL.md: a frame that is not a JSON object).
    ("[1, 2, 3]", DONE), ('"just a string"', DONE), ("null", DONE), ("42", DONE), ("[]", "empty_text"),
    ("", "empty_text"), ("   ", "empty_text"),
    # Broken JSON objects.
    ("{", "bad_message"), ('{"type":"ping"} trailing', "bad_message"), ("{'type':'ping'}", "bad_message"),
    # Raw control characters inside a JSON string are invalid JSON (as for JSON.parse).
    ('{"type":"speak","text":"a\tb"}', "bad_message"), ('{"type":"speak","text":"a\nb"}', "bad_message"),
    ("\ufeff{\"type\":\"ping\"}", DONE),  # a BOM first: not an object, so spoken (the BOM is dropped)
    # Deep nesting: past the parser's recursion limit.
    ('{"type":"speak","text":"x","deep":' + "[" * NEST + "]" * NEST + "}", "bad_message"),
    ('{"type":"speak","text":"x","deep":' + '{"a":' * (NEST // 3) + "1" + "}" * (NEST // 3) + "}", "bad_message"),
    # NUL and control characters: stripped from what is spoken.
    (json.dumps({"type": "speak", "text": "a\u0000b\u0007c\u001b[31md\u007f"}), DONE),
    ("plain\x00text\x01with\x1fcontrols", DONE), ("\x00\x01\x02", "empty_text"),
    # Emoji, right-to-left and zero-width text.
    (json.dumps({"type": "speak", "text": "😀👍🏽🇺🇳👨‍👩‍👧"}), "empty_text"),
    (json.dumps({"type": "speak", "text": "hello 😀 world 👨‍👩‍👧"}), DONE),
    (json.dumps({"type": "speak", "text": "مرحبا بالعالم"}), DONE),
    (json.dumps({"type": "speak", "text": "שלום עולם"}), DONE),
    (json.dumps({"type": "speak", "text": "abc\u202edef\u202c \u200fعربي\u200e"}), DONE),
    (json.dumps({"type": "speak", "text": "\u200b\u200c\u200d\u2060\ufeff"}), "empty_text"),
    (json.dumps({"type": "speak", "text": "zero\u200bwidth\u200djoin"}), DONE),
    (json.dumps({"type": "speak", "text": "e\u0301\u0301\u0301\u0301\u0301\u0301"}), DONE),  # combining pile-up
    # Lone surrogates (legal in JSON escapes, not in UTF-8): never echoed back raw.
    ('{"type":"speak","text":"\\ud800"}', "empty_text"), ('{"type":"speak","text":"a\\udfffb"}', DONE),
    ('{"type":"\\ud800"}', "bad_message"), ('{"type":"speak","text":"x","voice":"\\ud800"}', "unknown_voice"),
    ('{"type":"speak","text":"x","format":"\\udfff"}', "unsupported_format"),
    # Numbers out of range.
    ('{"type":"speak","text":"x","cfg_value":1e309}', "bad_message"),
    ('{"type":"speak","text":"x","cfg_value":NaN}', "bad_message"),
    ('{"type":"speak","text":"x","temperature":-Infinity}', "bad_message"),
    ('{"type":"speak","text":"x","temperature":99}', "bad_message"),
    ('{"type":"speak","text":"x","seed":-1}', "bad_message"),
    ('{"type":"speak","text":"x","seed":18446744073709551616}', "bad_message"),
    ('{"type":"speak","text":"x","seed":' + "9" * 5000 + "}", "bad_message"),  # over int()'s digit limit
    ('{"type":"speak","text":"x","sample_rate":1000000000000}', "unsupported_format"),
    ('{"type":"speak","text":"x","sample_rate":0}', "unsupported_format"),
    # Wrong field types.
    ('{"type":"speak","text":5}', "bad_message"), ('{"type":"speak","text":null}', "bad_message"),
    ('{"type":"speak","text":["a"]}', "bad_message"), ('{"type":"speak","text":"x","context":7}', "bad_message"),
    ('{"type":"speak","text":"x","format":1}', "bad_message"),
    ('{"type":"speak","text":"x","voice":1}', "bad_message"),
    ('{"type":["speak"],"text":"x"}', "bad_message"),
    ('{"type":"speak","text":"x","sample_rate":"44100"}', "bad_message"),
    ('{"type":"speak","text":"x","sample_rate":44100.0}', "bad_message"),
    ('{"type":"speak","text":"x","seed":true}', "bad_message"),
    ('{"type":"speak","text":"x","cfg_value":"2"}', "bad_message"),
    ('{"type":"speak","text":"x","context":"' + "c" * 65 + '"}', "bad_message"),
    ('{"type":"speak","text":"x","context":"bad id"}', "bad_message"),
    # Unknown types, unknown fields, duplicate keys.
    ('{"type":"synthesize","text":"x"}', "bad_message"), ('{"type":""}', "bad_message"),
    ('{"type":"SPEAK","text":"x"}', "bad_message"), ('{"text":"no type"}', "bad_message"),
    ('{"type":"ping","extra":{"nested":[1,2,{"x":null}]}}', PONG),
    ('{"type":"ping","type":"speak","text":"后者为准。"}', DONE),  # the last duplicate key wins, as in JS
    # Binary frames from the client.
    (b"\x00\x01\x02", "bad_message"), (b"", "bad_message"), (b"\xff" * 60_000, "bad_message"),
]


async def answer(ws) -> tuple[str, dict]:  # type: ignore[no-untyped-def]
    """Read until the reply that settles the last frame: an error, a pong or a done."""
    while True:
        m = await asyncio.wait_for(ws.recv(), 30)
        if isinstance(m, bytes):
            continue
        msg = json.loads(m)
        if msg["type"] == "error":
            return msg["code"], msg
        if msg["type"] in ("pong", "done"):
            return msg["type"], msg


def test_bad_input_corpus_gets_documented_answers_while_others_are_served() -> None:
    witness_text = "长" * 200  # ~3 s of streaming: the whole corpus runs while it plays

    async def scenario() -> None:
        async with running(synthetic_step_base_ms=10, synthetic_step_per_seq_ms=0, max_text_chars=200) as srv:
            witness, _ = await open_ws(url(srv))
            await witness.send(json.dumps({"type": "speak", "text": witness_text, "context": "w"}))
            watching = asyncio.create_task(collect(witness))
            ws, _ = await open_ws(url(srv))
            got = []
            for frame, _ in CORPUS:
                await ws.send(frame)
                code, msg = await answer(ws)
                got.append((frame if len(frame) < 80 else frame[:80], code))
                if code not in (DONE, PONG):
                    assert isinstance(msg["message"], str) and msg["message"]
            assert [c for _, c in got] == [w for _, w in CORPUS], [
                (f, c, w) for (f, c), (_, w) in zip(got, CORPUS, strict=True) if c != w]
            await ws.send(json.dumps({"type": "speak", "text": "字" * 201}))
            assert (await answer(ws))[0] == "text_too_long"
            await ws.ping()  # WebSocket-level ping
            await ws.send('{"type":"ping"}')
            assert (await answer(ws))[0] == PONG
            streams, _ = await watching
            marks = streams["w"].marks()
            assert marks == [(tag_hash("w/0"), 0, k) for k in range(natural_steps(witness_text))]
            await ws.close()
            await witness.close()

    run(scenario())


@pytest.mark.parametrize("frame,code,close", [
    (b"\xff\xfe not utf-8", "bad_message", 1007),
    (b'{"type":"speak","text":"\xed\xa0\x80"}', "bad_message", 1007),  # a surrogate, UTF-8 encoded
    (b"\xc0\xaf", "bad_message", 1007),  # overlong encoding
    ("x" * 10_000_000, "message_too_big", 1009),
    (b"\x00" * 10_000_000, "message_too_big", 1009),
    (["x" * 65536] * 160, "message_too_big", 1009),  # 10 MB in fragments
])
def test_frames_that_close_the_socket_and_only_that_socket(frame: object, code: str, close: int) -> None:
    async def scenario() -> None:
        async with running(synthetic_step_base_ms=5, synthetic_step_per_seq_ms=0) as srv:
            witness, _ = await open_ws(url(srv))
            await witness.send(json.dumps({"type": "speak", "text": "长" * 60, "context": "w"}))
            ws, _ = await open_ws(url(srv))
            try:
                if isinstance(frame, bytes) and close == 1007:
                    await ws.send(frame, text=True)  # a text frame whose bytes are not UTF-8
                else:
                    await ws.send(frame)  # type: ignore[arg-type]
            except ConnectionClosed:
                pass  # the server may close before the whole frame left
            msgs = []
            try:
                while True:
                    m = await asyncio.wait_for(ws.recv(), 30)
                    msgs.append(json.loads(m))
            except ConnectionClosed:
                pass
            assert [(m["type"], m["code"]) for m in msgs] == [("error", code)]
            assert ws.close_code == close
            streams, _ = await collect(witness)
            assert streams["w"].end["type"] == "done"
            assert len(streams["w"].frames) == natural_steps("长" * 60)
            # Counted like any refusal, by code.
            for _ in range(200):
                if srv.metrics.value("voxws_errors_total", code=code) == 1:
                    break
                await asyncio.sleep(0.02)
            assert srv.metrics.value("voxws_errors_total", code=code) == 1
            await witness.close()

    run(scenario())
