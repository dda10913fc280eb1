"""Backpressure over real loopback sockets: a client that stops reading is a slow consumer. Its
engine work is cancelled, the server holds a bounded amount of its audio, it gets `slow_consumer`
and close 1008, and a client that never reads again is dropped without waiting for TCP keepalive."""

from __future__ import annotations

import contextlib
import json

import pytest
from websockets.exceptions import ConnectionClosed

from tests.conftest import running, url
from tests.wsclient import collect, open_ws, read_until_closed, run, until
from voxws.engines.synthetic import CHUNK
from voxws.outbox import Audio
from voxws.session import CONTROL_BACKLOG, Session

FAST = {"synthetic_step_base_ms": 2.0, "synthetic_step_per_seq_ms": 0.0}
HUGE = "长" * 2000  # 500 s of audio: far more than the socket buffers hold



def held_bytes(session: Session) -> int:
    """Audio the server holds for this socket: queued frames plus the socket's write buffer."""
    queued = sum(len(item.payload) for ctx in session.contexts.values() for item in ctx.lane.items
                 if isinstance(item, Audio))
    return queued + session.t.write_buffer_size()  # type: ignore[attr-defined]


@pytest.mark.parametrize("path", ["unsent_audio", "stalled_writer"])
def test_a_client_that_stops_reading_is_cut_off_with_bounded_memory(path: str) -> None:
    # Either limit alone catches it: the unsent audio bound, or the time the writer has been stalled.
    limits = {"max_unsent_audio_s": 2, "stall_timeout_s": 60} if path == "unsent_audio" else \
        {"max_unsent_audio_s": 3600, "stall_timeout_s": 1}

    async def scenario() -> None:
        async with running(**FAST, **limits) as srv:
            reader, _ = await open_ws(url(srv))
            slow, _ = await open_ws(url(srv), max_queue=2)
            await slow.send(json.dumps({"type": "speak", "text": HUGE, "context": "slow"}))
            await until(lambda: any("slow" in s.contexts for s in srv.shared.sessions))
            session = next(s for s in srv.shared.sessions if "slow" in s.contexts)
            peak = 0

            def cut_off() -> bool:
                nonlocal peak
                peak = max(peak, held_bytes(session))
                return srv.metrics.value("voxws_slow_consumers_total") == 1

            await until(cut_off)
            # The engine work of that socket is cancelled at once, its slots are free.
            await until(lambda: srv.engine.running == 0 and srv.admission.in_use == 0)
            if path == "unsent_audio":
                # Bounded by the limit (plus a frame and the library's write buffer), not by the text.
                assert peak <= 2 * 44100 * 2 + 2 * CHUNK * 2 + 64 * 1024, peak
            # Other clients are served meanwhile.
            await reader.send(json.dumps({"type": "speak", "text": "我还在听。", "context": "r"}))
            streams, _ = await collect(reader)
            assert streams["r"].end["type"] == "done"
            # The slow client reads again: what was in flight, then the verdict and 1008.
            frames, log = await read_until_closed(slow)
            assert slow.close_code == 1008
            assert frames < 2000 * 25 / 4  # far from all of its audio
            if path == "unsent_audio":
                assert [m["code"] for m in log if m["type"] == "error"] == ["slow_consumer"]
            # (A writer stalled past stall_timeout_s is cancelled mid-send: the client gets the close only.)
            await until(lambda: len(srv.shared.sessions) == 1)
            await reader.close()

    run(scenario())


def test_a_client_that_never_reads_again_is_disconnected() -> None:
    async def scenario() -> None:
        async with running(**FAST, max_unsent_audio_s=1, stall_timeout_s=1) as srv:
            slow, _ = await open_ws(url(srv), max_queue=1)
            await slow.send(json.dumps({"type": "speak", "text": HUGE, "context": "slow"}))
            await until(lambda: srv.metrics.value("voxws_slow_consumers_total") == 1)
            # Stalled writes past stall_timeout_s, then the close handshake's own timeout (5 s): the
            # server lets go of the socket well before TCP keepalive (ping_interval + ping_timeout = 40 s).
            await until(lambda: not srv.shared.sessions, timeout=20)
            assert srv.engine.running == 0
            slow.transport.abort()

    run(scenario())


def test_a_client_that_floods_messages_and_reads_no_replies_is_a_slow_consumer() -> None:
    """Each message gets a reply (a pong, an error, `rate_limited`): unread replies are bounded too."""

    async def scenario() -> None:
        async with running(**FAST) as srv:
            other, _ = await open_ws(url(srv))
            ws, _ = await open_ws(url(srv), max_queue=1)
            sent = 0
            with contextlib.suppress(ConnectionClosed):
                while srv.metrics.value("voxws_slow_consumers_total") == 0 and sent < 2_000_000:
                    for _ in range(500):
                        await ws.send(b"\x00")
                    sent += 500
            assert srv.metrics.value("voxws_slow_consumers_total") == 1
            for s in srv.shared.sessions:
                assert len(s.out.control) <= CONTROL_BACKLOG + 2
            await until(lambda: len(srv.shared.sessions) == 1)
            await other.send(json.dumps({"type": "speak", "text": "我没事。", "context": "o"}))
            streams, _ = await collect(other)
            assert streams["o"].end["type"] == "done"
            await other.close()
            ws.transport.abort()

    run(scenario())
