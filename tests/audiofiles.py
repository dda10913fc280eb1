"""Test recordings in every upload format, made with PyAV's own encoders (the same FFmpeg the server decodes
with), so no fixture files are checked in."""

from __future__ import annotations

import io
from fractions import Fraction

import av
import numpy as np

# format -> (container, codec, encoder sample rate)
FORMATS: dict[str, tuple[str, str, int | None]] = {
    "wav": ("wav", "pcm_s16le", None),
    "flac": ("flac", "flac", None),
    "mp3": ("mp3", "libmp3lame", None),
    "ogg": ("ogg", "libopus", 48000),
    "webm": ("webm", "libopus", 48000),
    "m4a": ("ipod", "aac", None),
}


def speechlike(seconds: float, rate: int = 44100, channels: int = 1, lead_silence_s: float = 0.0,
               tail_silence_s: float = 0.0, seed: int = 0) -> np.ndarray:
    """(channels, n) float32: a voiced tone with syllable-rate amplitude modulation, silence around it."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    env = 0.55 + 0.45 * np.sin(2 * np.pi * 4 * t)
    x = 0.3 * env * (np.sin(2 * np.pi * 180 * t) + 0.3 * np.sin(2 * np.pi * 360 * t))
    x = x + 0.003 * rng.standard_normal(len(t))
    x = np.concatenate([np.zeros(int(lead_silence_s * rate)), x, np.zeros(int(tail_silence_s * rate))])
    out = np.stack([x * (1 - 0.2 * c) for c in range(channels)]).astype(np.float32)
    return out


def encode(fmt: str, pcm: np.ndarray, rate: int) -> bytes:
    """pcm (channels, n) float32 at rate -> the bytes of one file of fmt."""
    container_fmt, codec, enc_rate = FORMATS[fmt]
    channels = pcm.shape[0]
    layout = "mono" if channels == 1 else "stereo"
    buf = io.BytesIO()
    with av.open(buf, mode="w", format=container_fmt) as out:
        stream = out.add_stream(codec, rate=enc_rate or rate, layout=layout)
        resampler = av.AudioResampler(format=stream.codec_context.format or "fltp", layout=layout,
                                      rate=enc_rate or rate)
        step = 1024
        for i in range(0, pcm.shape[1], step):
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(pcm[:, i:i + step]), format="fltp",
                                               layout=layout)
            frame.sample_rate = rate
            frame.pts = i
            frame.time_base = Fraction(1, rate)
            for f in resampler.resample(frame):
                out.mux(stream.encode(f))
        for f in resampler.resample(None):
            out.mux(stream.encode(f))
        out.mux(stream.encode(None))
    return buf.getvalue()
