"""How many decoded samples one binary frame of a context holds, per `format`.

A client counts durations from samples, never from bytes. Raw PCM is exact arithmetic;
`wav` is PCM after a RIFF header in the first frame; `mp3` and `opus` frames end on frame
or page boundaries (PROTOCOL.md "Formats"), so their headers tell the count without decoding:
MPEG frames x samples per frame, Ogg granule positions less the Opus pre-skip. A decoder that
also trims the encoder's delay and end padding (gapless playback) outputs up to a couple of
codec frames fewer than that.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

BYTES_PER_SAMPLE = {"pcm_s16le": 2, "pcm_f32le": 4, "pcm_mulaw": 1}

# MPEG audio: bitrate (kbit/s) by version group and layer III, sample rate by version.
_MP3_BITRATES = {
    1: (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
    2: (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
}
_MP3_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}


@dataclass
class SampleCounter:
    """Counts samples frame by frame for one context (`wav` and `opus` need state across frames)."""

    format: str
    sample_rate: int
    _wav_header_left: int | None = None
    _opus_granule: int = 0
    _opus_preskip: int | None = None

    def count(self, data: bytes) -> int | None:
        """Samples at `sample_rate` in this frame; None for a format this module does not know."""
        width = BYTES_PER_SAMPLE.get(self.format)
        if width is not None:
            return len(data) // width
        if self.format == "wav":
            return self._wav(data)
        if self.format == "mp3":
            return _mp3_samples(data)
        if self.format == "opus":
            return self._opus(data)
        return None

    def _wav(self, data: bytes) -> int:
        if self._wav_header_left is None:
            self._wav_header_left = _wav_header_size(data)
        skip = min(self._wav_header_left, len(data))
        self._wav_header_left -= skip
        return (len(data) - skip) // 2

    def _opus(self, data: bytes) -> int:
        # Ogg pages: the granule position is the 48 kHz sample count at the end of the page's last packet.
        total = 0
        pos = 0
        while pos + 27 <= len(data) and data[pos:pos + 4] == b"OggS":
            granule = struct.unpack_from("<q", data, pos + 6)[0]
            nseg = data[pos + 26]
            body = pos + 27 + nseg
            size = sum(data[pos + 27:body])
            if self._opus_preskip is None and data[body:body + 8] == b"OpusHead" and body + 12 <= len(data):
                self._opus_preskip = struct.unpack_from("<H", data, body + 10)[0]
            elif granule >= 0 and granule > self._opus_granule:
                start = max(self._opus_granule, self._opus_preskip or 0)
                if granule > start:
                    total += granule - start
                self._opus_granule = granule
            pos = body + size
        return round(total * self.sample_rate / 48000)


def _wav_header_size(data: bytes) -> int:
    """Bytes before the PCM of a streamed RIFF file: up to and including the `data` chunk header."""
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return 0
    pos = 12
    while pos + 8 <= len(data):
        cid, size = data[pos:pos + 4], struct.unpack_from("<I", data, pos + 4)[0]
        if cid == b"data":
            return pos + 8
        pos += 8 + size + (size & 1)
    return 44


def _mp3_samples(data: bytes) -> int:
    total = 0
    pos = 0
    if data[:3] == b"ID3" and len(data) >= 10:  # an ID3v2 tag before the first frame: skip it whole
        pos = 10 + ((data[6] & 0x7F) << 21 | (data[7] & 0x7F) << 14 | (data[8] & 0x7F) << 7 | (data[9] & 0x7F))
    while pos + 4 <= len(data):
        b1, b2 = data[pos + 1], data[pos + 2]
        if data[pos] != 0xFF or (b1 & 0xE0) != 0xE0:
            pos += 1
            continue
        version = (b1 >> 3) & 3  # 3: MPEG 1, 2: MPEG 2, 0: MPEG 2.5
        layer = (b1 >> 1) & 3  # 1: layer III
        bidx, ridx = b2 >> 4, (b2 >> 2) & 3
        if version == 1 or layer != 1 or bidx in (0, 15) or ridx == 3:
            pos += 1
            continue
        rate = _MP3_RATES[version][ridx]
        kbps = _MP3_BITRATES[1 if version == 3 else 2][bidx]
        per_frame = 1152 if version == 3 else 576
        length = per_frame // 8 * kbps * 1000 // rate + ((b2 >> 1) & 1)
        head = data[pos + 4:pos + 40]
        if b"Xing" not in head and b"Info" not in head:  # a Xing/Info frame is metadata: decoders play nothing
            total += per_frame
        pos += max(length, 4)
    return total
