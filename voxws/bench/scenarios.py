"""The load-test report's scenarios, built from bounded phases (runner.py).

Each scenario adds phases to a Bench, which enforces the run's limits (requests and
duration over the whole run), turns raw timings into records and aggregates them by
level (concurrency, text length label or arrival rate).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from voxws.bench import metrics
from voxws.bench.client import Target
from voxws.bench.runner import Job, Phase, PhaseResult, run_phase

# The report's TTFB sentence had 13 characters; its length check-points were 8, 68 and 313.
DEFAULT_TEXT = "今天天气很好，我们去散步。"
_PARAGRAPH = (
    "语音合成技术正在改变人们获取信息的方式。无论是在开车、做饭还是散步的时候，"
    "我们都可以通过耳朵来收听新闻、阅读书籍和学习各种各样的新知识。一个好的语音合成系统不仅要声音自然，"
    "还要响应迅速，让用户在说完话之后几乎立刻就能听到回答。为了做到这一点，服务器需要把生成的音频"
    "一块一块地实时发送给客户端，而不是等整段音频全部生成之后再发送。这样，第一个音频块到达的时间"
    "就决定了用户感受到的延迟。与此同时，服务器还必须同时为很多用户服务，在高并发的情况下保持稳定，"
    "既不能让任何一个用户的声音出现停顿，也不能因为请求太多而崩溃。负载测试正是为了回答这些问题："
    "一台机器能同时服务多少个用户，每个用户要等多久才能听到第一个声音，超出容量时会怎样。"
)


def text_of_length(n: int) -> str:
    """A natural Chinese text of about n characters, cut at a sentence or clause end."""
    src = _PARAGRAPH
    while len(src) < n:
        src += _PARAGRAPH
    cut = src[:n]
    for i in range(len(cut) - 1, max(0, len(cut) - 40), -1):
        if cut[i] in "。，：":
            return cut[: i + 1] if cut[i] != "，" else cut[:i] + "。"
    return cut[:-1] + "。"


DEFAULT_LENGTHS = {"short": "你好，欢迎光临。", "medium": text_of_length(68), "long": text_of_length(313)}


@dataclass(frozen=True)
class Limits:
    max_requests: int = 2000
    max_duration_s: float = 600.0

    def __post_init__(self) -> None:
        if self.max_requests < 1:
            raise ValueError(f"--max-requests={self.max_requests}: must be at least 1")
        if not self.max_duration_s > 0:
            raise ValueError(f"--max-duration={self.max_duration_s}: must be more than 0 seconds")


@dataclass
class Bench:
    """One run: the target, its limits, and everything measured so far."""

    target: Target
    limits: Limits
    scenario: str
    buffer_s: float = 0.2
    procs: int = 1
    keep_frames: bool = True
    progress: Callable[[int], None] | None = None
    on_total: Callable[[int], None] | None = None  # grow the progress bar's total
    config: dict[str, Any] = field(default_factory=dict)
    records: list[dict[str, Any]] = field(default_factory=list)
    verdicts: dict[str, Any] = field(default_factory=dict)
    ready: dict[str, Any] | None = None
    t0: float | None = None
    started: float = field(default_factory=time.perf_counter)
    interrupted: bool = False
    timed_out: bool = False
    request_limit_hit: bool = False
    not_started: int = 0
    client_cpu_s: float = 0.0
    client_wall_s: float = 0.0
    client_errors: list[str] = field(default_factory=list)
    _next_id: int = 0
    _phases: int = 0

    @property
    def stopped(self) -> bool:
        return self.interrupted or self.timed_out or self.request_limit_hit

    def jobs(self, n: int, text: str, level: Any, at: list[float] | None = None) -> list[Job]:
        out = [Job(self._next_id + i, text, level, None if at is None else at[i]) for i in range(n)]
        self._next_id += n
        return out

    def phase(self, lanes: list[list[Job]], fresh: bool = False) -> list[dict[str, Any]]:
        """Run one phase within what is left of the run's budget; return its records."""
        if self.stopped:
            return []
        left_s = self.limits.max_duration_s - (time.perf_counter() - self.started)
        left_n = self.limits.max_requests - len(self.records)
        if left_s <= 0 or left_n <= 0:
            self.timed_out |= left_s <= 0
            self.request_limit_hit |= left_n <= 0
            return []
        want = sum(len(lane) for lane in lanes)
        if want > left_n:  # keep the first left_n jobs, dealt across lanes as they would run
            self.request_limit_hit = True
            kept = sorted((j for lane in lanes for j in lane), key=lambda j: j.id)[:left_n]
            ids = {j.id for j in kept}
            lanes = [[j for j in lane if j.id in ids] for lane in lanes]
            lanes = [lane for lane in lanes if lane]
            want = left_n
        if self.on_total:
            self.on_total(want)
        res = run_phase(self.target, Phase(tuple(tuple(lane) for lane in lanes), fresh, left_s),
                        self.procs, self.progress)
        return self._absorb(res)

    def _absorb(self, res: PhaseResult) -> list[dict[str, Any]]:
        if self.t0 is None:
            self.t0 = res.t_go
        self.ready = self.ready or res.ready
        self.interrupted |= res.interrupted
        self.timed_out |= res.timed_out
        self.not_started += res.not_started
        self.client_cpu_s += res.client_cpu_s
        self.client_wall_s += res.wall_s * res.procs
        self.client_errors += res.errors
        recs = [metrics.request_record(r, self.t0, self.buffer_s, self.keep_frames)
                for r in sorted(res.results, key=lambda r: r.id)]
        for r in recs:
            r["phase"] = self._phases
        self._phases += 1
        self.records += recs
        return recs

    def levels(self) -> list[dict[str, Any]]:
        """Aggregates per level, in the order the levels were run."""
        order: list[Any] = []
        by: dict[Any, list[dict[str, Any]]] = {}
        for r in self.records:
            key = r["level"]
            if key not in by:
                order.append(key)
                by[key] = []
            by[key].append(r)
        return [{"level": k, **metrics.aggregate(by[k])} for k in order]


def burst(b: Bench, concurrency: int, text: str, level: Any) -> list[dict[str, Any]]:
    """`concurrency` clients, each on its own connected socket, send one speak at the same instant."""
    return b.phase([[j] for j in b.jobs(concurrency, text, level)])


def ttfb(b: Bench, levels: list[int], rounds: int, text: str) -> None:
    """The report's TTFB sweep: at each concurrency, `rounds` bursts of that many requests."""
    for c in levels:
        for _ in range(rounds):
            burst(b, c, text, c)


def fullload(b: Bench, concurrency: int, requests: int, text: str) -> None:
    """Closed loop: `concurrency` sockets each send their next request as soon as the last is done."""
    jobs = b.jobs(requests, text, concurrency)
    b.phase([jobs[i::concurrency] for i in range(min(concurrency, requests))])


def overload(b: Bench, levels: list[int], rounds: int, text: str) -> None:
    """Bursts above capacity: does every request succeed, and how long does the last quarter wait?"""
    for c in levels:
        for _ in range(rounds):
            burst(b, c, text, c)


def limit(b: Bench, start: int, factor: float, max_concurrency: int, text: str,
          max_underrun_share: float, max_ttfb_p90_ms: float | None) -> None:
    """Raise the burst size until requests fail or streams no longer keep up with real time.

    A level passes when every request succeeds, at most `max_underrun_share` of the streams
    ever ran dry in the playback simulation, the median RTF is below 1 and (optionally) the
    p90 TTFB is under `max_ttfb_p90_ms`. The result is the largest passing level.
    """
    c, passed, steps = start, None, []
    while c <= max_concurrency and not b.stopped:
        recs = burst(b, c, text, c)
        if not recs:
            break
        agg = metrics.aggregate(recs)
        reasons = []
        if agg["success_rate"] < 1:
            reasons.append(f"success {agg['success_rate']:.1%} ({agg['errors']})")
        if agg["underrun_share"] > max_underrun_share:
            reasons.append(f"{agg['underrun_share']:.1%} of streams ran dry")
        if not agg["rtf"]["p50"] < 1:
            reasons.append(f"RTF p50 {agg['rtf']['p50']:.2f}")
        if max_ttfb_p90_ms is not None and not agg["ttfb_ms"]["p90"] <= max_ttfb_p90_ms:
            reasons.append(f"TTFB p90 {agg['ttfb_ms']['p90']:.0f} ms")
        steps.append({"concurrency": c, "pass": not reasons, "reasons": reasons})
        if reasons:
            break
        passed = c
        c = max(c + 1, math.ceil(c * factor))
    b.verdicts["limit"] = {"max_passing_concurrency": passed, "steps": steps,
                           "criteria": {"max_underrun_share": max_underrun_share,
                                        "max_ttfb_p90_ms": max_ttfb_p90_ms, "rtf_p50_below": 1}}


def lengths(b: Bench, texts: dict[str, str], concurrency: int, rounds: int) -> None:
    """Texts of different lengths (the report's max_model_len check): success and time for each."""
    for label, text in texts.items():
        for _ in range(rounds):
            burst(b, concurrency, text, label)


def open_loop(b: Bench, rate: float, duration_s: float, text: str, seed: int) -> None:
    """Poisson arrivals at `rate` per second for `duration_s`: each arrival is a new socket."""
    rng = random.Random(seed)
    at, t = [], rng.expovariate(rate)
    while t < duration_s and len(at) < b.limits.max_requests:
        at.append(t)
        t += rng.expovariate(rate)
    b.phase([[j] for j in b.jobs(len(at), text, rate, at)], fresh=True)
