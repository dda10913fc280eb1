"""CPU time to encode one second of engine audio, per format (voxws.audio.Encoder, resampler included).

Engine output is float32 mono at 44.1 kHz in chunks of 7056 samples (one step, 160 ms); each format is
encoded at its default rate (44.1 kHz where allowed; Opus 48 kHz) with its default bitrate, plus the
24 kHz variants OpenAI clients ask for. The input is speech-like (harmonics on a moving pitch with
noise bursts and pauses), not a pure tone, so the codecs do realistic work.

`--streams N` interleaves N encoders chunk by chunk, as N contexts on one server would, and prints
what N streams of real-time audio cost in cores; `--threads` also runs them on a 2-thread pool to
show whether encoding scales off the event loop (PyAV and soxr release the GIL).

    .venv/bin/python bench/codec_cost.py [--seconds 20] [--streams 128] [--threads]
"""

from __future__ import annotations

import argparse
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from voxws.audio import Encoder
from voxws.codecs import default_rate

SRC = 44100
CHUNK = 7056
CASES = [("pcm_s16le", None), ("pcm_f32le", None), ("pcm_mulaw", None), ("wav", None), ("mp3", None),
         ("opus", None), ("aac", None), ("flac", None), ("pcm_s16le", 24000), ("mp3", 24000), ("opus", 24000),
         ("aac", 24000), ("flac", 24000)]


def speechlike(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SRC)) / SRC
    f0 = 140 + 40 * np.sin(2 * np.pi * 0.7 * t) + 15 * np.sin(2 * np.pi * 5.3 * t)
    phase = 2 * np.pi * np.cumsum(f0) / SRC
    voiced = sum(np.sin(k * phase) / k for k in range(1, 25))
    envelope = np.clip(np.sin(2 * np.pi * 2.1 * t), 0, None) ** 0.5  # syllables, with pauses
    noise = rng.normal(0, 0.3, len(t)) * (np.sin(2 * np.pi * 1.3 * t) > 0.8)  # fricatives
    x = 0.25 * envelope * voiced + 0.1 * noise
    return (x / np.abs(x).max() * 0.7).astype(np.float32)


def chunks(x: np.ndarray) -> list[np.ndarray]:
    return [x[i:i + CHUNK] for i in range(0, len(x), CHUNK)]


def one_stream(fmt: str, rate: int, parts: list[np.ndarray]) -> tuple[float, list[float], int]:
    enc = Encoder(fmt, SRC, rate)
    per_chunk, size = [], 0
    c0 = time.process_time()
    for part in parts:
        t = time.thread_time()  # CPU, not wall: the dev VM's 2 cores are shared
        size += sum(len(p.data) for p in enc.packets(part))
        per_chunk.append(time.thread_time() - t)
    size += sum(len(p.data) for p in enc.flush_packets())
    return time.process_time() - c0, per_chunk, size


def many_streams(fmt: str, rate: int, parts: list[np.ndarray], n: int,
                 pool: ThreadPoolExecutor | None) -> tuple[float, float]:
    """(wall, CPU) seconds to encode n interleaved streams of `parts` (one chunk of every stream per step)."""
    encs = [Encoder(fmt, SRC, rate) for _ in range(n)]
    t, c = time.perf_counter(), time.process_time()
    for part in parts:
        if pool is None:
            for e in encs:
                e.packets(part)
        else:
            list(pool.map(lambda e, p=part: e.packets(p), encs))
    for e in encs:
        e.flush_packets()
    return time.perf_counter() - t, time.process_time() - c


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--streams", type=int, default=128)
    ap.add_argument("--threads", action="store_true", help="also encode the streams on a 2-thread pool")
    args = ap.parse_args()
    x = speechlike(args.seconds)
    parts = chunks(x)
    seconds = len(x) / SRC
    print(f"{seconds:.0f} s of speech-like audio at 44.1 kHz in {len(parts)} chunks of {CHUNK}")
    print(f"{'format':>10} {'rate':>6} {'kb/s':>6} {'CPU ms/s':>9} {'chunk p50 ms':>12} {'chunk p99 ms':>12} "
          f"{'128 streams: cores':>19}")
    for fmt, rate in CASES:
        rate = rate or default_rate(fmt, SRC)
        one_stream(fmt, rate, parts[:4])  # warm-up (imports, codec tables)
        cpu, per_chunk, size = one_stream(fmt, rate, parts)
        ms_per_s = 1000 * cpu / seconds
        print(f"{fmt:>10} {rate:>6} {8 * size / seconds / 1000:>6.0f} {ms_per_s:>9.2f} "
              f"{1000 * statistics.median(per_chunk):>12.3f} {1000 * np.percentile(per_chunk, 99):>12.3f} "
              f"{args.streams * ms_per_s / 1000:>19.3f}")
    n, short = args.streams, parts[: max(1, int(5 / 0.16))]  # 5 s of audio per stream
    for fmt in ("opus", "mp3"):
        rate = default_rate(fmt, SRC)
        wall, cpu = many_streams(fmt, rate, short, n, None)
        audio = n * len(short) * CHUNK / SRC
        line = (f"{n} interleaved {fmt} streams, one thread: {1000 * cpu / audio:.2f} ms CPU "
                f"({1000 * wall / audio:.2f} ms wall) per audio second")
        if args.threads:
            with ThreadPoolExecutor(2) as pool:
                tw, _ = many_streams(fmt, rate, short, n, pool)
            line += f"; 2 threads: {1000 * tw / audio:.2f} ms wall ({wall / tw:.2f}x)"
        print(line)


if __name__ == "__main__":
    main()
