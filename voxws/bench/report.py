"""Results as JSON (schema in bench/README.md), markdown tables and PNG plots.

The markdown mirrors the load-test report's tables; plots use matplotlib's Agg backend
so that they render on a headless server.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import socket
import subprocess
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from voxws.bench.metrics import nan_to_none

SCHEMA = "voxws-bench/1"


def machine() -> dict[str, Any]:
    """Where the client ran (the server's machine is the same for loopback runs)."""
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    mem_gb = None
    with contextlib.suppress(ValueError, OSError, AttributeError):
        mem_gb = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    try:
        import websockets

        ws_version = websockets.__version__
    except Exception:
        ws_version = None
    from importlib.metadata import PackageNotFoundError, version

    def installed(name: str) -> str | None:
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    voxws_version = installed("voxws")
    return {
        "hostname": socket.gethostname(),
        "os": platform.platform(),
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "memory_gb": mem_gb,
        "python": platform.python_version(),
        "websockets": ws_version,
        "uvicorn": installed("uvicorn"),  # the HTTP server of the edge (absent before it moved to ASGI)
        "voxws": voxws_version,
        "commit": git_commit(),
    }


def git_commit(path: str | Path | None = None) -> str | None:
    """HEAD of the checkout this code runs from, with '+dirty' for uncommitted changes."""
    where = Path(path) if path else Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(["git", "-C", str(where), "rev-parse", "--short=12", "HEAD"],
                              capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(where), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
        return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def document(bench: Any) -> dict[str, Any]:
    """The JSON results document of a finished (or stopped) Bench run."""
    ready = bench.ready or {}
    levels = bench.levels()
    from voxws.bench.metrics import aggregate

    cpu_share = bench.client_cpu_s / bench.client_wall_s if bench.client_wall_s else None
    doc = {
        "schema": SCHEMA,
        "scenario": bench.scenario,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "server": {
            "url": bench.target.url,
            "server": ready.get("server"),
            "group": ready.get("group"),
            "engine": ready.get("engine"),
            "model": ready.get("model"),
            "sample_rate": ready.get("sample_rate"),
            "limits": ready.get("limits"),
        },
        "config": bench.config,
        "status": {
            "complete": not bench.stopped and bench.not_started == 0,
            "interrupted": bench.interrupted,
            "timed_out": bench.timed_out,
            "request_limit_hit": bench.request_limit_hit,
            "not_started": bench.not_started,
        },
        "client": {
            "procs": bench.procs,
            "cpu_s": bench.client_cpu_s,
            "cpu_share": cpu_share,  # of one core per client process; near 1 = client-bound numbers
            "errors": bench.client_errors,
        },
        "levels": levels,
        "overall": aggregate(bench.records),
        "verdicts": bench.verdicts,
        "requests": bench.records,
    }
    return nan_to_none(doc)


def _f(x: Any, digits: int = 0) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    if isinstance(x, float):
        return f"{x:,.{digits}f}"
    return str(x)


def _pct(x: Any) -> str:
    return "-" if x is None else f"{x:.1%}"


LEVEL_NAMES = {"ttfb": "concurrency", "fullload": "concurrency", "overload": "concurrency",
               "limit": "concurrency", "lengths": "text", "open": "rate (req/s)"}


def summary_rows(doc: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """The main table: one row per level (what the terminal and the markdown both show)."""
    scen = doc["scenario"]
    head = [LEVEL_NAMES.get(scen, "level"), "requests", "success", "wall s", "audio s", "x real time",
            "TTFB p50 ms", "TTFB p90 ms", "TTFB p99 ms", "RTF p50", "underrun streams"]
    rows = []
    chars = {}
    for r in doc["requests"]:
        chars.setdefault(r["level"], r["text_chars"])
    for lv in doc["levels"]:
        label = str(lv["level"]) + (f" ({chars.get(lv['level'])} chars)" if scen == "lengths" else "")
        rows.append([
            label, str(lv["requests"]), _pct(lv["success_rate"]), _f(lv["wall_s"], 2), _f(lv["audio_s"], 1),
            _f(lv["throughput_x"], 1), _f(lv["ttfb_ms"]["p50"]), _f(lv["ttfb_ms"]["p90"]),
            _f(lv["ttfb_ms"]["p99"]), _f(lv["rtf"]["p50"], 3), str(lv["underrun_streams"]),
        ])
    return head, rows


def _md_table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def markdown(doc: dict[str, Any], plots: Sequence[str] = ()) -> str:
    m, s, c = doc["machine"], doc["server"], doc["config"]
    lines = [
        f"# voxws-bench: {doc['scenario']}",
        "",
        f"- server: `{s['url']}` ({s['server'] or '?'}, engine **{s['engine'] or '?'}**,"
        f" model `{s['model'] or '?'}`, group {s['group'] or '?'})",
        f"- client machine: {m['cpu']} x{m['cpus']}, {m['memory_gb']} GB, Python {m['python']},"
        f" websockets {m['websockets']}; voxws commit `{m['commit'] or 'unknown'}`",
        f"- run: {doc['created']}; client processes {doc['client']['procs']},"
        f" client CPU {_pct(doc['client']['cpu_share'])} of a core each;"
        f" playback buffer {c.get('buffer_ms')} ms",
        "- config: " + ", ".join(f"{k}={v}" for k, v in c.items() if k not in ("token", "text")),
    ]
    st = doc["status"]
    if not st["complete"]:
        why = [k for k in ("interrupted", "timed_out", "request_limit_hit") if st[k]]
        lines.append(f"- **incomplete run** ({', '.join(why) or 'stopped'};"
                     f" {st['not_started']} requests not started)")
    lines += ["", "## Summary", "", _md_table(*summary_rows(doc)), ""]
    scen = doc["scenario"]
    if scen == "ttfb":
        head = ["concurrency", "n", "TTFB min", "mean", "p50", "p90", "p99", "max (ms)"]
        rows = [[str(lv["level"]), str(lv["ttfb_ms"]["n"])]
                + [_f(lv["ttfb_ms"][k]) for k in ("min", "mean", "p50", "p90", "p99", "max")]
                for lv in doc["levels"]]
        lines += ["## TTFB (request sent to first audio frame)", "", _md_table(head, rows), ""]
    if scen in ("overload", "fullload", "open"):
        head = ["level", "success", "errors", "wall s", "TTFB first quartile mean ms",
                "TTFB last quartile mean ms", "last - first ms"]
        rows = []
        for lv in doc["levels"]:
            q = lv["arrival_quartiles_ttfb_ms"]
            first, last = q["first"]["mean"], q["last"]["mean"]
            delta = last - first if first is not None and last is not None else None
            errors = json.dumps(lv["errors"]) if lv["errors"] else "-"
            rows.append([str(lv["level"]), _pct(lv["success_rate"]), errors, _f(lv["wall_s"], 2), _f(first),
                         _f(last), _f(delta)])
        lines += ["## Arrival quartiles (first vs last quarter to get audio)", "", _md_table(head, rows), ""]
    if scen in ("fullload", "lengths", "open"):
        head = ["level", "RTF min", "p50", "p90", "max", "generation p50 s", "underrun streams",
                "stall p99 ms"]
        rows = [[str(lv["level"]), _f(lv["rtf"]["min"], 3), _f(lv["rtf"]["p50"], 3), _f(lv["rtf"]["p90"], 3),
                 _f(lv["rtf"]["max"], 3), _f(lv["generation_s"]["p50"], 2), str(lv["underrun_streams"]),
                 _f(lv["stall_ms"]["p99"])] for lv in doc["levels"]]
        lines += ["## RTF (generation time / audio time) and playback", "", _md_table(head, rows), ""]
    if "limit" in doc["verdicts"]:
        v = doc["verdicts"]["limit"]
        rows = [[str(s["concurrency"]), "pass" if s["pass"] else "fail", "; ".join(s["reasons"]) or "-"]
                for s in v["steps"]]
        lines += ["## Limit", "", f"Largest passing concurrency: **{v['max_passing_concurrency']}**"
                  f" (criteria: {json.dumps(v['criteria'])})", "",
                  _md_table(["concurrency", "verdict", "why"], rows), ""]
    for p in plots:
        lines += [f"![{p}]({p})", ""]
    return "\n".join(lines)


# matplotlib is optional (the `bench` extra): without it a run still writes its JSON and markdown.
PLOTS_NEED = ("plots skipped: they need matplotlib, which is not installed (pip install matplotlib, or the bench "
              "extra: pip install '.[bench]' in a checkout); --no-plots hides this line")


def can_plot() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def plot(doc: dict[str, Any], out_dir: Path) -> list[str]:
    """TTFB and throughput against the level; returns the PNG file names written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levels = [lv for lv in doc["levels"] if lv["ok"]]
    if not levels:
        return []
    xs_raw = [lv["level"] for lv in levels]
    numeric = all(isinstance(x, int | float) for x in xs_raw)
    xs = xs_raw if numeric else list(range(len(xs_raw)))
    name = LEVEL_NAMES.get(doc["scenario"], "level")
    title = f"{doc['scenario']} - {doc['server']['engine'] or '?'} - {doc['machine']['hostname']}"
    written = []

    def axes(ax: Any) -> None:
        ax.set_xlabel(name)
        if numeric and len(xs) > 1 and min(xs) > 0 and max(xs) / min(xs) >= 8:
            ax.set_xscale("log", base=2)
        ax.set_xticks(xs)
        ax.set_xticklabels([str(x) for x in xs_raw])
        ax.grid(True, alpha=0.3)
        ax.set_title(title, fontsize=9)

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for key, style in (("p50", "o-"), ("p90", "s--"), ("p99", "^:")):
        ax.plot(xs, [lv["ttfb_ms"][key] for lv in levels], style, label=f"TTFB {key}")
    ax.fill_between(xs, [lv["ttfb_ms"]["min"] for lv in levels], [lv["ttfb_ms"]["max"] for lv in levels],
                    alpha=0.15, label="min-max")
    ax.set_ylabel("TTFB (ms)")
    ax.set_ylim(bottom=0)
    axes(ax)
    ax.legend()
    fig.tight_layout()
    fname = f"{doc['scenario']}-ttfb.png"
    fig.savefig(out_dir / fname, dpi=110)
    plt.close(fig)
    written.append(fname)

    fig, ax = plt.subplots(figsize=(7, 4.2))
    ax.plot(xs, [lv["throughput_x"] for lv in levels], "o-", label="throughput (audio s / wall s)")
    ax.set_ylabel("x real time")
    ax.set_ylim(bottom=0)
    axes(ax)
    ax.legend()
    fig.tight_layout()
    fname = f"{doc['scenario']}-throughput.png"
    fig.savefig(out_dir / fname, dpi=110)
    plt.close(fig)
    written.append(fname)
    return written


def _rounded(x: Any) -> Any:
    """Microseconds are the clock's useful resolution: more digits only make the file bigger."""
    if isinstance(x, float):
        return round(x, 6)
    if isinstance(x, dict):
        return {k: _rounded(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_rounded(v) for v in x]
    return x


def to_json(doc: dict[str, Any]) -> str:
    """Indented, except one request per line: readable, diffable, and a third of the size."""
    head = {k: v for k, v in doc.items() if k != "requests"}
    body = ",\n".join(json.dumps(_rounded(r), ensure_ascii=False, separators=(",", ":"), allow_nan=False)
                      for r in doc.get("requests", []))
    text = json.dumps(head, indent=1, ensure_ascii=False, allow_nan=False)
    return text[:-2] + ',\n "requests": [\n' + body + "\n ]\n}\n"


def write(doc: dict[str, Any], out_dir: Path, plots: bool = True) -> dict[str, Path]:
    """Write <scenario>.json, <scenario>.md and the plots into out_dir; return their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    scen = doc["scenario"]
    paths = {"json": out_dir / f"{scen}.json", "markdown": out_dir / f"{scen}.md"}
    paths["json"].write_text(to_json(doc), encoding="utf-8")
    names = plot(doc, out_dir) if plots and can_plot() else []
    for n in names:
        paths[n] = out_dir / n
    paths["markdown"].write_text(markdown(doc, names) + "\n", encoding="utf-8")
    return paths


def write_marked_block(path: Path, begin: str, end: str, body: str, new_file_header: str) -> None:
    """Replace what stands between the begin/end markers of a markdown page (or append it), so that a
    benchmark script can rewrite its own table in a hand-written page."""
    block = f"{begin}\n{body}\n{end}"
    text = path.read_text(encoding="utf-8") if path.exists() else new_file_header
    if begin in text and end in text:
        pre, rest = text.split(begin, 1)
        text = pre + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(text, encoding="utf-8")
