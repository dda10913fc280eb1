"""Progress on real sockets: `segment` and `words` say which text the audio speaks, `flushed` answers a
flush after its audio, `cancelled.source_end` says what was heard, `done.voice` which voice spoke."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import running, url
from tests.fuzzing import examples
from tests.wsclient import open_ws
from voxws.engines.synthetic import speaker_of

RATE = 44100


@dataclass
class Heard:
    """Everything one context sent, in order: ("frame", samples) and JSON messages."""

    items: list[tuple[str, Any]] = field(default_factory=list)

    def messages(self, kind: str) -> list[dict[str, Any]]:
        return [m for k, m in self.items if k == kind]

    @property
    def end(self) -> dict[str, Any]:
        return self.items[-1][1]

    def frames(self) -> list[bytes]:
        return [m for k, m in self.items if k == "frame"]


async def hear(ws: Any, context: str | None = None, bytes_per_sample: int = 2, timeout: float = 60) -> Heard:
    """Read one context to its end (done / cancelled / error)."""
    h = Heard()
    while True:
        msg = await asyncio.wait_for(ws.recv(), timeout)
        if isinstance(msg, bytes):
            h.items.append(("frame", msg))
            continue
        m = json.loads(msg)
        if context is not None and m.get("context") not in (context, None):
            continue
        h.items.append((m["type"], m))
        if m["type"] in ("done", "cancelled") or (m["type"] == "error" and m.get("context")):
            return h


def check_progress(source: str, h: Heard, bytes_per_sample: int = 2, rate: int = RATE) -> None:
    """The PROTOCOL.md "Progress" invariants for one finished context."""
    assert h.end["type"] == "done", h.end
    segments = h.messages("segment")
    assert [s["index"] for s in segments] == list(range(len(segments))) and segments
    covered = np.zeros(len(source), bool)
    prev_end = 0
    for s in segments:
        assert s["text"] == source[s["source_start"]:s["source_end"]]
        assert s["source_start"] >= prev_end  # in order, no overlap
        prev_end = s["source_end"]
        covered[s["source_start"]:s["source_end"]] = True
        assert s["spoken"].strip() or s is segments[-1]  # a last one may only cover trailing marks, silently
    assert all(covered[i] for i, ch in enumerate(source) if not ch.isspace()), "a character no segment covers"
    # audio_start_ms is exact: the audio sent before the segment's first frame.
    sent = 0
    seg_bounds: list[tuple[int, int]] = []
    for kind, m in h.items:
        if kind == "frame":
            sent += len(m) // bytes_per_sample
        elif kind == "segment":
            assert m["audio_start_ms"] == int(sent * 1000 / rate)
            seg_bounds.append((m["audio_start_ms"], 0))
    assert h.end["audio_ms"] == int(sent * 1000 / rate)
    ends = [b[0] for b in seg_bounds[1:]] + [h.end["audio_ms"]]
    bounds = [(a, b) for (a, _), b in zip(seg_bounds, ends, strict=True)]
    # Words: times non-decreasing, inside their segment, sent before the frame their first word starts in.
    last = -1
    seg_i = -1
    sent = 0
    for kind, m in h.items:
        if kind == "frame":
            sent += len(m) // bytes_per_sample
        elif kind == "segment":
            seg_i = m["index"]
        elif kind == "words":
            lo, hi = bounds[seg_i]
            assert m["estimated"] is True
            assert m["start_ms"][0] >= int(sent * 1000 / rate) - 1  # not in audio already sent
            for w, a, b, s0, s1 in zip(m["words"], m["start_ms"], m["end_ms"], m["source_start"], m["source_end"],
                                       strict=True):
                assert w == source[s0:s1] and w.strip() == w and w
                assert lo <= a <= b <= hi, (w, a, b, lo, hi)
                assert a >= last
                last = a


def test_the_issue_example_reads_words_that_point_at_what_was_sent() -> None:
    source = "会议定于2024年3月5日下午3:30开始，预算为$1,200。"

    async def scenario() -> None:
        async with running() as srv:
            ws, _ = await open_ws(url(srv))
            await ws.send(json.dumps({"type": "speak", "text": source, "timestamps": "word", "context": "m"}))
            h = await hear(ws)
            await ws.close()
        check_progress(source, h)
        words = [w for m in h.messages("words") for w in m["words"]]
        assert words[:4] == ["会", "议", "定", "于"] and "开" in words
        assert h.end["voice"] is None and h.end["text_chars"] == len(source)

    asyncio.run(scenario())


mixed = st.lists(st.one_of(
    st.sampled_from(["你好。", "今天天气很好，", "Hello world. ", "It costs $5.20! ", "3.14", "2024年3月5日", "\n",
                     "  ", "e.g. this", "第1名。", "OK.我们", "…", "！", "Dr. Smith said hi. "]),
    st.text(st.characters(codec="utf-8", categories=("L", "N", "P", "Zs")), max_size=8)), min_size=1, max_size=12
).map("".join).filter(lambda t: any(c.isalnum() for c in t))


@settings(max_examples=examples(25), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mixed, st.booleans(), st.booleans())
def test_segments_and_words_map_back_to_the_source_for_any_text(source: str, incremental: bool, norm: bool) -> None:
    async def scenario() -> None:
        async with running(max_model_len=256, synthetic_step_base_ms=0, synthetic_step_per_seq_ms=0,
                           text_delay_ms=5) as srv:
            ws, _ = await open_ws(url(srv))
            opts = {"timestamps": "word", "normalize": norm, "context": "p"}
            if incremental:
                for i in range(0, len(source), 3):
                    await ws.send(json.dumps({"type": "text", "text": source[i:i + 3], **opts}))
                    opts = {"context": "p"}
                await ws.send(json.dumps({"type": "end", "context": "p"}))
            else:
                await ws.send(json.dumps({"type": "speak", "text": source, **opts}))
            h = await hear(ws)
            await ws.close()
        check_progress(source, h)

    asyncio.run(scenario())


def test_flushed_comes_after_the_audio_of_the_text_before_the_flush() -> None:
    async def scenario() -> None:
        async with running(text_delay_ms=60_000) as srv:
            ws, _ = await open_ws(url(srv))
            await ws.send(json.dumps({"type": "flush", "context": "f", "flush_id": 0}))  # no such context yet
            assert json.loads(await ws.recv())["code"] == "unknown_context"
            await ws.send(json.dumps({"type": "text", "context": "f", "text": "第一句话没有结束"}))
            await ws.send(json.dumps({"type": "flush", "context": "f", "flush_id": "one"}))
            await ws.send(json.dumps({"type": "text", "context": "f", "text": "第二句"}))
            await ws.send(json.dumps({"type": "flush", "context": "f", "flush_id": 2}))
            await ws.send(json.dumps({"type": "flush", "context": "f", "flush_id": 3}))  # nothing new: at once
            await ws.send(json.dumps({"type": "end", "context": "f"}))
            h = await hear(ws)
            await ws.close()
        kinds = [k if k != "flushed" else f"flushed:{m['flush_id']}" for k, m in h.items]
        first = kinds.index("flushed:one")
        seg1 = next(i for i, (k, m) in enumerate(h.items) if k == "segment" and m["index"] == 1)
        assert first < seg1  # after segment 0's audio, before segment 1's
        assert all(k == "frame" for k in kinds[kinds.index("segment") + 1:first])  # segment 0's audio is all before
        assert kinds.index("flushed:2") < kinds.index("flushed:3") < kinds.index("done")
        assert all(k != "frame" for k in kinds[kinds.index("flushed:2"):])  # no audio after the last flush's answer
        assert h.end["segments"] == 2

    asyncio.run(scenario())


def test_cancel_mid_stream_says_up_to_where_the_audio_spoke() -> None:
    sentences = ["第一句话很短。", "第二句话也不长。", "第三句话要说得久一点才会结束。"]
    source = "".join(sentences) * 4

    async def scenario() -> None:
        async with running(max_model_len=256, synthetic_step_base_ms=5, synthetic_step_per_seq_ms=0) as srv:
            ws, _ = await open_ws(url(srv))
            for ts in ("none", "word"):
                await ws.send(json.dumps({"type": "speak", "text": source, "context": "c", "timestamps": ts}))
                h = Heard()
                seen_segments = 0
                while seen_segments < 3:  # into the third segment
                    msg = await asyncio.wait_for(ws.recv(), 30)
                    if isinstance(msg, bytes):
                        h.items.append(("frame", msg))
                    else:
                        m = json.loads(msg)
                        h.items.append((m["type"], m))
                        seen_segments += m["type"] == "segment"
                await ws.send(json.dumps({"type": "cancel", "context": "c"}))
                rest = await hear(ws, "c")
                h.items += rest.items
                end = h.end
                assert end["type"] == "cancelled"
                assert all(k != "frame" for k, _ in rest.items[rest.items.index(("cancelled", end)):])
                sent = sum(len(f) // 2 for f in h.frames())
                assert end["audio_ms"] == int(sent * 1000 / RATE)
                segs = h.messages("segment")
                # Segments 0 and 1 were sent in full; the third was not.
                assert segs[1]["source_end"] <= end["source_end"] < segs[2]["source_end"]
                if ts == "word":  # words heard in full move it into the third segment
                    heard = [e for m in h.messages("words") for e, t in zip(m["source_end"], m["end_ms"], strict=True)
                             if t <= end["audio_ms"]]
                    assert end["source_end"] == max(heard) > segs[1]["source_end"]
                    assert source[:end["source_end"]].endswith(source[end["source_end"] - 1])
            await ws.close()

    asyncio.run(scenario())


def test_one_speaker_per_context_and_done_reports_no_voice_without_one() -> None:
    """No voice named and none by default: segment 1 onward are conditioned on segment 0's audio, so the
    synthetic speaker (in every chunk's mark) never changes within a context, incremental ones included."""

    async def scenario() -> None:
        async with running(max_model_len=256, synthetic_step_base_ms=0, synthetic_step_per_seq_ms=0,
                           text_delay_ms=5) as srv:
            ws, _ = await open_ws(url(srv))
            text = "今天天气很好，我们一起去公园散步吧。" * 12
            await ws.send(json.dumps({"type": "speak", "text": text, "context": "a", "seed": 3}))
            a = await hear(ws)
            for i in range(0, len(text), 5):
                await ws.send(json.dumps({"type": "text", "context": "b", "text": text[i:i + 5]}))
                await asyncio.sleep(0.002)
            await ws.send(json.dumps({"type": "end", "context": "b"}))
            b = await hear(ws)
            await ws.close()
        for h in (a, b):
            assert h.end["type"] == "done" and h.end["voice"] is None and h.end["segments"] > 3
            speakers = {speaker_of(np.frombuffer(f, "<i2")) for f in h.frames()}
            assert len(speakers) == 1, speakers

    asyncio.run(scenario())
