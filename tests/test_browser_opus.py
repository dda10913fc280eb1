"""voxws.js decodes the server's Ogg Opus in a real headless Chromium (WebCodecs), piece by piece as the
WebSocket frames would bring it, and falls back to PCM where the browser cannot."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import numpy as np
import pytest
from playwright.sync_api import Browser

from tests.conftest import serve_process
from tests.test_browser_client import blank, js
from tests.test_browser_page import browser, pw  # noqa: F401  (the shared Chromium fixtures)
from voxws.audio import Encoder

pytestmark = pytest.mark.browser
SRC = 44100


@pytest.fixture(scope="module")
def server() -> Iterator[int]:
    with serve_process() as (_, port):
        yield port


def opus_frames(rate: int, seconds: float = 1.0, freq: float = 440.0) -> tuple[list[str], int]:
    x = (0.5 * np.sin(2 * np.pi * freq * np.arange(int(seconds * SRC)) / SRC)).astype(np.float32)
    enc = Encoder("opus", SRC, rate)
    packets = [p for i in range(0, len(x), 7056) for p in enc.packets(x[i:i + 7056])] + enc.flush_packets()
    return [base64.b64encode(p.data).decode() for p in packets], sum(p.samples for p in packets)


@pytest.mark.parametrize("rate", [48000, 24000])
def test_opus_frames_decode_as_they_arrive_to_the_samples_sent(browser: Browser, server: int, rate: int) -> None:  # noqa: F811
    frames, samples = opus_frames(rate)
    page = blank(browser, server)
    out = js(page, """
        if (!(await vox.canDecodeOpus())) return { unsupported: true };
        const got = [];
        let rate = 0, afterEach = [];
        const dec = new vox.OggOpusDecoder({ onSamples: (x, r) => { got.push(x); rate = r; },
                                             onError: (e) => { throw e; } });
        for (const b64 of arg) {
          dec.push(Uint8Array.from(atob(b64), (c) => c.charCodeAt(0)).buffer);
          await dec.flush();  // each frame decodes on its own, as it arrives
          afterEach.push(got.reduce((a, c) => a + c.length, 0));
        }
        const x = new Float32Array(got.reduce((a, c) => a + c.length, 0));
        let o = 0;
        for (const c of got) { x.set(c, o); o += c.length; }
        return { rate, afterEach, x: Array.from(x) };
    """, frames)
    if out.get("unsupported"):
        pytest.skip("this Chromium has no WebCodecs Opus decoder")
    x, out_rate = np.array(out["x"], np.float32), out["rate"]
    assert len(x) * rate == samples * out_rate  # exactly the samples sent: pre-skip and end trim applied
    assert all(b > a for a, b in zip(out["afterEach"], out["afterEach"][1:], strict=False))  # every frame adds
    mid = x[len(x) // 4: 3 * len(x) // 4]
    peak = np.argmax(np.abs(np.fft.rfft(mid * np.hanning(len(mid))))) * out_rate / len(mid)
    assert abs(peak - 440) < 3
    assert page.errors == []  # type: ignore[attr-defined]


def test_opus_without_webcodecs_asks_for_pcm(browser: Browser, server: int) -> None:  # noqa: F811
    page = blank(browser, server)
    out = js(page, """
        const client = await vox.VoxWS.connect(`ws://${location.host}/v1/tts`);
        client.canDecodeOpus = false;  // as in a browser without AudioDecoder
        const u = client.speak('Hello.', { format: 'opus', bitrate: 32000, sampleRate: 12000 });
        let n = 0;
        for await (const chunk of u) n += chunk.length;
        const s = await u.done;
        client.close();
        return { format: u.format, requested: u.requestedFormat, rate: u.sampleRate, n, ms: s.audio_ms };
    """)
    assert out["format"] == "pcm_s16le" and out["requested"] == "opus" and out["rate"] == 16000
    assert out["n"] > 0 and abs(out["n"] / 16 - out["ms"]) <= 1


def test_wav_plays_as_pcm_without_its_header(browser: Browser, server: int) -> None:  # noqa: F811
    page = blank(browser, server)
    out = js(page, """
        const client = await vox.VoxWS.connect(`ws://${location.host}/v1/tts`);
        const a = client.speak('Same sound.', { format: 'wav', sampleRate: 24000, seed: 1 });
        const b = client.speak('Same sound.', { format: 'pcm_s16le', sampleRate: 24000, seed: 1 });
        const collect = async (u) => { const p = []; for await (const c of u) p.push(...c); return p; };
        const [wa, pb] = [await collect(a), await collect(b)];
        client.close();
        return { wav: wa.length, pcm: pb.length, bytes: a.bytes };
    """)
    assert out["wav"] == out["pcm"] > 0 and out["bytes"] == 44 + 2 * out["wav"]  # all but the header is audio
