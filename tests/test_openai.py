"""The OpenAI-compatible endpoint, driven by the official `openai` SDK over real HTTP (uvicorn on loopback)."""

from __future__ import annotations

import asyncio
import base64
import io
import json
from pathlib import Path

import av
import httpx2 as httpx  # the HTTP client the openai SDK itself uses
import numpy as np
import openai
import pytest

from tests.conftest import running
from tests.wsclient import run, until
from voxws.engines.synthetic import natural_steps

TEXT = "今天天气很好，我们一起去公园散步吧。"
SECONDS = natural_steps(TEXT) * 0.16


def client(srv, key: str = "anything") -> openai.AsyncOpenAI:  # type: ignore[no-untyped-def]
    return openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{srv.port}/v1", api_key=key, max_retries=0)


def decoded(data: bytes) -> tuple[float, np.ndarray, int]:
    """(seconds, mono float samples, rate) by an independent decoder (FFmpeg through PyAV)."""
    with av.open(io.BytesIO(data)) as f:
        stream = f.streams.audio[0]
        frames = [fr.to_ndarray().astype(np.float32).reshape(-1) for fr in f.decode(stream)]
        rate = stream.rate
    pcm = np.concatenate(frames)
    return len(pcm) / rate, pcm, rate


def pitch(pcm: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(pcm * np.hanning(len(pcm))))
    return float(np.argmax(spectrum) * rate / len(pcm))


@pytest.mark.parametrize("fmt", ["mp3", "opus", "aac", "flac", "wav"])
def test_every_response_format_decodes_to_the_audio_sent(fmt: str) -> None:
    async def scenario() -> None:
        async with running(synthetic_step_base_ms=2, synthetic_step_per_seq_ms=0) as srv:
            async with client(srv).audio.speech.with_streaming_response.create(
                    model="voxcpm-1.5", voice="alloy", input=TEXT, response_format=fmt) as r:
                assert r.status_code == 200
                body = await r.read()
            seconds, pcm, rate = decoded(body)
            assert abs(seconds - SECONDS) < 0.05, (fmt, seconds, SECONDS)  # within a codec frame
            assert 100 < pitch(pcm[: rate // 8], rate) < 450  # the synthetic voice's tone survived
            await until(lambda: srv.admission.in_use == 0)

    run(scenario())


def test_pcm_is_24_khz_16_bit_as_openai_clients_expect() -> None:
    async def scenario() -> None:
        async with running(synthetic_step_base_ms=2, synthetic_step_per_seq_ms=0) as srv:
            r = await client(srv).audio.speech.create(model="tts-1", voice="alloy", input=TEXT, response_format="pcm")
            samples = len(r.content) // 2
            assert abs(samples / 24000 - SECONDS) < 0.01

    run(scenario())


def test_sse_sends_deltas_then_done() -> None:
    async def scenario() -> None:
        async with running(synthetic_step_base_ms=2, synthetic_step_per_seq_ms=0) as srv:
            async with client(srv).audio.speech.with_streaming_response.create(
                    model="voxcpm-1.5", voice="alloy", input=TEXT, response_format="pcm",
                    extra_body={"stream_format": "sse"}) as r:
                assert r.headers["content-type"].startswith("text/event-stream")
                text = (await r.read()).decode()
            events = [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: ")]
            assert [e["type"] for e in events[:-1]] == ["speech.audio.delta"] * (len(events) - 1)
            assert events[-1]["type"] == "speech.audio.done" and events[-1]["usage"]["input_tokens"] == len(TEXT)
            pcm = b"".join(base64.b64decode(e["audio"]) for e in events[:-1])
            assert abs(len(pcm) / 2 / 24000 - SECONDS) < 0.01

    run(scenario())


def test_the_body_streams_before_the_last_engine_step_and_a_client_going_away_frees_the_slot() -> None:
    async def scenario() -> None:
        async with running(synthetic_step_base_ms=10, synthetic_step_per_seq_ms=0) as srv:
            async with httpx.AsyncClient(timeout=30) as http, http.stream(
                    "POST", f"http://127.0.0.1:{srv.port}/v1/audio/speech",
                    json={"model": "m", "voice": "alloy", "input": "长" * 400, "response_format": "pcm"}) as r:
                assert r.status_code == 200
                got = 0
                async for piece in r.aiter_bytes():
                    got += len(piece)
                    if got > 24000:
                        break
                assert srv.engine.running == 1  # still generating: the first bytes came early
            await until(lambda: srv.engine.running == 0 and srv.admission.in_use == 0)
            assert srv.metrics.value("voxws_contexts_active") == 0

    run(scenario())


def test_long_input_is_spoken_in_full_in_segments() -> None:
    text = "今天天气很好，我们一起去公园散步吧。" * 20

    async def scenario() -> None:
        async with running(max_model_len=256, synthetic_step_base_ms=0, synthetic_step_per_seq_ms=0) as srv:
            r = await client(srv).audio.speech.create(model="m", voice="alloy", input=text, response_format="pcm")
            expected = natural_steps(text) * 0.16  # every character spoken, one speaker
            assert abs(len(r.content) / 2 / 24000 - expected) < 0.2
            assert srv.metrics.value("voxws_contexts_total", outcome="done") == 1

    run(scenario())


def test_sdk_errors_for_bad_requests_keys_and_a_full_queue(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("s3cret\n")

    async def scenario() -> None:
        async with running(auth_token_file=str(token), max_queue=0, max_num_seqs=1, synthetic_step_base_ms=20,
                           max_text_chars=100) as srv:
            good = client(srv, "s3cret")
            with pytest.raises(openai.AuthenticationError):
                await client(srv, "wrong").audio.speech.create(model="m", voice="alloy", input="你好")
            bad = [
                ({"voice": "nobody", "input": "你好"}, "voice"),
                ({"voice": "alloy", "input": "   "}, "input"),
                ({"voice": "alloy", "input": "字" * 101}, "input"),
                ({"voice": "alloy", "input": "你好", "response_format": "ogg"}, "response_format"),
                ({"voice": "alloy", "input": "你好", "speed": 1.5}, "speed"),
                ({"voice": "alloy", "input": "你好", "speed": 9}, "speed"),
            ]
            for kw, param in bad:
                with pytest.raises(openai.BadRequestError) as e:
                    await good.audio.speech.create(model="m", **kw)
                assert e.value.body["param"] == param, (kw, e.value.body)  # type: ignore[index]
            async with good.audio.speech.with_streaming_response.create(
                    model="m", voice="alloy", input="长" * 90, response_format="pcm"):
                with pytest.raises(openai.RateLimitError) as full:
                    await good.audio.speech.create(model="m", voice="alloy", input="你好")
                assert int(full.value.response.headers["retry-after"]) >= 1
            async with httpx.AsyncClient() as http:
                raw = await http.post(f"http://127.0.0.1:{srv.port}/v1/audio/speech", content=b"{not json",
                                      headers={"Authorization": "Bearer s3cret"})
                assert raw.status_code == 400 and raw.json()["error"]["type"] == "invalid_request_error"
                huge = await http.post(f"http://127.0.0.1:{srv.port}/v1/audio/speech", content=b"x" * 70_000,
                                       headers={"Authorization": "Bearer s3cret"})
                assert huge.status_code == 413
            await until(lambda: srv.admission.in_use == 0 and srv.engine.running == 0)
            models = await good.models.list()
            assert [m.id for m in models.data] == ["voxcpm-1.5"]

    run(scenario())


def test_readme_example_writes_an_mp3_that_plays(tmp_path: Path) -> None:
    out = tmp_path / "hello.mp3"

    async def scenario() -> None:
        async with running() as srv:
            def sync_call() -> None:
                sdk = openai.OpenAI(base_url=f"http://127.0.0.1:{srv.port}/v1", api_key="anything")
                sdk.audio.speech.create(model="voxcpm-1.5", voice="alloy", input="Hello").write_to_file(out)

            await asyncio.to_thread(sync_call)
        seconds, _, _ = decoded(out.read_bytes())
        assert abs(seconds - natural_steps("Hello") * 0.16) < 0.06

    run(scenario())
