"""Streaming compressed-audio encoders: wav, mp3, Ogg Opus, AAC (ADTS) and FLAC, fed chunk by chunk.

Library: PyAV (`av`), because its manylinux wheels bundle everything needed and nothing has to be
installed on the host: libopus (Opus), libmp3lame (MP3), and FFmpeg's own `aac` and `flac` encoders
(checked in av 18.1.0: `av.codec.Codec(name, "w")` opens `libopus`, `libmp3lame`, `aac`, `flac`;
`libfdk_aac` and `libvorbis` are absent). It is the maintained binding to FFmpeg, ships abi3 wheels
for every CPython >= 3.10, and its encode path releases the GIL, so encoding can move to a thread.

PyAV gives us the codecs; the framing is written here (Ogg pages, ADTS headers, the FLAC and WAV
headers) because a streaming server needs control FFmpeg's muxers do not give through PyAV: one Ogg
page flushed per engine chunk (FFmpeg's ogg muxer holds a page until it is a second long), and
exact per-packet durations. Every `Packet` ends on a frame/page boundary, so a client can decode
each WebSocket frame or HTTP body piece as it arrives (appended to what came before).

`Packet.samples` is how many samples (at the stream's rate) a decoder outputs for that packet: the
sum over a stream is the decoded duration. For wav, flac and opus that equals the samples sent
(Ogg Opus trims the encoder delay and the last frame's padding through its granule positions). MP3
and ADTS AAC have no such trimming in a raw stream: they decode to the samples sent plus the
encoder delay (mp3 1105, aac 1024 samples) plus the padding of the last frame.
"""

from __future__ import annotations

import os
import struct
import zlib
from dataclasses import dataclass

import av
import numpy as np

from voxws.config import FORMATS, SAMPLE_RATES

__all__ = [
    "COMPRESSED",
    "HTTP_FORMATS",
    "OPENAI_FORMATS",
    "CodecError",
    "Packet",
    "bitrate_range",
    "check",
    "default_bitrate",
    "default_rate",
    "open_encoder",
    "rates_for",
]

PCM_FORMATS = ("pcm_s16le", "pcm_f32le", "pcm_mulaw")
# The HTTP endpoint also offers aac and flac (OpenAI's response formats); the WebSocket offers FORMATS.
HTTP_FORMATS = (*FORMATS, "aac", "flac")
COMPRESSED = ("mp3", "opus", "aac", "flac")  # wav is PCM with a header: audio.py writes it
# OpenAI `response_format` -> (our format, sample rate). OpenAI's audio is 24 kHz; `pcm` must be 24 kHz
# s16le, or every OpenAI client plays it too fast.
OPENAI_FORMATS = {
    "mp3": ("mp3", 24000), "opus": ("opus", 24000), "aac": ("aac", 24000), "flac": ("flac", 24000),
    "wav": ("wav", 24000), "pcm": ("pcm_s16le", 24000),
}

OPUS_RATES = (8000, 12000, 16000, 24000, 48000)  # what libopus codes natively
MPEG_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)  # MPEG-1/2/2.5 (LAME); AAC too
_RATES = {"opus": OPUS_RATES, "mp3": MPEG_RATES, "aac": MPEG_RATES}

# Defaults for speech, by rate: Opus is transparent-ish for speech at 32-48 kb/s; MPEG-1 layer 3
# (>= 32 kHz) needs ~96 kb/s mono, MPEG-2 (16-24 kHz) 64, MPEG-2.5 32.
_OPUS_DEFAULT = {8000: 16000, 12000: 20000, 16000: 24000, 24000: 32000, 48000: 48000}


class CodecError(ValueError):
    """A format, rate or bitrate the encoders do not take. `option` names the field
    ("format", "sample_rate" or "bitrate") so the protocol layer can pick its error code
    (`unsupported_format` for the first two, `bad_option` for bitrate)."""

    def __init__(self, option: str, message: str):
        self.option = option
        super().__init__(message)


@dataclass(frozen=True, slots=True)
class Packet:
    """Encoded bytes that end on a frame/page boundary; `samples`: how many samples at the stream's
    rate they decode to (0 for a header)."""

    data: bytes
    samples: int


def rates_for(fmt: str) -> tuple[int, ...]:
    """The sample rates `fmt` can be encoded at (the one place that says so)."""
    if fmt not in HTTP_FORMATS:
        raise CodecError("format", f"format={fmt!r}: must be one of {', '.join(HTTP_FORMATS)}")
    return _RATES.get(fmt, SAMPLE_RATES)


def default_rate(fmt: str, native: int) -> int:
    """The rate to use when the client names none: the engine's own when `fmt` allows it, otherwise
    the nearest allowed rate at or above it (44.1 kHz Opus -> 48 kHz), else the highest."""
    rates = rates_for(fmt)
    if native in rates:
        return native
    above = [r for r in rates if r >= native]
    return min(above) if above else max(rates)


def bitrate_range(fmt: str, rate: int) -> tuple[int, int] | None:
    """(lowest, highest) bits per second `fmt` takes at `rate`, or None when it has no bitrate."""
    if fmt == "opus":
        return 6000, 256000
    if fmt == "mp3":
        return (32000, 320000) if rate >= 32000 else (8000, 160000)  # MPEG-1 / MPEG-2 and 2.5 tables
    if fmt == "aac":
        return 16000, min(256000, 6 * rate)  # AAC-LC mono carries at most 6144 bits per 1024 samples
    return None


def default_bitrate(fmt: str, rate: int) -> int | None:
    if fmt == "opus":
        return _OPUS_DEFAULT.get(rate, 32000)
    if fmt == "mp3":
        return 96000 if rate >= 32000 else 64000 if rate >= 16000 else 32000
    if fmt == "aac":
        return min(64000, 6 * rate) if rate >= 16000 else 24000
    return None


def check(fmt: str, rate: int, bitrate: int | None = None) -> int | None:
    """Validate a client's choice; returns the bitrate to encode with (None for PCM, wav, flac).
    Raises CodecError naming the offending option."""
    rates = rates_for(fmt)
    if isinstance(rate, bool) or not isinstance(rate, int) or rate not in rates:
        raise CodecError("sample_rate", f"sample_rate={rate!r}: {fmt} must be one of {', '.join(map(str, rates))}")
    span = bitrate_range(fmt, rate)
    if bitrate is None:
        return default_bitrate(fmt, rate)
    if span is None:
        raise CodecError("bitrate", f"bitrate: {fmt} has no bitrate (it applies to mp3, opus and aac)")
    if isinstance(bitrate, bool) or not isinstance(bitrate, int) or not span[0] <= bitrate <= span[1]:
        raise CodecError("bitrate", f"bitrate={bitrate!r}: {fmt} at {rate} Hz takes {span[0]} to {span[1]} b/s")
    return bitrate


# --- Ogg framing (RFC 3533) --------------------------------------------------------------------

# Ogg's CRC-32 is the unreflected polynomial 0x04C11DB7 with init 0 and no final xor. zlib has the
# reflected one in C: bit-reverse every byte in, start the register at 0 (zlib inverts its argument),
# undo zlib's final inversion and bit-reverse the 32-bit result. ~100x a pure-Python table loop.
_REV8 = bytes(int(f"{i:08b}"[::-1], 2) for i in range(256))


def ogg_crc(data: bytes) -> int:
    r = zlib.crc32(data.translate(_REV8), 0xFFFFFFFF) ^ 0xFFFFFFFF
    return int(f"{r:032b}"[::-1], 2)


def ogg_page(packets: list[bytes], granule: int, serial: int, seq: int, flags: int = 0) -> bytes:
    lacing = bytearray()
    for p in packets:
        lacing += b"\xff" * (len(p) // 255) + bytes((len(p) % 255,))
    if len(lacing) > 255:
        raise ValueError("Ogg page over 255 segments")
    head = struct.pack("<4sBBqIIIB", b"OggS", 0, flags, granule, serial, seq, 0, len(lacing)) + lacing
    page = bytearray(head + b"".join(packets))
    page[22:26] = struct.pack("<I", ogg_crc(bytes(page)))
    return bytes(page)


# --- encoders -----------------------------------------------------------------------------------

class _AvEncoder:
    """One PyAV encoder context fed float32 mono at `rate`; PyAV re-frames input to frame_size and
    holds the remainder until the next chunk or the flush."""

    codec = ""
    sample_format = "flt"

    def __init__(self, rate: int, bitrate: int | None, options: dict[str, str] | None = None):
        self.rate = rate
        ctx = av.CodecContext.create(self.codec, "w")
        ctx.sample_rate = rate
        ctx.layout = "mono"
        ctx.format = self.sample_format
        if bitrate:
            ctx.bit_rate = bitrate
        if options:
            ctx.options = options
        ctx.open()
        self.ctx = ctx
        self.header_sent = False
        self.done = False
        self.fed = 0  # samples given to the codec

    def _frame(self, x: np.ndarray) -> av.AudioFrame:
        if self.sample_format.startswith("s16"):
            y = np.clip(x * 32767.0, -32767.0, 32767.0)
            data = np.rint(y).astype(np.int16)
        else:
            data = np.clip(x, -1.0, 1.0).astype(np.float32, copy=False)
        frame = av.AudioFrame.from_ndarray(data.reshape(1, -1), format=self.sample_format, layout="mono")
        frame.sample_rate = self.rate
        return frame

    def _run(self, x: np.ndarray | None) -> list[av.Packet]:
        out = self.ctx.encode(self._frame(x) if x is not None else None)
        return [p for p in out if p.size]  # FLAC's flush adds an empty packet carrying new extradata

    def header(self) -> bytes:
        return b""

    def wrap(self, packets: list[av.Packet], last: bool) -> list[Packet]:
        raise NotImplementedError

    def encode(self, x: np.ndarray) -> list[Packet]:
        if not len(x):
            return []
        self.fed += len(x)
        return self._with_header(self.wrap(self._run(x), last=False), last=False)

    def flush(self) -> list[Packet]:
        if self.done:
            return []
        self.done = True
        return self._with_header(self.wrap(self._run(None), last=True), last=True)

    def _with_header(self, packets: list[Packet], last: bool) -> list[Packet]:
        # The header rides with the first audio, so that every piece a client gets decodes to
        # something; a stream that ends without audio is the header alone.
        if self.header_sent or not (packets or last):
            return packets
        self.header_sent = True
        head = self.header()
        if not head:
            return packets
        if packets:
            return [Packet(head + packets[0].data, packets[0].samples), *packets[1:]]
        return [Packet(head, 0)]


class Mp3Encoder(_AvEncoder):
    """MPEG audio layer 3 frames (LAME, CBR). The bit reservoir is off so that every frame carries
    all its own data: a client decoding each WebSocket frame alone gets no glitch at the seam."""

    codec = "libmp3lame"
    sample_format = "s16p"

    def __init__(self, rate: int, bitrate: int | None):
        # LAME -q 5: ~30% less CPU than its default -q 3, no audible difference for speech.
        super().__init__(rate, bitrate, {"reservoir": "0", "compression_level": "5"})
        self.frame_samples = self.ctx.frame_size  # 1152 (MPEG-1) or 576 (MPEG-2/2.5)

    def wrap(self, packets: list[av.Packet], last: bool) -> list[Packet]:
        if not packets:
            return []
        return [Packet(b"".join(bytes(p) for p in packets), self.frame_samples * len(packets))]


class AacEncoder(_AvEncoder):
    """AAC-LC in ADTS frames (FFmpeg's native encoder; each frame has its 7-byte header)."""

    codec = "aac"
    sample_format = "fltp"
    _FREQ_INDEX = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350)

    def __init__(self, rate: int, bitrate: int | None):
        # The "fast" coder costs 40% of the default "twoloop" search (bench/codec_cost.py); HTTP only.
        super().__init__(rate, bitrate, {"aac_coder": "fast"})

    def _adts(self, n: int) -> bytes:
        length = n + 7
        sf = self._FREQ_INDEX.index(self.rate)
        # syncword, MPEG-4, layer 0, no CRC | LC (profile 1), rate index, mono | frame length, full buffer
        return bytes((0xFF, 0xF1, (1 << 6) | (sf << 2), (1 << 6) | (length >> 11), (length >> 3) & 0xFF,
                      ((length & 7) << 5) | 0x1F, 0xFC))

    def wrap(self, packets: list[av.Packet], last: bool) -> list[Packet]:
        if not packets:
            return []
        data = b"".join(self._adts(p.size) + bytes(p) for p in packets)
        return [Packet(data, 1024 * len(packets))]  # a decoder outputs 1024 samples per AAC frame


class FlacEncoder(_AvEncoder):
    """A streaming FLAC stream: "fLaC", STREAMINFO with total samples 0 ("unknown") and no MD5,
    then frames (FFmpeg's encoder, fixed block size; the last block may be shorter)."""

    codec = "flac"
    sample_format = "s16"

    def __init__(self, rate: int, bitrate: int | None):
        super().__init__(rate, None, {"compression_level": "5"})

    def header(self) -> bytes:
        info = bytes(self.ctx.extradata)[:34]
        return b"fLaC" + bytes((0x80, 0, 0, len(info))) + info  # last metadata block, type 0 STREAMINFO

    def wrap(self, packets: list[av.Packet], last: bool) -> list[Packet]:
        if not packets:
            return []
        return [Packet(b"".join(bytes(p) for p in packets), sum(p.duration for p in packets))]


class OggOpusEncoder(_AvEncoder):
    """Ogg Opus (RFC 7845): OpusHead and OpusTags pages first, then one page (rarely more) per chunk,
    so each piece is whole pages; the last page carries EOS and the granule that trims the padding."""

    codec = "libopus"
    sample_format = "flt"

    def __init__(self, rate: int, bitrate: int | None):
        # Complexity 5 costs a third of the default 10 (bench/codec_cost.py; 128 streams must fit on a
        # server) for a small loss at speech bitrates. Below 7 libopus skips its signal analysis and
        # unconstrained VBR overshoots the target by up to 1.7x: constrained VBR keeps the budget.
        # Frames are libopus's default 20 ms.
        super().__init__(rate, bitrate, {"application": "audio", "compression_level": "5", "vbr": "constrained"})
        self.serial = int.from_bytes(os.urandom(4), "little")
        self.seq = 0
        self.head = bytes(self.ctx.extradata)  # FFmpeg's OpusHead: pre-skip in 48 kHz samples
        self.scale = 48000 // rate  # granule positions count 48 kHz samples
        self.pre_skip = int.from_bytes(self.head[10:12], "little") // self.scale
        self.total = 0  # samples at `rate` of the packets so far, pre-skip included
        self.decoded = 0  # what a decoder has output so far (after pre-skip)

    def header(self) -> bytes:
        vendor = b"voxws (libopus via PyAV)"
        tags = b"OpusTags" + struct.pack("<I", len(vendor)) + vendor + struct.pack("<I", 0)
        return self._page([self.head], 0, 0x02) + self._page([tags], 0)

    def _page(self, packets: list[bytes], granule: int, flags: int = 0) -> bytes:
        page = ogg_page(packets, granule, self.serial, self.seq, flags)
        self.seq += 1
        return page

    def flush(self) -> list[Packet]:
        if not self.fed and not self.done:
            # Ogg Opus needs one audio packet to be a stream FFmpeg opens: one sample of silence,
            # which the final granule (pre-skip + 0) trims away.
            self.wrap(self._run(np.zeros(1, np.float32)), last=False)
        return super().flush()

    def wrap(self, packets: list[av.Packet], last: bool) -> list[Packet]:
        if not packets:
            return []
        data = bytearray()
        group: list[bytes] = []
        segments = 0
        for i, p in enumerate(packets):
            # FFmpeg reports each packet's duration; the last one's is trimmed to the real end, so
            # the running total is exactly the granule position (times 48 kHz / rate).
            self.total = min(self.total + p.duration, self.pre_skip + self.fed)
            b = bytes(p)
            group.append(b)
            segments += len(b) // 255 + 1
            final = i == len(packets) - 1
            if final or segments + len(bytes(packets[i + 1])) // 255 + 1 > 255:
                data += self._page(group, self.total * self.scale, 0x04 if (last and final) else 0)
                group, segments = [], 0
        decoded = max(0, self.total - self.pre_skip)
        n, self.decoded = decoded - self.decoded, decoded
        return [Packet(bytes(data), n)]


_ENCODERS: dict[str, type[_AvEncoder]] = {
    "mp3": Mp3Encoder, "opus": OggOpusEncoder, "aac": AacEncoder, "flac": FlacEncoder,
}


def open_encoder(fmt: str, rate: int, bitrate: int | None = None) -> _AvEncoder:
    """A compressed stream encoder for one context. `encode(x)` takes float32 mono at `rate` (any
    length, including 0) and returns whole-frame Packets; `flush()` ends the stream."""
    if fmt not in _ENCODERS:
        raise CodecError("format", f"format={fmt!r}: the compressed formats are {', '.join(_ENCODERS)}")
    return _ENCODERS[fmt](rate, check(fmt, rate, bitrate))
