"""voxws-bench metric computations on recorded inputs: percentiles, RTF, throughput, playback underruns."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voxws.bench import metrics
from voxws.bench.client import StreamResult

CHUNK_S = 0.16
CHUNK_BYTES = 7056 * 2  # one 0.16 s chunk of 44.1 kHz pcm_s16le


def test_percentile_matches_numpy_linear_interpolation():
    xs = [5.0, 1.0, 9.0, 3.0, 7.0, 2.0]
    for q in (0, 10, 50, 90, 99, 100):
        assert metrics.percentile(xs, q) == pytest.approx(float(np.percentile(xs, q)))


@given(st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=50), st.floats(0, 100))
def test_percentile_property(xs, q):
    assert metrics.percentile(xs, q) == pytest.approx(float(np.percentile(xs, q)), rel=1e-9, abs=1e-6)


def test_percentile_edge_cases():
    assert math.isnan(metrics.percentile([], 50))
    assert metrics.percentile([4.0], 99) == 4.0
    with pytest.raises(ValueError, match="q=101"):
        metrics.percentile([1.0], 101)


def test_summary_ignores_missing_values_and_reports_empty_as_nan():
    s = metrics.summary([10.0, None, 20.0, float("nan"), 30.0])
    assert s["n"] == 3 and s["min"] == 10 and s["max"] == 30 and s["mean"] == 20 and s["p50"] == 20
    empty = metrics.summary([])
    assert empty["n"] == 0 and all(math.isnan(empty[k]) for k in metrics.STATS)


def test_throughput_and_rtf_follow_the_report_definitions():
    assert metrics.throughput(audio_s=157.0, wall_s=1.0) == 157.0  # "157x real time"
    assert metrics.rtf(generation_s=1.1, audio_s=10.0) == pytest.approx(0.11)  # "single-request RTF 0.11"
    assert math.isnan(metrics.throughput(10.0, 0.0)) and math.isnan(metrics.rtf(1.0, 0.0))


def test_bytes_per_second_per_format():
    assert metrics.bytes_per_second("pcm_s16le", 44100) == 88200
    assert metrics.bytes_per_second("pcm_f32le", 16000) == 64000
    assert metrics.bytes_per_second("pcm_mulaw", 8000) == 8000
    with pytest.raises(ValueError, match="format='wav'"):
        metrics.bytes_per_second("wav", 44100)


def test_playback_faster_than_real_time_never_runs_dry():
    arrivals = [i * 0.08 for i in range(10)]  # a step every 80 ms, 160 ms of audio each
    p = metrics.simulate_playback(arrivals, [CHUNK_S] * 10, buffer_s=0.0)
    assert p.underruns == ()
    assert p.start_s == 0.0 and p.end_s == pytest.approx(10 * CHUNK_S)


def test_playback_counts_one_underrun_with_its_length():
    # buffer 100 ms: plays frame 0 over 0.10-0.26, frame 1 over 0.26-0.42, then waits for frame 2 until 0.50.
    p = metrics.simulate_playback([0.0, 0.1, 0.5], [CHUNK_S] * 3, buffer_s=0.1)
    assert len(p.underruns) == 1
    assert p.underruns[0].at_s == pytest.approx(0.42)
    assert p.underruns[0].length_s == pytest.approx(0.08)
    assert p.stall_s == pytest.approx(0.08) and p.max_underrun_s == pytest.approx(0.08)
    assert p.end_s == pytest.approx(0.66)


def test_a_larger_buffer_absorbs_the_same_gap():
    p = metrics.simulate_playback([0.0, 0.1, 0.5], [CHUNK_S] * 3, buffer_s=0.2)
    assert p.underruns == ()


def test_a_slow_stream_runs_dry_before_every_late_frame():
    # 200 ms between frames of 160 ms: after the first, each frame is 40 ms late.
    arrivals = [i * 0.2 for i in range(6)]
    p = metrics.simulate_playback(arrivals, [CHUNK_S] * 6, buffer_s=0.0)
    assert len(p.underruns) == 5
    assert all(u.length_s == pytest.approx(0.04) for u in p.underruns)
    assert p.stall_s == pytest.approx(0.2)


def test_playback_resumes_at_the_late_frame_without_rebuffering():
    # One long stall; the frames after it arrived in a burst and play back to back.
    p = metrics.simulate_playback([0.0, 1.0, 1.0, 1.0], [CHUNK_S] * 4, buffer_s=0.0)
    assert len(p.underruns) == 1 and p.underruns[0].length_s == pytest.approx(1.0 - CHUNK_S)
    assert p.end_s == pytest.approx(1.0 + 3 * CHUNK_S)


@settings(max_examples=200)
@given(st.lists(st.tuples(st.floats(0, 0.5), st.floats(0.001, 0.5)), min_size=1, max_size=40),
       st.floats(0, 1))
def test_playback_time_is_buffer_plus_audio_plus_stalls(gaps_durs, buffer_s):
    arrivals, t = [], 0.0
    for gap, _ in gaps_durs:
        t += gap
        arrivals.append(t)
    durations = [d for _, d in gaps_durs]
    p = metrics.simulate_playback(arrivals, durations, buffer_s)
    assert p.end_s == pytest.approx(buffer_s + sum(durations) + p.stall_s)
    assert all(u.length_s > 0 for u in p.underruns)


def test_playback_rejects_bad_input():
    with pytest.raises(ValueError, match="equal length"):
        metrics.simulate_playback([0.0], [0.1, 0.1], 0.0)
    with pytest.raises(ValueError, match="buffer_s=-1"):
        metrics.simulate_playback([0.0], [0.1], -1)
    assert math.isnan(metrics.simulate_playback([], [], 0.1).end_s)


def _recorded(id_: int, sent: float, frame_gaps: list[float], level: int = 1, **kw) -> StreamResult:
    """A StreamResult as the client fills it: times on the perf_counter clock."""
    r = StreamResult(id=id_, level=level, text_chars=13, t_connect=sent - 0.01, t_ready=sent - 0.005,
                     t_sent=sent, format="pcm_s16le", sample_rate=44100, **kw)
    t = sent
    for g in frame_gaps:
        t += g
        r.frame_t.append(t)
        r.frame_n.append(CHUNK_BYTES)
    r.t_start = r.frame_t[0] - 0.001 if r.frame_t else None
    r.t_done = t + 0.002
    r.done = {"type": "done", "audio_ms": 160 * len(frame_gaps), "ttfb_ms": 30.0, "chunks": len(frame_gaps)}
    return r


def test_request_record_from_recorded_stream():
    res = _recorded(7, sent=100.0, frame_gaps=[0.050, 0.080, 0.300, 0.080])
    rec = metrics.request_record(res, t0=99.0, buffer_s=0.0)
    assert rec["ok"] and rec["error"] is None
    assert rec["ttfb_ms"] == pytest.approx(50.0)
    assert rec["sent_s"] == pytest.approx(1.0) and rec["first_frame_s"] == pytest.approx(1.05)
    assert rec["frames"] == 4 and rec["bytes"] == 4 * CHUNK_BYTES
    assert rec["audio_s"] == pytest.approx(0.64)
    assert rec["generation_s"] == pytest.approx(0.512)
    assert rec["rtf"] == pytest.approx(0.512 / 0.64)
    assert rec["connect_ms"] == pytest.approx(5.0)
    # frame 2 arrives 0.38 s after frame 0; frames 0-1 play until 0.32: one 60 ms underrun.
    assert rec["underruns"] == 1 and rec["stall_ms"] == pytest.approx(60.0)
    assert rec["frames_ms"] == [50.0, 130.0, 430.0, 510.0]
    assert rec["server_ttfb_ms"] == 30.0 and rec["server_audio_ms"] == 640
    json.dumps(rec, allow_nan=False)


def test_request_record_audio_duration_follows_the_negotiated_format():
    res = _recorded(1, 0.0, [0.01, 0.01])
    res.format, res.sample_rate = "pcm_mulaw", 8000
    res.frame_n[:] = [1280, 1280]  # 0.16 s of 8 kHz mulaw each
    assert metrics.request_record(res, 0.0, 0.0)["audio_s"] == pytest.approx(0.32)


def test_request_record_of_a_failed_request():
    res = StreamResult(id=3, level=8, text_chars=5, t_sent=10.0, t_done=10.01, error="busy",
                       error_message="admission queue full")
    rec = metrics.request_record(res, t0=10.0, buffer_s=0.2, keep_frames=False)
    assert not rec["ok"] and rec["error"] == "busy"
    assert rec["ttfb_ms"] is None and rec["audio_s"] == 0 and rec["underruns"] == 0
    assert "frames_ms" not in rec


def _records(n: int, ttfb_s: list[float] | None = None, level: int = 4) -> list[dict]:
    out = []
    for i in range(n):
        first = ttfb_s[i] if ttfb_s else 0.05
        res = _recorded(i, sent=0.0, frame_gaps=[first] + [0.08] * 9, level=level)
        out.append(metrics.request_record(res, t0=0.0, buffer_s=0.2))
    return out


def test_aggregate_throughput_success_and_ttfb():
    recs = _records(4)
    recs.append(metrics.request_record(StreamResult(id=9, level=4, text_chars=13, t_sent=0.0, t_done=0.1,
                                                    error="busy"), 0.0, 0.2))
    recs.append(metrics.request_record(StreamResult(id=10, level=4, text_chars=13, t_sent=0.0,
                                                    error="stopped"), 0.0, 0.2))
    agg = metrics.aggregate(recs)
    assert agg["requests"] == 6 and agg["ok"] == 4 and agg["failed"] == 1 and agg["stopped"] == 1
    assert agg["success_rate"] == pytest.approx(0.8)  # stopped requests are neither
    assert agg["errors"] == {"busy": 1}
    wall = 0.05 + 9 * 0.08 + 0.002  # first speak sent to the last done
    assert agg["wall_s"] == pytest.approx(wall)
    assert agg["audio_s"] == pytest.approx(4 * 10 * CHUNK_S)
    assert agg["throughput_x"] == pytest.approx(4 * 10 * CHUNK_S / wall)
    assert agg["ttfb_ms"]["p50"] == pytest.approx(50.0)
    assert agg["underrun_streams"] == 0 and agg["underrun_share"] == 0
    json.dumps(metrics.nan_to_none(agg), allow_nan=False)


def test_aggregate_counts_underrun_streams():
    recs = _records(3)
    recs.append(metrics.request_record(_recorded(5, 0.0, [0.05, 0.5, 0.08]), 0.0, buffer_s=0.1))
    agg = metrics.aggregate(recs)
    assert agg["underrun_streams"] == 1 and agg["underruns"] == 1
    assert agg["underrun_share"] == pytest.approx(0.25)
    assert agg["stall_ms"]["max"] == pytest.approx((0.5 - 0.1 - CHUNK_S) * 1000)


def test_arrival_quartiles_compare_the_first_and_last_quarter_to_get_audio():
    ttfbs = [0.05, 0.06, 0.07, 0.08, 0.40, 0.45, 0.50, 0.55]
    q = metrics.arrival_quartiles(_records(8, ttfbs))
    assert q["first"]["n"] == 2 and q["first"]["mean"] == pytest.approx(55.0)
    assert q["last"]["n"] == 2 and q["last"]["mean"] == pytest.approx(525.0)
    assert metrics.arrival_quartiles([])["first"]["n"] == 0


def test_aggregate_of_nothing_is_json_safe():
    agg = metrics.aggregate([])
    assert agg["requests"] == 0
    json.dumps(metrics.nan_to_none(agg), allow_nan=False)


def test_wall_time_sums_phases_so_pauses_between_bursts_do_not_count():
    recs = _records(2)
    later = [metrics.request_record(_recorded(10 + i, sent=5.0, frame_gaps=[0.05] + [0.08] * 9), 0.0, 0.2)
             for i in range(2)]
    for r in recs:
        r["phase"] = 0
    for r in later:
        r["phase"] = 1
    one = 0.05 + 9 * 0.08 + 0.002
    assert metrics.wall_s(recs + later) == pytest.approx(2 * one)
    assert metrics.aggregate(recs + later)["throughput_x"] == pytest.approx(4 * 10 * CHUNK_S / (2 * one))
