"""Hypothesis drives the Session state machine through an in-memory Transport (no sockets).

Each example is a sequence of client frames (mostly well-formed, addressed to a small pool of
context ids so that contexts open, collide, queue, end, cancel and get reused), with pauses that let
the engine and the text timers run. Whatever the sequence:
- no exception escapes a handler and the writer task never dies;
- every frame out is valid JSON of a PROTOCOL.md type, errors carry a PROTOCOL.md code;
- audio frames only follow their context's `start`; every `start` gets exactly one end
  (done / cancelled / error), `done` counts exactly the frames sent; every `ping` gets its `pong`;
- afterwards the socket still works (ping, then a speak that completes), and once it is gone the
  engine, the admission slots, the metrics gauge and the event loop hold nothing of it.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import structlog
from hypothesis import given
from hypothesis import strategies as st

from tests.fuzzing import examples, fuzz
from voxws.admission import Admission
from voxws.config import FORMATS, SAMPLE_RATES, Settings
from voxws.engines.synthetic import SyntheticEngine
from voxws.metrics import Metrics
from voxws.protocol import ERROR_CODES
from voxws.session import Session, Shared

# Errors that end their context. Every other error refuses one message and names its context, but a
# context that is open stays open (e.g. `context_exists` for a second `speak` on a streaming id).
ENDING = {"engine_error", "busy", "empty_text"}
SERVER_TYPES = {"ready", "queued", "start", "segment", "words", "flushed", "done", "cancelled", "error", "going_away",
                "pong"}
SETTINGS = Settings(engine="synthetic", devices=(0,), max_num_seqs=2, max_queue=1, max_contexts=4,
                    max_text_chars=120, rate_limit_per_s=100_000, text_delay_ms=3, text_buffer_chars=12,
                    max_unsent_audio_s=3600, synthetic_step_base_ms=0, synthetic_step_per_seq_ms=0)

contexts = st.sampled_from(["a", "b", "c", "default", None, None])
texts = st.one_of(
    st.sampled_from(["你好。", "今天天气很好，", "hello world. ", "一二三", "Dr. Smith", "3.14", "。", "", "   ",
                     "...", "😀", "\u200b", "مرحبا", "a\x00b", "长" * 121, "字" * 40]),
    st.text(max_size=12))
options = st.fixed_dictionaries({}, optional={
    "format": st.sampled_from([*FORMATS, "vorbis"]), "sample_rate": st.sampled_from([*SAMPLE_RATES, 11025]),
    "voice": st.sampled_from(["default", "nobody"]), "seed": st.integers(-1, 3), "cfg_value": st.floats(-1, 3)})


@st.composite
def client_frame(draw: st.DrawFn) -> str | bytes | float:
    """A text frame, a binary frame, or a pause (float seconds)."""
    kind = draw(st.sampled_from(["speak", "speak", "text", "text", "text", "flush", "end", "end", "cancel",
                                 "ping", "plain", "junk", "binary", "pause", "pause"]))
    if kind == "pause":
        return draw(st.sampled_from([0.0, 0.0005, 0.004]))
    if kind == "binary":
        return draw(st.binary(max_size=8))
    if kind == "plain":
        return draw(texts.filter(lambda t: not t.lstrip().startswith("{")))
    if kind == "junk":
        return draw(st.sampled_from(['{"type":"speak"', '{"type":"dance"}', "{}", '{"type":"speak","text":5}',
                                     '{"type":"text","text":"x","context":"bad id"}', '{"type":null}']))
    obj: dict[str, Any] = {"type": kind}
    ctx = draw(contexts)
    if ctx is not None:
        obj["context"] = ctx
    if kind in ("speak", "text"):
        obj["text"] = draw(texts)
        obj.update(draw(options))
    return json.dumps(obj, ensure_ascii=False)


class MemoryTransport:
    def __init__(self) -> None:
        self.out: list[str | bytes] = []
        self.closed: tuple[int, str] | None = None

    async def send(self, data: str | bytes) -> None:
        assert self.closed is None, "send after close"
        self.out.append(data)

    async def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)


def check_stream(out: list[str | bytes], pings: int) -> dict[str, dict]:
    """The wire invariants; returns the last end message per context id."""
    assert isinstance(out[0], str) and json.loads(out[0])["type"] == "ready"
    current: str | None = None  # context whose audio is flowing
    frames = 0
    open_: set[str] = set()
    ends: dict[str, dict] = {}
    pongs = 0
    for item in out[1:]:
        if isinstance(item, bytes):
            assert current is not None, "audio before start"
            assert len(item) > 0
            frames += 1
            continue
        m = json.loads(item)
        assert isinstance(m, dict) and m.get("type") in SERVER_TYPES, m
        t, ctx = m["type"], m.get("context")
        if t == "pong":
            pongs += 1
        elif t == "error":
            assert m["code"] in ERROR_CODES and isinstance(m["message"], str) and m["message"], m
            assert ctx is None or isinstance(ctx, str)
            if m["code"] == "busy":
                assert isinstance(m["retry_after_ms"], int) and m["retry_after_ms"] > 0
        elif t == "queued":
            assert isinstance(m["position"], int) and m["position"] >= 1
        elif t in ("segment", "words"):
            assert ctx == current, f"{t} of {ctx} while {current} streams"
        if t == "start":
            assert current is None, f"start of {ctx} while {current} streams"
            assert ctx not in open_
            current, frames = ctx, 0
            open_.add(ctx)
        elif t in ("done", "cancelled") or (t == "error" and ctx in open_ and m["code"] in ENDING):
            if ctx == current:
                if t == "done":
                    assert m["chunks"] == frames, (m, frames)
                current = None
            open_.discard(ctx)
            ends[ctx] = m
        elif t == "error" and ctx is not None and ctx not in open_:
            ends[ctx] = m
    assert not open_, f"contexts started and never ended: {open_}"
    assert pongs == pings, (pongs, pings)
    return ends


async def wait_for(cond: Any, timeout: float = 10.0) -> None:
    end = asyncio.get_running_loop().time() + timeout
    while not cond():
        assert asyncio.get_running_loop().time() < end, "timed out"
        await asyncio.sleep(0.001)


async def drive(engine: SyntheticEngine, frames: list[str | bytes | float], finish_by_end: bool) -> int:
    metrics = Metrics()
    admission = Admission(engine.num_workers * engine.max_num_seqs, SETTINGS.max_queue)
    shared = Shared(SETTINGS, engine, admission, metrics, "fuzz")
    t = MemoryTransport()
    session = Session(shared, t)
    before = asyncio.all_tasks()
    session.start()
    fed = pings = 0
    for f in frames:
        if isinstance(f, float):
            await asyncio.sleep(f)
            continue
        fed += 1
        if isinstance(f, bytes):
            session.handle_binary(f)
        else:
            pings += '"type": "ping"' in f
            session.handle_text(f)
        await asyncio.sleep(0)
        assert session.close_code is None, session.close_code
    # Wind down: end every open incremental context (or cancel everything), let it all finish.
    if finish_by_end:
        for ctx in list(session.contexts.values()):
            if ctx.incremental and not ctx.input_ended:
                session.handle_text(json.dumps({"type": "end", "context": ctx.id}))
                fed += 1
    else:
        session.handle_text('{"type":"cancel"}')
        fed += 1
    await wait_for(lambda: not session.contexts)
    # Still usable.
    session.handle_text('{"type":"ping"}')
    session.handle_text('{"type":"speak","text":"好的。","context":"probe"}')
    fed += 2
    await wait_for(lambda: any(isinstance(x, str) and '"done","context":"probe"' in x for x in t.out))
    assert session.writer is not None and not session.writer.done()
    ends = check_stream(t.out, pings + 1)
    assert ends["probe"]["type"] == "done"
    await session.finish()
    await wait_for(lambda: engine.running == 0 and admission.in_use == 0 and admission.queued == 0)
    assert metrics.value("voxws_contexts_active") == 0  # every context accounted once
    await asyncio.sleep(0)
    assert not (asyncio.all_tasks() - before), asyncio.all_tasks() - before
    return fed


def test_session_state_machine_fuzz() -> None:
    loop = asyncio.new_event_loop()
    engine = SyntheticEngine(SETTINGS)
    fed = 0
    try:
        loop.run_until_complete(engine.start())
        cap = structlog.testing.LogCapture()
        old = structlog.get_config()
        structlog.configure(processors=[cap])  # no rendering cost; and we see every error logged

        @fuzz(800)
        @given(st.lists(client_frame(), min_size=10, max_size=60), st.booleans())
        def one(frames: list[str | bytes | float], finish_by_end: bool) -> None:
            nonlocal fed
            cap.entries.clear()
            fed += loop.run_until_complete(asyncio.wait_for(drive(engine, frames, finish_by_end), 60))
            bad = [e for e in cap.entries if e["log_level"] in ("warning", "error", "critical")]
            assert not bad, bad

        one()
    finally:
        structlog.configure(**old)
        loop.run_until_complete(engine.stop())
        loop.close()
    print(f"fuzz session: {fed}")
    assert fed >= examples(12_000), fed
