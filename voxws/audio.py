"""Engine float32 chunks -> the client's format and rate.

One Encoder per context: its single streaming resampler (soxr) carries filter state from chunk to
chunk, so the seams between engine steps are seamless. Equal rates skip the resampler entirely.
Out-of-range samples clip (never wrap); NaN becomes silence. Raw PCM and wav are written here;
mp3, opus, aac and flac go on to the codec encoders in voxws.codecs.

`Encoder.packets(chunk)` / `flush_packets()` return `Packet`s (bytes ending on a frame/page
boundary + how many samples at dst_rate they decode to). `encode()` / `flush()` return the same
bytes joined, for callers not yet on packets.
"""

from __future__ import annotations

import asyncio
import os
import struct
import threading
from concurrent.futures import Executor, ThreadPoolExecutor

import numpy as np
import soxr

from voxws import codecs
from voxws.codecs import HTTP_FORMATS, Packet, rates_for
from voxws.config import FORMATS, SAMPLE_RATES

__all__ = ["FORMATS", "HTTP_FORMATS", "SAMPLE_RATES", "Encoder", "Packet", "decode", "encode_pool", "mulaw_decode",
           "mulaw_encode", "rates_for", "wav_header"]

BYTES_PER_SAMPLE = {"pcm_s16le": 2, "pcm_f32le": 4, "pcm_mulaw": 1, "wav": 2}
STREAMING_SIZE = 0xFFFFFFFF  # RIFF and data sizes of a WAV whose length is not known yet: "read to the end"

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


def wav_header(rate: int) -> bytes:
    """A 44-byte RIFF/WAVE header for a mono s16 stream of unknown length (sizes 0xFFFFFFFF, which
    FFmpeg, browsers and Python's wave module read as "up to the end of the data")."""
    return (b"RIFF" + struct.pack("<I", STREAMING_SIZE) + b"WAVEfmt "
            + struct.pack("<IHHIIHH", 16, 1, 1, rate, rate * 2, 2, 16)
            + b"data" + struct.pack("<I", STREAMING_SIZE))


class Encoder:
    """Converts one context's engine chunks (float32 mono at src_rate) to fmt at dst_rate."""

    def __init__(self, fmt: str, src_rate: int, dst_rate: int, bitrate: int | None = None):
        if fmt not in HTTP_FORMATS:
            raise ValueError(f"format={fmt!r}: must be one of {', '.join(HTTP_FORMATS)}")
        if dst_rate not in rates_for(fmt):
            raise ValueError(f"sample_rate={dst_rate!r}: {fmt} must be one of {', '.join(map(str, rates_for(fmt)))}")
        if src_rate <= 0:
            raise ValueError(f"src_rate={src_rate}: must be a positive sample rate")
        self.fmt, self.src_rate, self.dst_rate = fmt, src_rate, dst_rate
        self.bitrate = codecs.check(fmt, dst_rate, bitrate)
        self._stream = None if src_rate == dst_rate else soxr.ResampleStream(src_rate, dst_rate, 1,
                                                                             dtype="float32", quality="HQ")
        self._codec = codecs.open_encoder(fmt, dst_rate, self.bitrate) if fmt in codecs.COMPRESSED else None
        self._header = fmt == "wav"
        self._flushed = False
        self._lock = threading.Lock()  # one call at a time, even when an awaiting caller was cancelled

    @property
    def bytes_per_sample(self) -> int:
        """Bytes per sample of the raw formats (and wav's body); compressed formats have none."""
        if self.fmt not in BYTES_PER_SAMPLE:
            raise ValueError(f"format={self.fmt!r} is compressed: count Packet.samples, not bytes")
        return BYTES_PER_SAMPLE[self.fmt]

    def _convert(self, x: np.ndarray) -> bytes:
        if self.fmt in ("pcm_s16le", "wav"):
            return _to_s16(x).tobytes()
        if self.fmt == "pcm_f32le":
            y = _finite(np.array(x, dtype="<f4"))
            return np.clip(y, -1.0, 1.0, out=y).tobytes()
        return mulaw_encode(_to_s16(x)).tobytes()

    def _out(self, x: np.ndarray, last: bool) -> list[Packet]:
        if self._codec is not None:
            x = _finite(np.array(x, dtype=np.float32))  # a copy: the codec may keep a reference
            return self._codec.encode(x) + (self._codec.flush() if last else [])
        if self._header and (len(x) or last):
            # wav: the header rides with the first audio (every piece decodes to something)
            self._header = False
            return [Packet(wav_header(self.dst_rate) + (self._convert(x) if len(x) else b""), len(x))]
        return [Packet(self._convert(x), len(x))] if len(x) else []

    def packets(self, chunk: np.ndarray) -> list[Packet]:
        """One engine chunk -> zero or more packets (resampler and codec hold back a little until
        flush_packets(); the first packet of wav, opus and flac starts with the header)."""
        with self._lock:
            if self._flushed:
                raise RuntimeError("Encoder.encode after flush: use a new Encoder for a new stream")
            x = np.asarray(chunk, dtype=np.float32).reshape(-1)
            if self._stream is not None:
                x = self._stream.resample_chunk(x)
            return self._out(x, last=False)

    def flush_packets(self) -> list[Packet]:
        """End of stream: the resampler's tail and the codec's last frames and trailer. A second
        call returns []."""
        with self._lock:
            if self._flushed:
                return []
            self._flushed = True
            tail = np.zeros(0, dtype=np.float32)
            if self._stream is not None:
                tail = self._stream.resample_chunk(tail, last=True)
            return self._out(tail, last=True)

    def encode(self, chunk: np.ndarray) -> bytes:
        """packets() joined into one binary frame's bytes (for callers not yet on packets)."""
        return b"".join(p.data for p in self.packets(chunk))

    def flush(self) -> bytes:
        return b"".join(p.data for p in self.flush_packets())

    @property
    def heavy(self) -> bool:
        """Whether a chunk costs enough CPU to move off the event loop: the codecs take 0.3-4 ms per
        160 ms chunk (docs/benchmarks.md "Encoding cost"), raw PCM and wav tens of microseconds,
        less than the hop to a thread."""
        return self._codec is not None

    async def packets_async(self, chunk: np.ndarray, executor: Executor | None = None) -> list[Packet]:
        """packets(), on `executor` (default: encode_pool()) for the heavy formats, inline for the
        rest. libopus, LAME and FFmpeg run without the GIL, so the loop keeps serving meanwhile.
        Await each call before the next on one Encoder (they are serialised anyway); do not modify
        `chunk` until the call returns."""
        if not self.heavy:
            return self.packets(chunk)
        return await asyncio.get_running_loop().run_in_executor(executor or encode_pool(), self.packets, chunk)

    async def flush_packets_async(self, executor: Executor | None = None) -> list[Packet]:
        if not self.heavy:
            return self.flush_packets()
        return await asyncio.get_running_loop().run_in_executor(executor or encode_pool(), self.flush_packets)


_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def encode_pool() -> ThreadPoolExecutor:
    """The process's encoding threads (made on first use): one per core up to 8. 128 Opus streams
    need about one core of codec time (docs/benchmarks.md "Encoding cost")."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1), thread_name_prefix="voxws-encode")
        return _pool


def decode(data: bytes, fmt: str) -> np.ndarray:
    """Client bytes -> float32 samples in [-1, 1] (tests, bench, clients)."""
    if fmt == "pcm_s16le":
        return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0
    if fmt == "pcm_f32le":
        return np.frombuffer(data, dtype="<f4").astype(np.float32)
    if fmt == "pcm_mulaw":
        return mulaw_decode(data).astype(np.float32) / 32768.0
    raise ValueError(f"format={fmt!r}: decode() reads the raw formats {', '.join(codecs.PCM_FORMATS)}")
