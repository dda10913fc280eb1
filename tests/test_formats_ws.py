"""Compressed formats over a real WebSocket: a context's frames concatenate to one valid file, each frame
ends on a frame/page boundary (so a client decodes it as it arrives), durations count samples."""

from __future__ import annotations

import io
import json

import av
import pytest

from tests.conftest import running, url
from tests.wsclient import open_ws, run
from voxws.engines.synthetic import natural_steps

TEXT = "今天天气很好，我们一起去公园散步吧。"


def decode(data: bytes) -> tuple[int, int]:
    """(samples, rate) of a whole file or a prefix of one, by FFmpeg through PyAV."""
    with av.open(io.BytesIO(data)) as f:
        s = f.streams.audio[0]
        n = sum(fr.samples for fr in f.decode(s))
        return n, s.rate


async def speak(srv, **opts: object) -> tuple[dict, list[bytes], dict]:  # type: ignore[no-untyped-def]
    ws, _ = await open_ws(url(srv))
    await ws.send(json.dumps({"type": "speak", "text": TEXT, **opts}))
    frames: list[bytes] = []
    start: dict = {}
    while True:
        msg = await ws.recv()
        if isinstance(msg, bytes):
            frames.append(msg)
            continue
        m = json.loads(msg)
        if m["type"] == "start":
            start = m
        if m["type"] in ("done", "error"):
            await ws.close()
            return m, frames, start


@pytest.mark.parametrize(("fmt", "opts", "rate"), [
    ("wav", {}, 44100), ("wav", {"sample_rate": 16000}, 16000),
    ("mp3", {}, 44100), ("mp3", {"sample_rate": 24000, "bitrate": 48000}, 24000),
    ("opus", {}, 48000), ("opus", {"sample_rate": 16000, "bitrate": 16000}, 16000),
])
def test_frames_make_one_file_and_each_decodes_as_it_arrives(fmt: str, opts: dict, rate: int) -> None:
    async def scenario() -> None:
        async with running(synthetic_step_base_ms=2, synthetic_step_per_seq_ms=0) as srv:
            done, frames, start = await speak(srv, format=fmt, **opts)
        assert done["type"] == "done", done
        assert start["format"] == fmt and start["sample_rate"] == rate
        expected = natural_steps(TEXT) * 0.16
        slack = 0.06 if fmt == "mp3" else 0.03  # the encoder's delay and padding: a codec frame or two
        assert abs(done["audio_ms"] / 1000 - expected) < slack  # counted in samples, not bytes
        whole, got_rate = decode(b"".join(frames))
        assert got_rate == (48000 if fmt == "opus" else rate)  # FFmpeg decodes Opus at 48 kHz whatever was coded
        assert abs(whole / got_rate - expected) < slack
        # Every prefix of whole frames is a valid stream that decodes to more audio than the one before.
        decoded = [decode(b"".join(frames[:k]))[0] for k in range(2, len(frames) + 1, 3)]
        assert decoded == sorted(decoded) and decoded[-1] > 0
        if fmt == "opus":
            assert all(f.startswith(b"OggS") for f in frames)  # every frame is whole Ogg pages
        if fmt == "wav":
            assert frames[0].startswith(b"RIFF")

    run(scenario())


def test_bad_format_options_are_refused_with_their_codes() -> None:
    async def scenario() -> None:
        async with running() as srv:
            for opts, code in (({"format": "opus", "sample_rate": 22050}, "unsupported_format"),
                               ({"format": "pcm_s16le", "bitrate": 64000}, "bad_option"),
                               ({"format": "opus", "bitrate": 500000}, "bad_option"),
                               ({"format": "mp3", "bitrate": "fast"}, "bad_message"),
                               ({"format": "aac"}, "unsupported_format")):
                done, frames, _ = await speak(srv, **opts)
                assert done["code"] == code and not frames, (opts, done)

    run(scenario())


def test_opus_saves_bandwidth_against_pcm() -> None:
    async def scenario() -> None:
        async with running(synthetic_step_base_ms=2, synthetic_step_per_seq_ms=0) as srv:
            _, pcm, _ = await speak(srv)
            _, opus, _ = await speak(srv, format="opus")
        ratio = sum(map(len, pcm)) / sum(map(len, opus))
        print(f"pcm_s16le 44.1 kHz / opus 48 kHz bytes: {ratio:.1f}x")
        assert ratio > 8

    run(scenario())


