"""Compressed and container formats, checked by independent decoders (FFmpeg through PyAV, and the
ffmpeg command line from Debian when installed): duration, pitch, decodable as each packet arrives."""

from __future__ import annotations

import asyncio
import io
import shutil
import struct
import subprocess
import wave

import av
import numpy as np
import pytest

from voxws import codecs
from voxws.audio import Encoder, Packet
from voxws.codecs import HTTP_FORMATS, CodecError, check, ogg_crc, rates_for
from voxws.config import FORMATS

SRC = 44100
CHUNK = 7056  # one engine step
FRAME = {"wav": 1, "flac": 1, "opus": 1, "mp3": 1152, "aac": 1024}  # decoded-vs-sent slack, see below
# Raw MP3 and ADTS AAC carry no gapless info: they decode to the samples sent + the encoder's delay
# (LAME 576 + decoder 529, AAC 1024) + the padding of the last frame. The others decode exactly.
DELAY = {"mp3": 1105, "aac": 1024}
CASES = [(f, r) for f in ("wav", "mp3", "opus", "aac", "flac") for r in (8000, 16000, 24000, 44100, 48000)
         if r in rates_for(f)]


def tone(seconds: float, freq: float = 440.0, amp: float = 0.5) -> np.ndarray:
    return (amp * np.sin(2 * np.pi * freq * np.arange(int(seconds * SRC)) / SRC)).astype(np.float32)


def encode(fmt: str, rate: int, x: np.ndarray, chunk: int = CHUNK, bitrate: int | None = None) -> list[Packet]:
    enc = Encoder(fmt, SRC, rate, bitrate)
    out = [p for i in range(0, len(x), chunk) for p in enc.packets(x[i:i + chunk])]
    return out + enc.flush_packets()


CONTAINER = {"wav": "wav", "mp3": "mp3", "opus": "ogg", "aac": "aac", "flac": "flac"}


def av_decode(data: bytes, fmt: str | None = None) -> tuple[np.ndarray, int]:
    if not data:
        return np.zeros(0, np.float32), 0
    with av.open(io.BytesIO(data), format=CONTAINER.get(fmt or "")) as c:
        frames = [f.to_ndarray().reshape(-1) for f in c.decode(audio=0)]
        rate = c.streams.audio[0].rate
    y = np.concatenate(frames) if frames else np.zeros(0, np.float32)
    if y.dtype.kind == "i":  # wav, flac: integer samples
        y = y.astype(np.float32) / (np.iinfo(y.dtype).max + 1)
    return y.astype(np.float32), rate


def sent(n_src: int, rate: int) -> int:
    return round(n_src * rate / SRC)


def peak_hz(x: np.ndarray, rate: int) -> float:
    x = x[len(x) // 4: 3 * len(x) // 4].astype(np.float64)
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spectrum) * rate / len(x))


def out_samples(decoded: int, decoded_rate: int, rate: int) -> float:
    return decoded * rate / decoded_rate  # Opus decoders output 48 kHz whatever the encoded rate


@pytest.mark.parametrize(("fmt", "rate"), CASES)
def test_stream_decodes_to_the_duration_and_pitch_sent(fmt: str, rate: int) -> None:
    x = tone(1.3)
    packets = encode(fmt, rate, x)
    y, decoded_rate = av_decode(b"".join(p.data for p in packets))
    n = out_samples(len(y), decoded_rate, rate)
    assert sum(p.samples for p in packets) == n  # `samples` is what the decoder outputs
    assert 0 <= n - sent(len(x), rate) <= DELAY.get(fmt, 0) + FRAME[fmt], (n, sent(len(x), rate))
    assert abs(peak_hz(y, decoded_rate) - 440) < 3
    assert np.sqrt(np.mean(y[len(y) // 4: 3 * len(y) // 4] ** 2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.15)


@pytest.mark.parametrize(("fmt", "rate"), [("wav", 24000), ("mp3", 24000), ("mp3", 44100), ("opus", 48000),
                                            ("opus", 16000), ("aac", 24000), ("flac", 44100)])
def test_every_packet_decodes_as_it_arrives(fmt: str, rate: int) -> None:
    """Each prefix of packets (what a client has after each WebSocket frame) is a valid stream that
    decodes to exactly the samples the packets so far announced."""
    packets = encode(fmt, rate, tone(1.0))
    assert len(packets) >= 5 and all(p.samples for p in packets)
    have, announced = b"", 0
    for p in packets:
        have += p.data
        announced += p.samples
        y, decoded_rate = av_decode(have, fmt)
        assert out_samples(len(y), decoded_rate, rate) == announced


def test_mp3_frames_decode_alone() -> None:
    """No bit reservoir: a client that decodes each WebSocket frame on its own loses nothing."""
    for p in encode("mp3", 24000, tone(1.0))[2:-1]:
        y, _ = av_decode(p.data)
        assert len(y) == p.samples


def test_headers_ride_with_the_first_audio() -> None:
    wav = encode("wav", 16000, tone(0.2))
    assert wav[0].data[:4] == b"RIFF" and len(wav[0].data) == 44 + 2 * wav[0].samples > 44
    assert struct.unpack("<I", wav[0].data[40:44])[0] == 0xFFFFFFFF  # streaming size: read to the end
    with wave.open(io.BytesIO(b"".join(p.data for p in wav))) as w:
        assert w.getframerate() == 16000 and w.getsampwidth() == 2 and w.getnchannels() == 1
    opus = encode("opus", 24000, tone(0.2))
    assert opus[0].samples > 0 and opus[0].data.startswith(b"OggS") and b"OpusHead" in opus[0].data
    flac = encode("flac", 24000, tone(0.2))
    assert flac[0].samples > 0 and flac[0].data.startswith(b"fLaC")


def ogg_pages(data: bytes) -> list[tuple[int, int, bytes]]:
    """(flags, granule, page) for each page, checking each CRC."""
    pages, i = [], 0
    while i < len(data):
        assert data[i:i + 4] == b"OggS"
        n = data[i + 26]
        end = i + 27 + n + sum(data[i + 27:i + 27 + n])
        page = bytearray(data[i:end])
        crc = struct.unpack("<I", page[22:26])[0]
        page[22:26] = b"\0\0\0\0"
        assert ogg_crc(bytes(page)) == crc
        pages.append((data[i + 5], struct.unpack("<q", data[i + 6:i + 14])[0], data[i:end]))
        i = end
    return pages


def test_opus_packets_are_whole_pages_and_the_last_is_eos() -> None:
    packets = encode("opus", 24000, tone(1.0))
    for p in packets:
        assert ogg_pages(p.data)  # every packet parses as whole pages
    pages = [pg for p in packets for pg in ogg_pages(p.data)]
    assert pages[0][0] == 0x02 and pages[-1][0] == 0x04 and all(f == 0 for f, _, _ in pages[1:-1])
    granules = [g for _, g, _ in pages[2:]]
    assert granules == sorted(granules)
    assert granules[-1] == 312 + 2 * sent(SRC, 24000)  # pre-skip + samples sent, in 48 kHz units


def test_ogg_crc_matches_ffmpegs_muxer() -> None:
    buf = io.BytesIO()
    with av.open(buf, "w", format="ogg") as c:
        s = c.add_stream("libopus", rate=48000, layout="mono")
        frame = av.AudioFrame.from_ndarray(tone(0.2).reshape(1, -1), format="flt", layout="mono")
        frame.sample_rate = 48000
        for p in [*s.encode(frame), *s.encode(None)]:
            c.mux(p)
    assert len(ogg_pages(buf.getvalue())) >= 3


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg (Debian) not installed")
@pytest.mark.parametrize(("fmt", "rate"), [("wav", 22050), ("mp3", 44100), ("opus", 48000), ("opus", 8000),
                                            ("aac", 48000), ("flac", 16000)])
def test_ffmpeg_cli_decodes_the_stream(fmt: str, rate: int) -> None:
    x = tone(1.0)
    data = b"".join(p.data for p in encode(fmt, rate, x))
    out_rate = 48000 if fmt == "opus" else rate
    run = subprocess.run(["ffmpeg", "-v", "error", "-i", "pipe:0", "-f", "f32le", "-ac", "1", "-ar", str(out_rate),
                          "pipe:1"], input=data, capture_output=True, timeout=60, check=True)
    assert run.stderr == b""  # no warnings: CRCs, headers and frame lengths are right
    y = np.frombuffer(run.stdout, np.float32)
    n = out_samples(len(y), out_rate, rate)
    assert 0 <= n - sent(len(x), rate) <= DELAY.get(fmt, 0) + FRAME[fmt]
    assert abs(peak_hz(y, out_rate) - 440) < 3


@pytest.mark.parametrize("fmt", ["wav", "mp3", "opus", "aac", "flac"])
def test_bad_input(fmt: str) -> None:
    rate = 24000
    enc = Encoder(fmt, SRC, rate)
    nan = tone(0.16)
    nan[100:900] = np.nan
    packets = enc.packets(nan) + enc.packets(np.zeros(0, np.float32)) + enc.packets(tone(0.16))
    packets += enc.flush_packets()
    assert enc.flush_packets() == []  # flushing twice is harmless
    with pytest.raises(RuntimeError, match="after flush"):
        enc.packets(tone(0.1))
    y, decoded_rate = av_decode(b"".join(p.data for p in packets), fmt)
    assert np.isfinite(y).all() and sum(p.samples for p in packets) == out_samples(len(y), decoded_rate, rate)
    # an empty stream is still a valid file
    empty = Encoder(fmt, SRC, rate)
    data = b"".join(p.data for p in empty.packets(np.zeros(0, np.float32)) + empty.flush_packets())
    assert len(av_decode(data, fmt)[0]) <= (2 * FRAME[fmt] if fmt in DELAY else 0)  # at most the priming
    assert fmt in DELAY or data  # a header at least: a valid, empty file


def test_odd_chunk_sizes_give_the_same_duration() -> None:
    x = tone(1.0)
    for fmt in ("opus", "flac", "wav"):
        a = sum(p.samples for p in encode(fmt, 48000, x, chunk=CHUNK))
        b = sum(p.samples for p in encode(fmt, 48000, x, chunk=333))
        assert a == b == sent(len(x), 48000)


def test_rates_and_bitrates_are_validated() -> None:
    assert rates_for("opus") == (8000, 12000, 16000, 24000, 48000)
    assert 44100 in rates_for("mp3") and 11025 in rates_for("mp3")
    assert set(FORMATS) < set(HTTP_FORMATS) and {"aac", "flac"} <= set(HTTP_FORMATS)
    assert codecs.default_rate("opus", 44100) == 48000 and codecs.default_rate("mp3", 44100) == 44100
    assert check("opus", 48000) == 48000 and check("mp3", 24000) == 64000 and check("wav", 24000) is None
    for fmt, rate, bitrate, option in [("opus", 44100, None, "sample_rate"), ("opus", 24000, 1000, "bitrate"),
                                       ("opus", 24000, 10**6, "bitrate"), ("mp3", 16000, 320000, "bitrate"),
                                       ("wav", 24000, 64000, "bitrate"), ("opus", 24000, True, "bitrate"),
                                       ("vorbis", 24000, None, "format"), ("aac", 8000, 64000, "bitrate")]:
        with pytest.raises(CodecError) as e:
            check(fmt, rate, bitrate)
        assert e.value.option == option, (fmt, rate, bitrate)
    with pytest.raises(ValueError, match="sample_rate=44100"):
        Encoder("opus", SRC, 44100)


@pytest.mark.parametrize(("fmt", "low", "high"), [("opus", 16000, 96000), ("mp3", 32000, 128000),
                                                  ("aac", 32000, 128000)])
def test_bitrate_sets_the_size(fmt: str, low: int, high: int) -> None:
    x = tone(4.0, amp=0.3) + tone(4.0, freq=3100.0, amp=0.1) + np.random.default_rng(0).normal(0, 0.02, 4 * SRC)
    sizes = [8 * sum(len(p.data) for p in encode(fmt, 48000, x.astype(np.float32), bitrate=b)) / 4.0
             for b in (low, high)]
    assert sizes[0] < sizes[1]
    for b, bps in zip((low, high), sizes, strict=True):
        assert 0.5 * b < bps < 1.5 * b, (b, bps)


def test_openai_pcm_is_24khz_s16le() -> None:
    fmt, rate = codecs.OPENAI_FORMATS["pcm"]
    packets = encode(fmt, rate, tone(0.5))
    assert (fmt, rate) == ("pcm_s16le", 24000) and sum(len(p.data) for p in packets) == 2 * sent(SRC // 2, rate)


def test_async_encoding_gives_the_same_stream_as_inline() -> None:
    """packets_async (off the loop for codecs, inline for PCM) makes exactly what packets() makes, also
    with many encoders in flight at once."""
    x = tone(1.0)

    async def run(fmt: str) -> bytes:
        enc = Encoder(fmt, SRC, 24000)
        out = [p for i in range(0, len(x), CHUNK) for p in await enc.packets_async(x[i:i + CHUNK])]
        return b"".join(p.data for p in out + await enc.flush_packets_async())

    async def main() -> list[bytes]:
        return await asyncio.gather(*(run(f) for f in ("mp3", "flac", "wav", "pcm_s16le", "mp3", "flac")))

    got = asyncio.run(main())
    for fmt, data in zip(("mp3", "flac", "wav", "pcm_s16le"), got, strict=False):
        assert data == b"".join(p.data for p in encode(fmt, 24000, x))
    assert got[0] == got[4] and got[1] == got[5]
    assert Encoder("opus", SRC, 24000).heavy and not Encoder("wav", SRC, 24000).heavy
