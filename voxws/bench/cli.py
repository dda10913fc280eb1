"""`voxws-bench`: the load-test report's scenarios against any voxws URL.

Every run is bounded (--max-requests, --max-duration) and stops by itself; ctrl-C stops it
early and still prints and writes what was measured.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from voxws.bench import report, scenarios
from voxws.bench.client import Target
from voxws.bench.scenarios import Bench, Limits
from voxws.cli import version_option

FORMATS = ("pcm_s16le", "pcm_f32le", "pcm_mulaw")
SAMPLE_RATES = (8000, 16000, 22050, 24000, 44100, 48000)

# rich_markup_mode=None: plain help, like voxws and voxws-ops (rich markup would eat "[...]" in help text).
app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__, rich_markup_mode=None)
err = Console(stderr=True)
out = Console()

Url = Annotated[str, typer.Option(help="voxws WebSocket URL")]
Token = Annotated[str | None, typer.Option(envvar="VOXWS_BENCH_TOKEN",
                                           help="bearer token (sent as Authorization: Bearer)")]
Text = Annotated[str | None, typer.Option(help="text to speak (default: the report's 13-character sentence)")]
TextFile = Annotated[Path | None, typer.Option(help="read the text from a file (lengths: one per line)")]
Fmt = Annotated[str | None, typer.Option("--format", help="pcm_s16le | pcm_f32le | pcm_mulaw")]
Rate = Annotated[int | None, typer.Option(help="output sample rate (default: the model's native rate)")]
Voice = Annotated[str | None, typer.Option(help="voice id registered on the server")]
Out = Annotated[Path, typer.Option(help="directory for <scenario>.json, .md and the PNG plots")]
MaxReq = Annotated[int, typer.Option(help="stop after this many requests (whole run)")]
MaxDur = Annotated[float, typer.Option(help="stop after this many seconds (whole run)")]
Timeout = Annotated[float, typer.Option(help="per-request limit in seconds, speak to done")]
Buffer = Annotated[float, typer.Option(help="playback starts this long after the first frame")]
Procs = Annotated[int, typer.Option(help="client processes (use >1 when one client process is CPU-bound)")]
NoFrames = Annotated[bool, typer.Option("--no-frames", help="leave per-frame arrival times out of the JSON")]
NoPlots = Annotated[bool, typer.Option("--no-plots", help="do not draw PNG plots (they need matplotlib: bench extra)")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="no progress bar")]

DEFAULT_URL = "ws://127.0.0.1:8081/v1/tts"


@app.callback()
def main_(version: bool = version_option("voxws-bench")) -> None:
    """voxws-bench: the load-test report's scenarios against any voxws URL."""


def _fail(msg: str) -> None:
    err.print(f"[red]error:[/red] {msg}")
    raise typer.Exit(2)


def _levels(option: str, value: str) -> list[int]:
    try:
        xs = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        xs = []
    if not xs or any(x < 1 for x in xs):
        _fail(f"{option}={value}: must be a comma-separated list of positive integers, e.g. 1,8,32")
    return xs


def _positive(option: str, value: float, minimum: float = 1) -> None:
    if not value >= minimum:
        _fail(f"{option}={value}: must be at least {minimum}")


def _text(text: str | None, text_file: Path | None) -> str:
    if text and text_file:
        _fail("--text and --text-file: give one of them, not both")
    if text_file:
        try:
            text = text_file.read_text(encoding="utf-8").strip()
        except OSError as e:
            _fail(f"--text-file={text_file}: must be a readable UTF-8 file ({e.strerror})")
    if text is not None and not text.strip():
        _fail("--text: must not be empty")
    return text or scenarios.DEFAULT_TEXT


def _bench(scenario: str, url: str, token: str | None, fmt: str | None, sample_rate: int | None,
           voice: str | None, max_requests: int, max_duration: float, timeout: float, buffer_ms: float,
           procs: int, no_frames: bool, config: dict[str, Any]) -> Bench:
    if not url.startswith(("ws://", "wss://")):
        _fail(f"--url={url}: must start with ws:// or wss://")
    if fmt is not None and fmt not in FORMATS:
        _fail(f"--format={fmt}: must be one of {', '.join(FORMATS)}")
    if sample_rate is not None and sample_rate not in SAMPLE_RATES:
        _fail(f"--sample-rate={sample_rate}: must be one of {', '.join(map(str, SAMPLE_RATES))}")
    _positive("--max-requests", max_requests)
    _positive("--max-duration", max_duration, 0.001)
    _positive("--timeout", timeout, 0.001)
    _positive("--procs", procs)
    if buffer_ms < 0:
        _fail(f"--buffer-ms={buffer_ms}: must be >= 0")
    target = Target(url=url, token=token, format=fmt, sample_rate=sample_rate, voice=voice,
                    request_timeout_s=timeout)
    cfg = {"url": url, "auth": bool(token), "format": fmt or "server default",
           "sample_rate": sample_rate or "native", "voice": voice, "max_requests": max_requests,
           "max_duration_s": max_duration, "timeout_s": timeout, "buffer_ms": buffer_ms,
           "procs": procs, **config}
    return Bench(target=target, limits=Limits(max_requests, max_duration), scenario=scenario,
                 buffer_s=buffer_ms / 1000, procs=procs, keep_frames=not no_frames, config=cfg)


def _run(b: Bench, body: Callable[[Bench], None], out_dir: Path, quiet: bool, no_plots: bool) -> None:
    progress = Progress(TextColumn(f"[bold]{b.scenario}[/bold]"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("requests"), TimeElapsedColumn(), console=err,
                        refresh_per_second=2, disable=quiet)
    task = progress.add_task(b.scenario, total=0)
    b.progress = lambda n: progress.advance(task, n)
    b.on_total = lambda n: progress.update(task, total=(progress.tasks[0].total or 0) + n)
    try:
        with progress:
            body(b)
    except KeyboardInterrupt:
        b.interrupted = True
    doc = report.document(b)
    _print_summary(doc)
    paths = report.write(doc, out_dir, plots=not no_plots)
    err.print("wrote " + ", ".join(str(p) for p in paths.values()), markup=False)
    if not no_plots and not report.can_plot():
        err.print(report.PLOTS_NEED, markup=False, soft_wrap=True)
    if b.interrupted:
        err.print("[yellow]interrupted: the results above cover what was measured before ctrl-C[/yellow]")
        raise typer.Exit(130)
    if not doc["overall"]["ok"]:
        err.print("[red]no request succeeded[/red]: see the errors in the table and the JSON")
        raise typer.Exit(1)


def _print_summary(doc: dict[str, Any]) -> None:
    s = doc["server"]
    head, rows = report.summary_rows(doc)
    t = Table(title=f"{doc['scenario']} against {s['url']} (engine {s['engine'] or '?'},"
                    f" {s['server'] or '?'})")
    for h in head:
        t.add_column(h, justify="right")
    for r in rows:
        t.add_row(*r)
    out.print(t)
    if doc["scenario"] == "ttfb":
        t = Table(title="TTFB ms (request sent to first audio frame)")
        for h in ("concurrency", "n", "min", "mean", "p50", "p90", "p99", "max"):
            t.add_column(h, justify="right")
        for lv in doc["levels"]:
            q = lv["ttfb_ms"]
            t.add_row(str(lv["level"]), str(q["n"]),
                      *(report._f(q[k]) for k in ("min", "mean", "p50", "p90", "p99", "max")))
        out.print(t)
    for lv in doc["levels"]:
        if lv["errors"]:
            out.print(f"level {lv['level']}: errors {lv['errors']}")
        q = lv["arrival_quartiles_ttfb_ms"]
        if doc["scenario"] == "overload" and q["first"]["mean"] is not None:
            out.print(f"level {lv['level']}: TTFB mean first quartile {q['first']['mean']:.0f} ms,"
                      f" last quartile {q['last']['mean']:.0f} ms")
    if "limit" in doc["verdicts"]:
        out.print(f"largest passing concurrency: {doc['verdicts']['limit']['max_passing_concurrency']}")
    share = doc["client"]["cpu_share"]
    if share is not None and share > 0.85:
        err.print(f"[yellow]warning: the client used {share:.0%} of a core per process; its numbers may be"
                  " client-bound (try --procs 2)[/yellow]")
    for e in doc["client"]["errors"]:
        err.print(f"[red]client: {e}[/red]")


@app.command()
def ttfb(
    url: Url = DEFAULT_URL,
    concurrency: Annotated[str, typer.Option(help="comma-separated concurrency levels")] = "1,8,32,64,128",
    rounds: Annotated[int, typer.Option(help="bursts per level")] = 3,
    text: Text = None, text_file: TextFile = None, token: Token = None, fmt: Fmt = None,
    sample_rate: Rate = None, voice: Voice = None, out: Out = Path("bench-out"), max_requests: MaxReq = 5000,
    max_duration: MaxDur = 600, timeout: Timeout = 120, buffer_ms: Buffer = 200, procs: Procs = 1,
    no_frames: NoFrames = False, no_plots: NoPlots = False, quiet: Quiet = False,
) -> None:
    """TTFB against concurrency: at each level, bursts of that many simultaneous requests."""
    levels = _levels("--concurrency", concurrency)
    _positive("--rounds", rounds)
    t = _text(text, text_file)
    b = _bench("ttfb", url, token, fmt, sample_rate, voice, max_requests, max_duration, timeout, buffer_ms,
               procs, no_frames, {"concurrency": levels, "rounds": rounds, "text_chars": len(t), "text": t})
    _run(b, lambda b: scenarios.ttfb(b, levels, rounds, t), out, quiet, no_plots)


@app.command()
def fullload(
    url: Url = DEFAULT_URL,
    concurrency: Annotated[int, typer.Option(help="sockets streaming at once (closed loop)")] = 128,
    requests: Annotated[int, typer.Option(help="requests in all")] = 256,
    text: Text = None, text_file: TextFile = None, token: Token = None, fmt: Fmt = None,
    sample_rate: Rate = None, voice: Voice = None, out: Out = Path("bench-out"), max_requests: MaxReq = 5000,
    max_duration: MaxDur = 600, timeout: Timeout = 120, buffer_ms: Buffer = 200, procs: Procs = 1,
    no_frames: NoFrames = False, no_plots: NoPlots = False, quiet: Quiet = False,
) -> None:
    """Throughput (audio s / wall s), RTF per request and success rate at a fixed concurrency."""
    _positive("--concurrency", concurrency)
    _positive("--requests", requests)
    t = _text(text, text_file)
    b = _bench("fullload", url, token, fmt, sample_rate, voice, max_requests, max_duration, timeout,
               buffer_ms, procs, no_frames,
               {"concurrency": concurrency, "requests": requests, "text_chars": len(t), "text": t})
    _run(b, lambda b: scenarios.fullload(b, concurrency, requests, t), out, quiet, no_plots)


@app.command()
def overload(
    url: Url = DEFAULT_URL,
    concurrency: Annotated[str, typer.Option(help="burst sizes above capacity")] = "192,256",
    rounds: Annotated[int, typer.Option(help="bursts per level")] = 1,
    text: Text = None, text_file: TextFile = None, token: Token = None, fmt: Fmt = None,
    sample_rate: Rate = None, voice: Voice = None, out: Out = Path("bench-out"), max_requests: MaxReq = 5000,
    max_duration: MaxDur = 600, timeout: Timeout = 120, buffer_ms: Buffer = 200, procs: Procs = 1,
    no_frames: NoFrames = False, no_plots: NoPlots = False, quiet: Quiet = False,
) -> None:
    """Past capacity: success rate, wall time, TTFB of the first and last arrival quartiles."""
    levels = _levels("--concurrency", concurrency)
    _positive("--rounds", rounds)
    t = _text(text, text_file)
    b = _bench("overload", url, token, fmt, sample_rate, voice, max_requests, max_duration, timeout,
               buffer_ms, procs, no_frames,
               {"concurrency": levels, "rounds": rounds, "text_chars": len(t), "text": t})
    _run(b, lambda b: scenarios.overload(b, levels, rounds, t), out, quiet, no_plots)


@app.command()
def limit(
    url: Url = DEFAULT_URL,
    start: Annotated[int, typer.Option(help="first burst size")] = 16,
    factor: Annotated[float, typer.Option(help="burst size multiplier per step")] = 2.0,
    max_concurrency: Annotated[int, typer.Option(help="largest burst to try")] = 1024,
    max_underrun_share: Annotated[float, typer.Option(help="share of streams allowed to run dry")] = 0.0,
    max_ttfb_p90_ms: Annotated[float | None, typer.Option(help="fail a level above this")] = None,
    text: Text = None, text_file: TextFile = None, token: Token = None, fmt: Fmt = None,
    sample_rate: Rate = None, voice: Voice = None, out: Out = Path("bench-out"), max_requests: MaxReq = 5000,
    max_duration: MaxDur = 600, timeout: Timeout = 120, buffer_ms: Buffer = 200, procs: Procs = 1,
    no_frames: NoFrames = False, no_plots: NoPlots = False, quiet: Quiet = False,
) -> None:
    """Raise concurrency until requests fail or streams can no longer keep up with real time."""
    _positive("--start", start)
    _positive("--max-concurrency", max_concurrency, start)
    if not factor > 1:
        _fail(f"--factor={factor}: must be more than 1")
    if not 0 <= max_underrun_share <= 1:
        _fail(f"--max-underrun-share={max_underrun_share}: must be from 0 to 1")
    t = _text(text, text_file)
    b = _bench("limit", url, token, fmt, sample_rate, voice, max_requests, max_duration, timeout, buffer_ms,
               procs, no_frames, {"start": start, "factor": factor, "max_concurrency": max_concurrency,
                                  "max_underrun_share": max_underrun_share,
                                  "max_ttfb_p90_ms": max_ttfb_p90_ms, "text_chars": len(t), "text": t})
    _run(b, lambda b: scenarios.limit(b, start, factor, max_concurrency, t, max_underrun_share,
                                      max_ttfb_p90_ms), out, quiet, no_plots)


@app.command()
def lengths(
    url: Url = DEFAULT_URL,
    concurrency: Annotated[int, typer.Option(help="simultaneous requests per burst")] = 1,
    rounds: Annotated[int, typer.Option(help="bursts per text")] = 3,
    text_file: TextFile = None, token: Token = None, fmt: Fmt = None,
    sample_rate: Rate = None, voice: Voice = None, out: Out = Path("bench-out"), max_requests: MaxReq = 5000,
    max_duration: MaxDur = 600, timeout: Timeout = 300, buffer_ms: Buffer = 200, procs: Procs = 1,
    no_frames: NoFrames = False, no_plots: NoPlots = False, quiet: Quiet = False,
) -> None:
    """Short, medium and long texts (default 8, 68, 313 characters): success and time for each."""
    _positive("--concurrency", concurrency)
    _positive("--rounds", rounds)
    texts = dict(scenarios.DEFAULT_LENGTHS)
    if text_file:
        try:
            lines = [ln.strip() for ln in text_file.read_text(encoding="utf-8").splitlines() if ln.strip()]
        except OSError as e:
            _fail(f"--text-file={text_file}: must be a readable UTF-8 file ({e.strerror})")
        if not lines:
            _fail(f"--text-file={text_file}: must hold at least one non-empty line")
        texts = {f"line{i + 1}": ln for i, ln in enumerate(lines)}
    b = _bench("lengths", url, token, fmt, sample_rate, voice, max_requests, max_duration, timeout, buffer_ms,
               procs, no_frames, {"concurrency": concurrency, "rounds": rounds,
                                  "texts": {k: len(v) for k, v in texts.items()}})
    _run(b, lambda b: scenarios.lengths(b, texts, concurrency, rounds), out, quiet, no_plots)


@app.command("open")
def open_(
    url: Url = DEFAULT_URL,
    rate: Annotated[float, typer.Option(help="mean arrivals per second (Poisson)")] = 10.0,
    duration: Annotated[float, typer.Option(help="seconds of arrivals")] = 30.0,
    seed: Annotated[int, typer.Option(help="random seed of the arrival times")] = 1,
    text: Text = None, text_file: TextFile = None, token: Token = None, fmt: Fmt = None,
    sample_rate: Rate = None, voice: Voice = None, out: Out = Path("bench-out"), max_requests: MaxReq = 5000,
    max_duration: MaxDur = 600, timeout: Timeout = 120, buffer_ms: Buffer = 200, procs: Procs = 1,
    no_frames: NoFrames = False, no_plots: NoPlots = False, quiet: Quiet = False,
) -> None:
    """Open loop: Poisson arrivals at --rate for --duration seconds, each on a new socket."""
    if not rate > 0:
        _fail(f"--rate={rate}: must be more than 0 per second")
    _positive("--duration", duration, 0.001)
    t = _text(text, text_file)
    b = _bench("open", url, token, fmt, sample_rate, voice, max_requests, max_duration, timeout, buffer_ms,
               procs, no_frames, {"rate": rate, "duration_s": duration, "seed": seed, "text_chars": len(t),
                                  "text": t})
    _run(b, lambda b: scenarios.open_loop(b, rate, duration, t, seed), out, quiet, no_plots)


def main() -> None:  # `python -m voxws.bench`
    app(prog_name=os.path.basename(sys.argv[0]) or "voxws-bench")
