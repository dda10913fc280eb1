"""voxws.integrations.livekit.TTS with the real livekit-agents, against a real voxws server (synthetic engine)."""

from __future__ import annotations

import asyncio

import pytest

pytest.importorskip("livekit.agents")

from livekit.agents import APIConnectOptions, APIStatusError
from livekit.agents.types import USERDATA_TIMED_TRANSCRIPT

from tests.agentutil import slots_free
from tests.conftest import running, url
from voxws.client import VoxClient
from voxws.integrations.livekit import TTS

NO_RETRY = APIConnectOptions(max_retry=0, timeout=20)


async def reference(u: str, text: str, rate: int) -> bytes:
    """The same text spoken through the plain client: what the plugin must deliver."""
    async with VoxClient(u) as c:
        return await c.speak(text, sample_rate=rate).audio()


def test_synthesize_gives_the_server_audio() -> None:
    async def main() -> None:
        async with running() as server:
            text = "Hello from LiveKit. This is a chunked synthesis."
            lk = TTS(url=url(server), sample_rate=24000)
            try:
                frames = [ev.frame async for ev in lk.synthesize(text, conn_options=NO_RETRY)]
                pcm = b"".join(bytes(f.data) for f in frames)
                assert frames and all(f.sample_rate == 24000 and f.num_channels == 1 for f in frames)
                # All of it (the synthetic engine's samples differ per context, their count does not); LiveKit
                # may end on up to 10 ms of silence of its own.
                ref = len(await reference(url(server), text, 24000))
                assert ref <= len(pcm) <= ref + 480 and pcm[ref:] == bytes(len(pcm) - ref)
            finally:
                await lk.aclose()
    asyncio.run(main())


def test_stream_incremental_text() -> None:
    async def main() -> None:
        async with running() as server:
            pieces = ["Hello ", "there, ", "this text ", "comes in ", "pieces. ", "And a second sentence."]
            lk = TTS(url=url(server), sample_rate=16000)
            try:
                stream = lk.stream(conn_options=NO_RETRY)
                for p in pieces:
                    stream.push_text(p)
                stream.end_input()
                events = [ev async for ev in stream]
                pcm = b"".join(bytes(ev.frame.data) for ev in events)
                assert events and all(ev.frame.sample_rate == 16000 for ev in events)
                assert len(pcm) > 16000  # over half a second of audio
                assert len({ev.request_id for ev in events}) == 1  # one context for the stream
                await stream.aclose()
            finally:
                await lk.aclose()
            await slots_free(server.port)
    asyncio.run(main())


def test_closing_a_stream_mid_way_frees_the_slot() -> None:
    async def main() -> None:
        async with running() as server:
            lk = TTS(url=url(server))
            try:
                stream = lk.stream(conn_options=NO_RETRY)
                stream.push_text("A long answer that keeps going. " * 20)
                stream.end_input()
                got = 0
                async for _ev in stream:
                    got += 1
                    if got == 3:
                        break
                await stream.aclose()
                await slots_free(server.port)
                # The socket stays usable for the next turn.
                pcm = b"".join([bytes(ev.frame.data) async for ev in lk.synthesize("Next turn.",
                                                                                 conn_options=NO_RETRY)])
                assert pcm
            finally:
                await lk.aclose()
    asyncio.run(main())


def test_errors_become_api_errors() -> None:
    async def main() -> None:
        async with running() as server:
            lk = TTS(url=url(server), voice="nobody")
            try:
                with pytest.raises(APIStatusError) as e:
                    [ev async for ev in lk.synthesize("Hello.", conn_options=NO_RETRY)]
                assert e.value.status_code == 400 and not e.value.retryable
                assert "unknown_voice" in str(e.value)
            finally:
                await lk.aclose()
    asyncio.run(main())


def test_stream_aligned_transcript_from_server_words() -> None:
    async def main() -> None:
        async with running() as server:
            lk = TTS(url=url(server), sample_rate=24000)
            try:
                stream = lk.stream(conn_options=NO_RETRY)
                stream.push_text("Good morning to you all.")
                stream.end_input()
                timed = []
                async for ev in stream:
                    timed += ev.frame.userdata.get(USERDATA_TIMED_TRANSCRIPT, [])
                assert "".join(timed).split() == ["Good", "morning", "to", "you", "all."]
                starts = [t.start_time for t in timed]
                assert starts == sorted(starts)
            finally:
                await lk.aclose()
    asyncio.run(main())



def test_busy_is_a_retryable_429() -> None:
    async def main() -> None:
        async with running(max_num_seqs=1, max_queue=0) as server:
            lk = TTS(url=url(server))
            try:
                first = lk.stream(conn_options=NO_RETRY)
                first.push_text("Keep the only slot busy for a while. " * 6)
                first.end_input()
                await anext(first)
                with pytest.raises(APIStatusError) as e:
                    [ev async for ev in lk.synthesize("No room.", conn_options=NO_RETRY)]
                assert e.value.status_code == 429 and e.value.retryable
                await first.aclose()
                await slots_free(server.port)
            finally:
                await lk.aclose()
    asyncio.run(main())


def test_going_away_mid_stream_finishes_then_reconnects() -> None:
    async def main() -> None:
        async with running(drain_timeout_s=30) as server:
            lk = TTS(url=url(server))
            try:
                stream = lk.stream(conn_options=NO_RETRY)
                stream.push_text("This stream is in flight when the server starts draining. " * 3)
                stream.end_input()
                events = [await anext(stream)]
                server.drain()
                events += [ev async for ev in stream]
                assert sum(len(bytes(ev.frame.data)) for ev in events) > 24000 * 2 * 5  # all of it: >5 s
                # The next request needs a new socket; this server is draining, so it refuses (503, retryable).
                with pytest.raises(APIStatusError) as e:
                    [ev async for ev in lk.synthesize("Next.", conn_options=NO_RETRY)]
                assert e.value.status_code == 503 and e.value.retryable
            finally:
                await lk.aclose()
    asyncio.run(main())


def test_prewarm_opens_the_socket() -> None:
    async def main() -> None:
        async with running() as server:
            lk = TTS(url=url(server))
            try:
                lk.prewarm()
                for _ in range(200):
                    if lk._client is not None:
                        break
                    await asyncio.sleep(0.02)
                assert lk._client is not None and lk.model == "synthetic-voxcpm1.5"
            finally:
                await lk.aclose()
    asyncio.run(main())
