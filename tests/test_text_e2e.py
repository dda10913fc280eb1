"""Text handling over a real WebSocket: long text, LLM-style input, every format and rate."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

import numpy as np

from tests.conftest import running, url
from tests.wsclient import collect, open_ws
from voxws import audio, sizing
from voxws.codecs import PCM_FORMATS
from voxws.config import SAMPLE_RATES, Settings
from voxws.engines.base import GenerateRequest
from voxws.engines.synthetic import SyntheticEngine, engine_step, natural_steps, tag_hash
from voxws.server import Server

ARTICLE_SENTENCES = [
    "人工智能正在改变我们的生活方式。",
    "从智能手机到自动驾驶汽车，科技无处不在。",
    "研究人员表示，未来十年将是关键时期，我们需要认真思考技术带来的伦理问题！",
    "教育、医疗和交通等领域都将受到深远影响；",
    "然而，技术本身并没有好坏之分，关键在于我们如何使用它。",
]


def article(chars: int) -> str:
    out = ""
    i = 0
    while len(out) < chars:
        out += ARTICLE_SENTENCES[i % len(ARTICLE_SENTENCES)]
        i += 1
    return out[:chars - 1] + "。"


def test_5000_char_article_on_len_256_is_spoken_in_full_without_gaps() -> None:
    body = article(5000)
    step_ms = 3.0

    async def scenario() -> None:
        async with running(max_model_len=256, max_text_chars=5000, synthetic_step_base_ms=step_ms,
                           synthetic_step_per_seq_ms=0) as srv:
            ws, _ = await open_ws(url(srv))
            await ws.send(json.dumps({"type": "speak", "text": body, "context": "art"}))
            arrivals: list[float] = []
            frames: list[bytes] = []
            segments: list[dict] = []
            frame_segment: list[int] = []  # index of the segment each frame belongs to
            done = None
            while done is None:
                msg = await asyncio.wait_for(ws.recv(), 120)
                if isinstance(msg, bytes):
                    arrivals.append(time.perf_counter())
                    frames.append(msg)
                    frame_segment.append(segments[-1]["index"])
                elif json.loads(msg)["type"] == "segment":
                    segments.append(json.loads(msg))
                elif json.loads(msg)["type"] in ("done", "error"):
                    done = json.loads(msg)
            await ws.close()
            assert done["type"] == "done", done
            assert done["segments"] == len(segments) > 10
            assert [s["index"] for s in segments] == list(range(len(segments)))
            # Every segment is exactly its slice of the text; together they cover every non-space character.
            covered = np.zeros(len(body), bool)
            for s in segments:
                assert s["text"] == body[s["source_start"]:s["source_end"]]
                assert not covered[s["source_start"]:s["source_end"]].any()
                covered[s["source_start"]:s["source_end"]] = True
            assert all(covered[i] for i, ch in enumerate(body) if not ch.isspace())
            # Each fits the engine with the context's voice prompt (its own first segment, within its share).
            budget = sizing.continuity_budget(256)
            assert sizing.positions(segments[0]["spoken"], srv.engine.count_tokens) <= budget
            for s in segments[1:]:
                assert sizing.positions(s["spoken"], srv.engine.count_tokens) <= 256 - budget
            expected_steps = sum(natural_steps(s["spoken"]) for s in segments)
            assert done["chunks"] == len(frames) == expected_steps
            # Duration in line with the text: 0.25 s per spoken character for the synthetic voice.
            spoken = sum(1 for ch in body if ch.isalnum())
            assert abs(done["audio_ms"] / 1000 - 0.25 * spoken) < 0.02 * 0.25 * spoken
            # Every segment's frames arrive whole, in order, right after its `segment` message, whose
            # audio_start_ms is exact.
            from voxws.engines.synthetic import read_mark, speaker_of

            marks = [read_mark(np.frombuffer(f, "<i2")) for f in frames]
            expect = [(tag_hash(f"art/{s['index']}"), s["index"], i)
                      for s in segments for i in range(natural_steps(s["spoken"]))]
            assert marks == expect
            sent_ms = 0
            for k, s in enumerate(segments):
                assert s["audio_start_ms"] == int(sent_ms * 1000 / 44100)
                sent_ms += sum(len(f) // 2 for f, i in zip(frames, frame_segment, strict=True) if i == k)
            # One voice: every segment is conditioned on the first one, so one speaker says it all.
            speakers = {speaker_of(np.frombuffer(f, "<i2")) for f in frames}
            assert len(speakers) == 1, speakers
            # No gap at segment seams: every chunk was produced at most one engine step beyond the
            # cadence after the chunk before it (the next segment was already generating when the current one
            # ended). Counted in engine steps, so it holds on a loaded machine too.
            steps = np.array([engine_step(np.frombuffer(f, "<i2")) for f in frames])
            advance = (np.diff(steps) + 8192) % 16384 - 8192
            # A prefill step decodes nobody (as in nano-vllm's scheduler): a stream may skip that one
            # step when the next segment (its own or anyone's) is admitted; never more. Segment 1 is the
            # exception: its prompt is segment 0's whole audio, so it starts once segment 0 is generated
            # (a prefill later; the client then still holds most of segment 0 unplayed).
            seam = natural_steps(segments[0]["spoken"])
            assert advance[seam - 1] <= 4, advance[seam - 1]
            assert np.delete(advance, seam - 1).max() <= 2, advance.max()
            gaps = np.diff(arrivals)
            print(f"wall-clock gap between frames: p50 {np.median(gaps) * 1000:.1f} ms, "
                  f"max {gaps.max() * 1000:.1f} ms (engine step {step_ms} ms)")

    asyncio.run(scenario())


def test_llm_style_input_speaks_before_the_text_is_complete() -> None:
    sentences = ["你好，我是你的语音助手小智。", "今天北京天气晴朗，气温二十三度。", "请问还有什么可以帮您的吗？"]
    pieces: list[str] = []
    rng = np.random.default_rng(7)
    for s in sentences:
        i = 0
        while i < len(s):
            n = int(rng.integers(1, 4))
            pieces.append(s[i:i + n])
            i += n

    async def scenario() -> tuple[float, float]:
        async with running() as srv:
            ws, _ = await open_ws(url(srv))
            t0 = time.perf_counter()
            first_audio: list[float] = []
            first_sentence_sent: list[float] = []

            async def reader() -> dict:
                while True:
                    msg = await ws.recv()
                    if isinstance(msg, bytes):
                        if not first_audio:
                            first_audio.append(time.perf_counter())
                        continue
                    obj = json.loads(msg)
                    if obj["type"] in ("done", "error"):
                        return obj

            task = asyncio.create_task(reader())
            sent = ""
            for p in pieces:
                await ws.send(json.dumps({"type": "text", "text": p, "context": "llm"}))
                sent += p
                if not first_sentence_sent and sentences[0] in sent:
                    first_sentence_sent.append(time.perf_counter())
                await asyncio.sleep(0.05)  # 20 messages a second
            all_sent = time.perf_counter()
            await ws.send(json.dumps({"type": "end", "context": "llm"}))
            done = await asyncio.wait_for(task, 60)
            await ws.close()
            assert done["type"] == "done" and done["text_chars"] == sum(map(len, sentences))
            assert done["segments"] >= 3
            assert first_audio and first_audio[0] < all_sent, "audio only started after the whole text"
            return first_audio[0] - first_sentence_sent[0], first_audio[0] - t0

    after_sentence, _ = asyncio.run(scenario())
    print(f"first audio {after_sentence * 1000:.0f} ms after the first sentence end was sent")


class ToneEngine(SyntheticEngine):
    """The synthetic engine's scheduling with a continuous 1 kHz tone as its audio."""

    async def generate(self, request: GenerateRequest) -> AsyncIterator[np.ndarray]:  # type: ignore[override]
        n = 0
        async for chunk in super().generate(request):
            t = (np.arange(len(chunk)) + n) / self.sample_rate
            n += len(chunk)
            yield (0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)


def dominant_hz(x: np.ndarray, rate: int) -> float:
    x = x - x.mean()
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / rate)[spec.argmax()])


def test_every_format_and_rate_round_trips_a_1khz_tone() -> None:
    async def scenario() -> None:
        settings = Settings(engine="synthetic", port=0, synthetic_step_base_ms=1, synthetic_step_per_seq_ms=0,
                            max_contexts=len(PCM_FORMATS) * len(SAMPLE_RATES))
        srv = Server(settings, engine=ToneEngine(settings))
        await srv.start()
        try:
            ws, _ = await open_ws(url(srv))
            combos = [(f, r) for f in PCM_FORMATS for r in SAMPLE_RATES]  # raw PCM: decoded here by audio.decode
            for f, r in combos:
                await ws.send(json.dumps({"type": "speak", "text": "测试音调八个字。", "context": f"{f}-{r}",
                                          "format": f, "sample_rate": r}))
            streams, _ = await collect(ws, len(combos))
            await ws.close()
        finally:
            await srv.close()
        for f, r in combos:
            st = streams[f"{f}-{r}"]
            assert st.end["type"] == "done" and st.start["format"] == f and st.start["sample_rate"] == r
            pcm = audio.decode(b"".join(st.frames), f)
            seconds = natural_steps("测试音调八个字。") * 0.16
            assert abs(len(pcm) / r - seconds) < 0.01, (f, r, len(pcm))
            assert st.end["audio_ms"] == int(len(pcm) * 1000 / r)
            assert abs(dominant_hz(pcm, r) - 1000) < 5, (f, r, dominant_hz(pcm, r))

    asyncio.run(scenario())


def test_a_real_time_reader_of_a_long_text_is_paced_not_cut_off() -> None:
    """A client reading slower than the engine makes (a player pulling at playback speed) gets
    each next segment once it has caught up, instead of a pile of audio and `slow_consumer`."""
    body = article(400)

    async def scenario() -> dict:
        async with running(max_model_len=256, max_unsent_audio_s=30, synthetic_step_base_ms=0,
                           synthetic_step_per_seq_ms=0) as srv:
            ws, _ = await open_ws(url(srv))
            await ws.send(json.dumps({"type": "speak", "text": body, "context": "rt"}))
            while True:
                msg = await asyncio.wait_for(ws.recv(), 60)
                if isinstance(msg, bytes):
                    await asyncio.sleep(0.16 / 50)  # reads at 50x real time; the engine makes far more
                    continue
                obj = json.loads(msg)
                if obj["type"] in ("done", "error"):
                    await ws.close()
                    return obj

    end = asyncio.run(scenario())
    assert end["type"] == "done", end
    assert end["segments"] > 3 and end["audio_ms"] > 60_000  # more than twice the limit, all delivered
