"""voxws.samples: per-frame sample counts of each format, checked against a real decoder (PyAV)."""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest

from voxws.samples import SampleCounter

av = pytest.importorskip("av")


def encode(fmt: str, codec: str, rate: int, seconds: float) -> bytes:
    buf = io.BytesIO()
    with av.open(buf, "w", format=fmt) as out:
        stream = out.add_stream(codec, rate=rate, layout="mono")
        t = np.arange(int(rate * seconds)) / rate
        pcm = (np.sin(2 * np.pi * 220 * t) * 8000).astype("<i2").reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
        frame.sample_rate = rate
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buf.getvalue()


def decoded_samples(data: bytes, rate: int) -> int:
    with av.open(io.BytesIO(data)) as c:
        return sum(f.samples for f in c.decode(audio=0)) * rate // c.streams.audio[0].rate


def test_pcm_formats_are_exact() -> None:
    assert SampleCounter("pcm_s16le", 24000).count(b"\0" * 480) == 240
    assert SampleCounter("pcm_f32le", 24000).count(b"\0" * 480) == 120
    assert SampleCounter("pcm_mulaw", 8000).count(b"\0" * 480) == 480
    assert SampleCounter("aiff", 8000).count(b"\0" * 480) is None


def test_wav_skips_the_header_of_the_first_frame() -> None:
    header = b"RIFF" + struct.pack("<I", 0xFFFFFFFF) + b"WAVE" + b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, 24000,
                                                                                         48000, 2, 16)
    header += b"data" + struct.pack("<I", 0xFFFFFFFF)
    c = SampleCounter("wav", 24000)
    assert c.count(header + b"\0" * 100) == 50
    assert c.count(b"\0" * 100) == 50


def test_mp3_frames_counted() -> None:
    for rate in (24000, 44100):
        data = encode("mp3", "mp3", rate, 1.0)
        n, decoded = SampleCounter("mp3", rate).count(data), decoded_samples(data, rate)
        per_frame = 1152 if rate > 24000 else 576
        # ID3 tag and Info frame not counted; the decoder also trims LAME's delay and padding (gapless).
        assert n is not None and n % per_frame == 0 and decoded <= n <= decoded + 3 * per_frame


def test_ogg_opus_pages_counted_at_the_decoded_rate() -> None:
    data = encode("ogg", "libopus", 48000, 1.0)
    # Page by page, as the server sends them: the total matches the decoder's.
    pages, pos = [], 0
    while pos < len(data):
        nxt = data.find(b"OggS", pos + 4)
        pages.append(data[pos:nxt if nxt > 0 else len(data)])
        pos = nxt if nxt > 0 else len(data)
    c = SampleCounter("opus", 24000)
    total = sum(c.count(p) or 0 for p in pages)
    # Within one 20 ms Opus frame of the decoder (which may trim the encoder's end padding).
    assert abs(total - decoded_samples(data, 24000)) <= 480
