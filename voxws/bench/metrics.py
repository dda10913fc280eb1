"""Metric computations on recorded stream timings: pure functions, no I/O.

Definitions follow the load-test report (shared/DESIGN.md):
- TTFB = request sent to first audio frame received.
- RTF = generation time / audio time, generation time = request sent to `done`.
- throughput = total audio seconds / wall seconds, wall = first request sent to last completion.
The client records only perf_counter() stamps and frame sizes while streaming; everything
here runs after the run, so that computing metrics never slows the load generator.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

BYTES_PER_SAMPLE = {"pcm_s16le": 2, "pcm_f32le": 4, "pcm_mulaw": 1}
STATS = ("min", "mean", "p50", "p90", "p99", "max")


def percentile(values: Sequence[float], q: float) -> float:
    """q-th percentile (0-100), linear interpolation between closest ranks (numpy's default).

    NaN for no values, so that an empty group shows as missing rather than as zero.
    """
    if not 0 <= q <= 100:
        raise ValueError(f"percentile q={q}: must be from 0 to 100")
    xs = sorted(values)
    if not xs:
        return math.nan
    pos = (len(xs) - 1) * q / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def summary(values: Iterable[float]) -> dict[str, float]:
    """n, min, mean, p50, p90, p99, max of the finite values."""
    xs = sorted(v for v in values if v is not None and math.isfinite(v))
    if not xs:
        return {"n": 0, **{k: math.nan for k in STATS}}
    return {
        "n": len(xs),
        "min": xs[0],
        "mean": sum(xs) / len(xs),
        "p50": percentile(xs, 50),
        "p90": percentile(xs, 90),
        "p99": percentile(xs, 99),
        "max": xs[-1],
    }


def throughput(audio_s: float, wall_s: float) -> float:
    """Audio seconds produced per wall second (the report's "x real time")."""
    return audio_s / wall_s if wall_s > 0 else math.nan


def rtf(generation_s: float, audio_s: float) -> float:
    """Real-time factor: generation time / audio time (below 1 = faster than real time)."""
    return generation_s / audio_s if audio_s > 0 else math.nan


def bytes_per_second(fmt: str, sample_rate: int) -> int:
    """Bytes of one second of mono audio in a protocol format."""
    try:
        return BYTES_PER_SAMPLE[fmt] * sample_rate
    except KeyError:
        raise ValueError(f"format={fmt!r}: must be one of {', '.join(BYTES_PER_SAMPLE)}") from None


@dataclass(frozen=True)
class Underrun:
    at_s: float  # wall time the player ran dry, relative to the first frame's arrival
    length_s: float  # how long it stayed dry, until the next frame arrived


@dataclass(frozen=True)
class Playback:
    start_s: float  # wall time playback started (relative to first arrival) = buffer
    end_s: float  # wall time the last sample finished playing (relative to first arrival)
    underruns: tuple[Underrun, ...] = field(default_factory=tuple)

    @property
    def stall_s(self) -> float:
        return sum(u.length_s for u in self.underruns)

    @property
    def max_underrun_s(self) -> float:
        return max((u.length_s for u in self.underruns), default=0.0)


def simulate_playback(arrivals: Sequence[float], durations: Sequence[float], buffer_s: float) -> Playback:
    """Play frames in real time as they arrive, as a streaming client would.

    Playback starts `buffer_s` after the first frame arrives. Frames play back to back;
    whenever the next frame has not arrived when the previous one finishes, the player
    runs dry: that is one underrun, lasting until the frame arrives, and playback then
    resumes at once with that frame (no re-buffering, so every stall is counted as heard).
    """
    if len(arrivals) != len(durations):
        raise ValueError(
            f"arrivals ({len(arrivals)}) and durations ({len(durations)}): must have equal length"
        )
    if buffer_s < 0:
        raise ValueError(f"buffer_s={buffer_s}: must be >= 0")
    if not arrivals:
        return Playback(start_s=math.nan, end_s=math.nan)
    t0 = arrivals[0]
    cursor = buffer_s  # the moment the player needs the next frame, relative to t0
    underruns: list[Underrun] = []
    for a, d in zip(arrivals, durations, strict=True):
        rel = a - t0
        if rel > cursor:
            underruns.append(Underrun(at_s=cursor, length_s=rel - cursor))
            cursor = rel
        cursor += d
    return Playback(start_s=buffer_s, end_s=cursor, underruns=tuple(underruns))


def arrival_quartiles(records: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    """TTFB of the first and last quarter of requests by first-frame arrival order.

    The report's overload check: past capacity, the last quarter to get audio waits
    visibly longer for it. Records need `first_frame_s` (common clock) and `ttfb_ms`.
    """
    got = [r for r in records if r.get("first_frame_s") is not None and r.get("ttfb_ms") is not None]
    got.sort(key=lambda r: r["first_frame_s"])
    if not got:
        return {"first": summary([]), "last": summary([])}
    q = max(1, len(got) // 4)
    return {
        "first": summary(r["ttfb_ms"] for r in got[:q]),
        "last": summary(r["ttfb_ms"] for r in got[-q:]),
    }


def nan_to_none(x: Any) -> Any:
    """JSON has no NaN: map it (recursively) to null."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: nan_to_none(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [nan_to_none(v) for v in x]
    return x


def wall_s(records: Sequence[Mapping[str, Any]]) -> float:
    """First request sent to last completion, summed over phases (`phase` field), so that the
    pauses between the bursts of one level (reconnecting) do not count as serving time."""
    phases: dict[Any, tuple[float, float]] = {}
    for r in records:
        if r.get("sent_s") is None or not r["ok"] or r.get("end_s") is None:
            continue
        k = r.get("phase", 0)
        lo, hi = phases.get(k, (math.inf, -math.inf))
        phases[k] = (min(lo, r["sent_s"]), max(hi, r["end_s"]))
    return sum(hi - lo for lo, hi in phases.values()) if phases else math.nan


def aggregate(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Aggregates over request records (see request_record below for the fields).

    `stopped` requests (cut by the run's duration limit or ctrl-C) are neither successes
    nor failures: success_rate counts only requests that finished one way or the other.
    """
    ok = [r for r in records if r["ok"]]
    stopped = [r for r in records if r.get("error") == "stopped"]
    failed = [r for r in records if not r["ok"] and r.get("error") != "stopped"]
    errors: dict[str, int] = {}
    for r in failed:
        errors[r["error"]] = errors.get(r["error"], 0) + 1
    finished = len(ok) + len(failed)
    wall = wall_s(records)
    audio = sum(r["audio_s"] for r in ok)
    frames = sum(r["frames"] for r in ok)
    nbytes = sum(r["bytes"] for r in ok)
    under = [r for r in ok if r["underruns"] > 0]
    return {
        "requests": len(records),
        "ok": len(ok),
        "failed": len(failed),
        "stopped": len(stopped),
        "success_rate": len(ok) / finished if finished else math.nan,
        "errors": errors,
        "wall_s": wall,
        "audio_s": audio,
        "throughput_x": throughput(audio, wall),
        "frames_per_s": frames / wall if wall and wall > 0 else math.nan,
        "mbytes_per_s": nbytes / 1e6 / wall if wall and wall > 0 else math.nan,
        "ttfb_ms": summary(r["ttfb_ms"] for r in ok),
        "rtf": summary(r["rtf"] for r in ok),
        "generation_s": summary(r["generation_s"] for r in ok),
        "queued": sum(1 for r in records if r.get("queued")),
        "underrun_streams": len(under),
        "underrun_share": len(under) / len(ok) if ok else math.nan,
        "underruns": sum(r["underruns"] for r in ok),
        "stall_ms": summary(r["stall_ms"] for r in under),
        "arrival_quartiles_ttfb_ms": arrival_quartiles(ok),
    }


def _ms(a: float | None, b: float | None) -> float | None:
    return (b - a) * 1000 if a is not None and b is not None else None


def _rel(t: float | None, t0: float) -> float | None:
    return t - t0 if t is not None else None


def request_record(res: Any, t0: float, buffer_s: float, keep_frames: bool = True) -> dict[str, Any]:
    """One request's record for the JSON file, from a client.StreamResult.

    Times ending in `_s` are seconds since the run's t0 (one clock for all client processes);
    `_ms` figures are durations. `frames_ms` are arrival offsets from the speak being sent.
    """
    ok = res.error is None and res.done is not None
    fmt = res.format or "pcm_s16le"
    bps = bytes_per_second(fmt, res.sample_rate) if res.sample_rate else 0
    durations = [n / bps for n in res.frame_n] if bps else [0.0] * len(res.frame_n)
    audio = sum(durations)
    gen = (res.t_done - res.t_sent) if res.t_done is not None and res.t_sent is not None else None
    play = simulate_playback(res.frame_t, durations, buffer_s)
    done = res.done or {}
    rec: dict[str, Any] = {
        "id": res.id,
        "level": res.level,
        "text_chars": res.text_chars,
        "ok": ok,
        "error": res.error,
        "error_message": res.error_message,
        "scheduled_s": _rel(res.scheduled, t0),
        "connect_ms": _ms(res.t_connect, res.t_ready),
        "sent_s": _rel(res.t_sent, t0),
        "first_frame_s": _rel(res.frame_t[0], t0) if res.frame_t else None,
        "end_s": _rel(res.t_done, t0),
        "queued": res.t_queued is not None,
        "queue_position": res.queue_position,
        "start_ms": _ms(res.t_sent, res.t_start),
        "ttfb_ms": _ms(res.t_sent, res.frame_t[0]) if res.frame_t else None,
        "generation_s": gen,
        "format": fmt,
        "sample_rate": res.sample_rate,
        "frames": len(res.frame_n),
        "bytes": sum(res.frame_n),
        "audio_s": audio,
        "rtf": rtf(gen, audio) if gen is not None else None,
        "server_ttfb_ms": done.get("ttfb_ms"),
        "server_audio_ms": done.get("audio_ms"),
        "underruns": len(play.underruns),
        "stall_ms": play.stall_s * 1000,
        "max_underrun_ms": play.max_underrun_s * 1000,
    }
    if keep_frames:
        ts = res.t_sent if res.t_sent is not None else t0
        rec["frames_ms"] = [round((t - ts) * 1000, 3) for t in res.frame_t]
        rec["frames_bytes"] = list(res.frame_n)
    return rec
