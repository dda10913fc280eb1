"""Audio formats and streaming resampling: what a client decodes is what the engine said."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import soxr

from voxws.audio import SAMPLE_RATES, Encoder, decode, mulaw_decode, mulaw_encode
from voxws.codecs import PCM_FORMATS

SRC = 44100
CHUNK = 7056  # one engine step


def tone(seconds: float = 1.0, freq: float = 1000.0, amp: float = 0.5, rate: int = SRC) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def stream(enc: Encoder, x: np.ndarray, chunk: int = CHUNK) -> bytes:
    out = [enc.encode(x[i:i + chunk]) for i in range(0, len(x), chunk)]
    return b"".join([*out, enc.flush()])


def peak_hz(x: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spectrum) * rate / len(x))


@pytest.mark.parametrize("rate", SAMPLE_RATES)
@pytest.mark.parametrize("fmt", PCM_FORMATS)
def test_tone_round_trips_at_every_format_and_rate(fmt: str, rate: int) -> None:
    x = tone(1.0)
    enc = Encoder(fmt, SRC, rate)
    data = stream(enc, x)
    assert len(data) % enc.bytes_per_sample == 0
    y = decode(data, fmt)
    assert abs(len(y) - rate) <= 2  # one second at the asked rate
    assert peak_hz(y, rate) == pytest.approx(1000.0, abs=2.0)
    mid = y[len(y) // 4: 3 * len(y) // 4]
    rms = float(np.sqrt(np.mean(mid.astype(np.float64) ** 2)))
    assert rms == pytest.approx(0.5 / np.sqrt(2), rel=0.03)  # level kept


def test_native_rate_s16_is_one_frame_per_chunk() -> None:
    enc = Encoder("pcm_s16le", SRC, SRC)
    chunk = tone(CHUNK / SRC)
    data = enc.encode(chunk)
    assert len(data) == 14112
    assert np.array_equal(np.frombuffer(data, "<i2"), np.rint(chunk * 32767).astype(np.int16))
    assert enc.flush() == b""


@pytest.mark.parametrize("rate", [8000, 16000, 22050, 24000, 48000])
def test_chunked_resampling_matches_whole_signal(rate: int) -> None:
    rng = np.random.default_rng(7)
    x = (0.3 * tone(2.0, 440) + 0.05 * rng.standard_normal(2 * SRC)).astype(np.float32)
    whole = soxr.resample(x, SRC, rate, quality="HQ")
    chunked = decode(stream(Encoder("pcm_f32le", SRC, rate), x), "pcm_f32le")
    n = min(len(whole), len(chunked))
    assert abs(len(whole) - len(chunked)) <= 2
    assert np.max(np.abs(whole[:n] - chunked[:n])) < 1e-3  # seams are seamless
    # ... and odd chunk sizes give the same stream too.
    odd = decode(stream(Encoder("pcm_f32le", SRC, rate), x, chunk=1234), "pcm_f32le")
    assert np.max(np.abs(odd[:n] - chunked[:n])) < 1e-5


@pytest.mark.parametrize("fmt", PCM_FORMATS)
def test_out_of_range_clips_not_wraps(fmt: str) -> None:
    x = np.array([0.0, 1.5, -1.5, 3.0, -3.0, 1.0, -1.0, np.nan], dtype=np.float32)
    y = decode(Encoder(fmt, SRC, SRC).encode(x), fmt)
    assert y[1] > 0.97 and y[3] > 0.97 and y[5] > 0.97  # positive stays loud and positive
    assert y[2] < -0.97 and y[4] < -0.97 and y[6] < -0.97
    assert abs(y[0]) < 1e-3 and abs(y[7]) < 1e-3  # NaN is silence
    assert np.all(np.abs(y) <= 1.0)


def test_loud_resampled_audio_clips() -> None:
    y = decode(stream(Encoder("pcm_s16le", SRC, 16000), tone(0.5, amp=2.0)), "pcm_s16le")
    assert y.max() > 0.99 and y.min() < -0.99  # clipped square-ish wave, not wrapped noise
    assert peak_hz(y, 16000) == pytest.approx(1000.0, abs=3.0)


def test_mulaw_g711_reference_points() -> None:
    pcm = np.array([0, 1, -1, 32767, -32768, 32635, -32635, 100, -100, 1000, 8000], dtype=np.int16)
    codes = mulaw_encode(pcm)
    assert list(codes[:7]) == [0xFF, 0xFF, 0x7F, 0x80, 0x00, 0x80, 0x00]
    assert list(codes[7:]) == [0xF2, 0x72, 0xCE, 0xA0]
    assert list(mulaw_decode(bytes([0x00, 0x7F, 0x80, 0xFF, 0xF2, 0xCE]))) == [-32124, 0, 32124, 0, 104, 988]


def test_mulaw_matches_the_classic_implementation() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        audioop = pytest.importorskip("audioop")  # CPython < 3.13 carries Sun's g711 code
    codes = np.arange(256, dtype=np.uint8)
    assert np.array_equal(mulaw_decode(codes.tobytes()),
                          np.frombuffer(audioop.ulaw2lin(codes.tobytes(), 2), np.int16))
    pcm = np.arange(0, 32768, dtype=np.int16)  # audioop rounds negatives via >>2; compare magnitudes
    assert np.array_equal(mulaw_encode(pcm), np.frombuffer(audioop.lin2ulaw(pcm.tobytes(), 2), np.uint8))
    assert np.array_equal(mulaw_encode(-pcm[1:]), mulaw_encode(pcm[1:]) & 0x7F)  # sign symmetric


def test_mulaw_round_trip_error_is_small() -> None:
    pcm = np.arange(-32768, 32768, 7, dtype=np.int16)
    back = mulaw_decode(mulaw_encode(pcm)).astype(np.int32)
    err = np.abs(back - np.clip(pcm.astype(np.int32), -32635, 32635))
    assert np.all(err <= np.maximum(16, np.abs(pcm.astype(np.int32)) // 16))  # ~4 bits of mantissa


def test_encoder_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match="format='vorbis'"):
        Encoder("vorbis", SRC, SRC)
    with pytest.raises(ValueError, match="sample_rate=12345"):
        Encoder("pcm_s16le", SRC, 12345)
    with pytest.raises(ValueError, match="format='wav'"):
        decode(b"", "wav")


def test_encoder_after_flush_is_an_error() -> None:
    enc = Encoder("pcm_s16le", SRC, 16000)
    enc.encode(tone(0.1))
    enc.flush()
    assert enc.flush() == b""
    with pytest.raises(RuntimeError, match="after flush"):
        enc.encode(tone(0.1))


def test_bytes_per_sample() -> None:
    assert [Encoder(f, SRC, SRC).bytes_per_sample for f in PCM_FORMATS] == [2, 4, 1]
