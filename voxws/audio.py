"""Engine float32 chunks -> the client's format and rate.

One Encoder per context: its single streaming resampler (soxr) carries filter state from chunk to
chunk, so the seams between engine steps are seamless. Equal rates skip the resampler entirely.
Out-of-range samples clip (never wrap); NaN becomes silence.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import soxr

from voxws.config import FORMATS, SAMPLE_RATES

__all__ = ["FORMATS", "SAMPLE_RATES", "Encoder", "Packet", "decode", "mulaw_decode", "mulaw_encode"]


@dataclass(frozen=True, slots=True)
class Packet:
    """Encoded audio and how many samples (at the output rate) it holds: time is counted in samples."""

    data: bytes
    samples: int

BYTES_PER_SAMPLE = {"pcm_s16le": 2, "pcm_f32le": 4, "pcm_mulaw": 1}

# G.711 mu-law on 16-bit linear samples (the classic Sun g711.c / audioop rule).
MULAW_BIAS = 0x84
MULAW_CLIP = 32635
# Segment (exponent) of a biased magnitude, indexed by magnitude >> 7 (0..255).
_EXP_TABLE = np.array([0] + [int(np.log2(i)) for i in range(1, 256)], dtype=np.int16)


def _mulaw_decode_table() -> np.ndarray:
    u = ~np.arange(256, dtype=np.int32) & 0xFF
    exponent = (u >> 4) & 0x07
    mantissa = u & 0x0F
    magnitude = (((mantissa << 3) + MULAW_BIAS) << exponent) - MULAW_BIAS
    return np.where(u & 0x80, -magnitude, magnitude).astype(np.int16)


_MULAW_DECODE = _mulaw_decode_table()


def mulaw_encode(pcm16: np.ndarray) -> np.ndarray:
    """int16 samples -> G.711 mu-law bytes (uint8), vectorised."""
    x = pcm16.astype(np.int32)
    sign = np.where(x < 0, 0x80, 0).astype(np.int32)
    mag = np.minimum(np.abs(x), MULAW_CLIP) + MULAW_BIAS
    exponent = _EXP_TABLE[mag >> 7].astype(np.int32)
    mantissa = (mag >> (exponent + 3)) & 0x0F
    return (~(sign | (exponent << 4) | mantissa) & 0xFF).astype(np.uint8)


def mulaw_decode(data: bytes | np.ndarray) -> np.ndarray:
    """G.711 mu-law bytes -> int16 samples."""
    codes = np.frombuffer(data, dtype=np.uint8) if isinstance(data, (bytes, bytearray, memoryview)) else data
    return _MULAW_DECODE[codes]


def _finite(y: np.ndarray) -> np.ndarray:
    # NaN would become -32768 (a click); one sum finds it, much cheaper than nan_to_num on every chunk.
    if np.isnan(y.sum()):
        np.nan_to_num(y, copy=False, nan=0.0)
    return y


def _to_s16(x: np.ndarray) -> np.ndarray:
    y = _finite(np.multiply(x, 32767.0, dtype=np.float32))
    np.clip(y, -32767.0, 32767.0, out=y)
    return np.rint(y, out=y).astype("<i2")


def _check(fmt: str, rate: int, name: str) -> None:
    if fmt not in FORMATS:
        raise ValueError(f"format={fmt!r}: must be one of {', '.join(FORMATS)}")
    if rate not in SAMPLE_RATES:
        raise ValueError(f"{name}={rate!r}: must be one of {', '.join(map(str, SAMPLE_RATES))}")


class Encoder:
    """Converts one context's engine chunks (float32 mono at src_rate) to fmt at dst_rate."""

    def __init__(self, fmt: str, src_rate: int, dst_rate: int):
        _check(fmt, dst_rate, "sample_rate")
        if src_rate <= 0:
            raise ValueError(f"src_rate={src_rate}: must be a positive sample rate")
        self.fmt, self.src_rate, self.dst_rate = fmt, src_rate, dst_rate
        self._stream = None if src_rate == dst_rate else soxr.ResampleStream(src_rate, dst_rate, 1,
                                                                             dtype="float32", quality="HQ")
        self._flushed = False

    @property
    def bytes_per_sample(self) -> int:
        return BYTES_PER_SAMPLE[self.fmt]

    def _convert(self, x: np.ndarray) -> bytes:
        if self.fmt == "pcm_s16le":
            return _to_s16(x).tobytes()
        if self.fmt == "pcm_f32le":
            y = _finite(np.array(x, dtype="<f4"))
            return np.clip(y, -1.0, 1.0, out=y).tobytes()
        return mulaw_encode(_to_s16(x)).tobytes()

    def encode(self, chunk: np.ndarray) -> bytes:
        """One engine chunk -> bytes for one binary frame (may be shorter than the chunk when
        resampling: the resampler holds back a few milliseconds until flush())."""
        if self._flushed:
            raise RuntimeError("Encoder.encode after flush: use a new Encoder for a new stream")
        x = np.asarray(chunk, dtype=np.float32).reshape(-1)
        if self._stream is not None:
            x = self._stream.resample_chunk(x)
        return self._convert(x) if len(x) else b""

    def packets(self, chunk: np.ndarray) -> list[Packet]:
        data = self.encode(chunk)
        return [Packet(data, len(data) // self.bytes_per_sample)] if data else []

    def flush_packets(self) -> list[Packet]:
        data = self.flush()
        return [Packet(data, len(data) // self.bytes_per_sample)] if data else []

    @property
    def heavy(self) -> bool:
        return False

    async def packets_async(self, chunk: np.ndarray) -> list[Packet]:
        return self.packets(chunk)

    async def flush_packets_async(self) -> list[Packet]:
        return self.flush_packets()

    def flush(self) -> bytes:
        """The resampler's tail at the end of the stream (b"" when not resampling)."""
        if self._stream is None or self._flushed:
            return b""
        self._flushed = True
        tail = self._stream.resample_chunk(np.zeros(0, dtype=np.float32), last=True)
        return self._convert(tail) if len(tail) else b""


def decode(data: bytes, fmt: str) -> np.ndarray:
    """Client bytes -> float32 samples in [-1, 1] (tests, bench, clients)."""
    if fmt == "pcm_s16le":
        return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0
    if fmt == "pcm_f32le":
        return np.frombuffer(data, dtype="<f4").astype(np.float32)
    if fmt == "pcm_mulaw":
        return mulaw_decode(data).astype(np.float32) / 32768.0
    raise ValueError(f"format={fmt!r}: must be one of {', '.join(FORMATS)}")
