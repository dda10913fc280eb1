"""voxws-bench reports from recorded results: the JSON document, markdown tables, PNG plots."""

from __future__ import annotations

import json

import pytest

from voxws.bench import metrics, report, scenarios
from voxws.bench.client import StreamResult, Target
from voxws.bench.scenarios import Bench, Limits

READY = {"type": "ready", "protocol": "voxws.v1", "server": "voxws/0.1.0", "group": "group0",
         "engine": "synthetic", "model": "synthetic-voxcpm1.5", "sample_rate": 44100,
         "limits": {"max_text_chars": 5000, "max_contexts": 8, "max_message_bytes": 65536,
                    "idle_timeout_s": 300}}


def _stream(id_: int, level, sent: float, ttfb: float, frames: int = 10, error: str | None = None):
    r = StreamResult(id=id_, level=level, text_chars=13, t_sent=sent, format="pcm_s16le", sample_rate=44100)
    if error:
        r.error, r.t_done = error, sent + 0.01
        return r
    for k in range(frames):
        r.frame_t.append(sent + ttfb + k * 0.08)
        r.frame_n.append(14112)
    r.t_done = r.frame_t[-1] + 0.001
    r.done = {"type": "done", "audio_ms": 160 * frames, "chunks": frames}
    return r


def _bench(scenario: str, levels) -> Bench:
    b = Bench(target=Target(url="ws://127.0.0.1:1/v1/tts", token="secret"), limits=Limits(100, 60),
              scenario=scenario, config={"buffer_ms": 200, "text": "x"})
    b.ready = dict(READY)
    i = 0
    for lv in levels:
        n = lv if isinstance(lv, int) else 2
        for k in range(n):
            err = "busy" if (isinstance(lv, int) and lv >= 8 and k == 0) else None
            b.records.append(metrics.request_record(_stream(i, lv, sent=i * 0.001, ttfb=0.03 + 0.01 * k,
                                                            error=err), 0.0, 0.2))
            i += 1
    return b


def test_document_has_the_documented_schema_and_is_strict_json():
    doc = report.document(_bench("ttfb", [1, 8, 32]))
    assert doc["schema"] == report.SCHEMA
    for key in ("scenario", "created", "machine", "server", "config", "status", "client", "levels", "overall",
                "verdicts", "requests"):
        assert key in doc
    assert doc["server"]["engine"] == "synthetic" and doc["server"]["model"] == "synthetic-voxcpm1.5"
    assert doc["machine"]["cpus"] >= 1 and doc["machine"]["python"]
    assert [lv["level"] for lv in doc["levels"]] == [1, 8, 32]
    assert doc["levels"][1]["errors"] == {"busy": 1} and doc["levels"][1]["ok"] == 7
    assert len(doc["requests"]) == 41
    assert "secret" not in json.dumps(doc)  # the token never lands in a results file
    json.loads(json.dumps(doc, allow_nan=False))


def test_write_produces_json_markdown_and_plots(tmp_path):
    doc = report.document(_bench("ttfb", [1, 8, 32]))
    paths = report.write(doc, tmp_path)
    assert json.loads(paths["json"].read_text())["scenario"] == "ttfb"
    md = paths["markdown"].read_text()
    assert "| concurrency | requests | success |" in md
    assert "| 32 | 32 | 96.9% |" in md
    assert "TTFB min" in md and "synthetic" in md
    for name in ("ttfb-ttfb.png", "ttfb-throughput.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"![{name}]({name})" in md


def test_lengths_report_labels_texts_and_plots_categories(tmp_path):
    doc = report.document(_bench("lengths", ["short", "medium", "long"]))
    paths = report.write(doc, tmp_path)
    md = paths["markdown"].read_text()
    assert "| short (13 chars) |" in md and "RTF min" in md
    assert (tmp_path / "lengths-throughput.png").exists()


def test_overload_report_shows_arrival_quartiles():
    md = report.markdown(report.document(_bench("overload", [16])))
    assert "first vs last quarter" in md


def test_incomplete_run_is_marked(tmp_path):
    b = _bench("ttfb", [1])
    b.interrupted, b.not_started = True, 5
    doc = report.document(b)
    assert doc["status"]["complete"] is False and doc["status"]["interrupted"] is True
    assert "incomplete run" in report.markdown(doc)


def test_report_of_a_run_where_nothing_succeeded(tmp_path):
    b = Bench(target=Target(url="ws://127.0.0.1:1/v1/tts"), limits=Limits(), scenario="ttfb")
    b.records.append(metrics.request_record(_stream(0, 1, 0.0, 0.0, error="connect"), 0.0, 0.2))
    paths = report.write(report.document(b), tmp_path)
    assert "ttfb-ttfb.png" not in paths  # nothing to plot
    assert "| 1 | 1 | 0.0% |" in paths["markdown"].read_text()


@pytest.mark.parametrize("n", [8, 68, 313])
def test_default_texts_have_the_reports_lengths(n):
    t = scenarios.text_of_length(n)
    assert n - 40 < len(t) <= n and t.endswith("。")


def test_limits_reject_bad_values():
    with pytest.raises(ValueError, match="--max-requests=0"):
        Limits(max_requests=0)
    with pytest.raises(ValueError, match="--max-duration=0"):
        Limits(max_duration_s=0)
