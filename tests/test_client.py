"""voxws.client against a real server (synthetic engine, in-process on loopback): items, contexts on one
socket, every error code and handshake status, going_away mid-turn."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.agentutil import slots_free
from tests.conftest import running, url
from voxws.client import (
    ERRORS,
    Audio,
    BadMessageError,
    BadOptionError,
    BusyError,
    Cancelled,
    ConnectionLost,
    ContextExistsError,
    Done,
    EmptyTextError,
    EngineError,
    Flushed,
    ForbiddenError,
    GoingAway,
    IdleTimeoutError,
    MessageTooBigError,
    Queued,
    RateLimitedError,
    Segment,
    ShuttingDownError,
    StampedConnection,
    Start,
    TextTooLongError,
    TooManyContextsError,
    UnauthorizedError,
    UnavailableError,
    UnknownVoiceError,
    UnsupportedFormatError,
    VoxClient,
    VoxError,
    Words,
    _Pacer,
    error_from,
)
from voxws.engines.synthetic import read_mark
from voxws.protocol import ERROR_CODES


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(coro)


async def items(ctx: Any) -> list[Any]:
    return [i async for i in ctx]


def test_speak_yields_start_audio_done_with_sample_counts() -> None:
    async def main() -> None:
        async with running() as server, VoxClient(url(server)) as c:
            assert c.ready is not None and c.ready.protocol == "voxws.v1" and c.ready.sample_rate == 44100
            got = await items(c.speak("Hello there. How are you?", sample_rate=16000))
            assert isinstance(got[0], Start) and got[0].sample_rate == 16000 and got[0].format == "pcm_s16le"
            assert isinstance(got[-1], Done)
            audio = [i for i in got if isinstance(i, Audio)]
            assert audio and all(a.samples == len(a.data) // 2 for a in audio)
            assert sum(a.samples or 0 for a in audio) == pytest.approx(got[-1].audio_ms * 16, abs=16)
            assert len(audio) == got[-1].chunks
    run(main())


def test_formats_count_samples() -> None:
    async def main() -> None:
        async with running() as server, VoxClient(url(server)) as c:
            assert c.ready is not None
            for fmt in c.ready.formats:
                ctx = c.speak("Counting samples.", format=fmt, sample_rate=24000)  # type: ignore[arg-type]
                got = await items(ctx)
                done = got[-1]
                assert isinstance(done, Done)
                n = sum(i.samples or 0 for i in got if isinstance(i, Audio))
                # PCM and wav: exact (audio_ms is rounded down to whole ms). mp3/opus: encoders pad to whole codec
                # frames and add their delay, a few frames at most.
                slack_ms = 1 if fmt.startswith("pcm") or fmt == "wav" else 120
                assert abs(n - done.audio_ms * 24) <= 24 * slack_ms, fmt
    run(main())


def test_stamped_arrivals_and_the_audio_hook() -> None:
    # What voxws-bench builds on: every frame goes to on_audio with its arrival stamp (no Audio items), and the
    # context's stamps follow the wire's order on one monotonic clock.
    async def main() -> None:
        async with running() as server, VoxClient(url(server), stamp_arrivals=True, ping_interval=None) as c:
            assert isinstance(c.connection, StampedConnection) and c.ready_at is not None
            ctx = c.speak("Stamped frames, one by one.")
            frames: list[tuple[bytes, float]] = []
            ctx.on_audio = lambda data, at: frames.append((data, at))
            got = await items(ctx)
            done = got[-1]
            assert isinstance(done, Done) and not any(isinstance(i, Audio) for i in got)
            assert len(frames) == done.chunks and all(read_mark(np.frombuffer(d, dtype="<i2")) for d, _ in frames)
            times = [at for _, at in frames]
            assert ctx.sent_at is not None and ctx.started_at is not None and ctx.ended_at is not None
            assert c.ready_at <= ctx.sent_at <= ctx.started_at <= times[0]
            assert times == sorted(times) and times[-1] <= ctx.ended_at
    run(main())


def test_contexts_on_one_socket_are_demultiplexed_in_order() -> None:
    async def main() -> None:
        async with running() as server, VoxClient(url(server)) as c:
            texts = ["First context speaks.", "Second one, a bit longer than the first.", "Third."]
            ctxs = [c.speak(t) for t in texts]
            results = await asyncio.gather(*(items(x) for x in ctxs))
            for ctx, got in zip(ctxs, results, strict=True):
                assert isinstance(got[-1], Done) and got[-1].context == ctx.id
                frames = [i for i in got if isinstance(i, Audio)]
                assert all(i.context == ctx.id for i in got if hasattr(i, "context"))
                # Synthetic frames carry (text tag, segment, step): one text's steps, in order, none missing.
                marks = [read_mark(__import__("numpy").frombuffer(f.data, dtype="<i2")) for f in frames]
                assert len({m[0] for m in marks if m}) == 1
                assert [m[2] for m in marks if m] == list(range(len(frames)))
    run(main())


def test_incremental_context_send_flush_end() -> None:
    async def main() -> None:
        async with running(text_delay_ms=60000) as server, VoxClient(url(server)) as c:
            ctx = c.open_context(sample_rate=24000)
            for piece in ["Hello ", "there, ", "this comes ", "in pieces"]:
                await ctx.send(piece)
            await ctx.flush("f1")  # the text delay is a minute: only the flush starts synthesis
            first = await anext(ctx)
            assert isinstance(first, (Start, Queued))
            await ctx.send(". And more.")
            await ctx.end()
            rest = await items(ctx)
            assert isinstance(rest[-1], Done) and rest[-1].segments == 2
            assert rest[-1].text_chars == len("Hello there, this comes in pieces. And more.")
            with pytest.raises(RuntimeError):
                await ctx.send("too late")
    run(main())


def test_cancel_stops_audio_and_frees_the_slot() -> None:
    async def main() -> None:
        async with running() as server, VoxClient(url(server)) as c:
            ctx = c.speak("A long text that takes a while to say. " * 20)
            n = 0
            got: list[Any] = []
            async for item in ctx:
                got.append(item)
                if isinstance(item, Audio):
                    n += 1
                    if n == 2:
                        await ctx.cancel()
            assert isinstance(got[-1], Cancelled) and ctx.cancelled is not None
            assert sum(isinstance(i, Audio) for i in got) == 2  # nothing after cancel()
            await slots_free(server.port)
            assert isinstance((await items(c.speak("Still usable.")))[-1], Done)
    run(main())


def test_context_errors_are_typed_and_keep_the_socket() -> None:
    async def main() -> None:
        async with running(max_text_chars=200) as server, VoxClient(url(server)) as c:
            cases: list[tuple[type[VoxError], Any]] = [
                (EmptyTextError, c.speak("   ")),
                (TextTooLongError, c.speak("x" * 201)),
                (UnsupportedFormatError, c.speak("Hi.", format="flac")),  # type: ignore[arg-type]
                (UnsupportedFormatError, c.speak("Hi.", sample_rate=12345)),
                (UnknownVoiceError, c.speak("Hi.", voice="nobody")),
                (BadMessageError, c.speak("Hi.", cfg_value=99.0)),
            ]
            for cls, ctx in cases:
                with pytest.raises(cls) as e:
                    await items(ctx)
                assert e.value.code == cls.code and e.value.context == ctx.id
            dup = c.open_context(context="same")
            await dup.send("Hello.")
            with pytest.raises(ContextExistsError):
                await items(c.speak("Again.", context="same"))
            await dup.end()
            assert isinstance((await items(dup))[-1], Done)
            assert not c.closed
    run(main())


def test_bad_option_is_a_typed_error() -> None:
    async def main() -> None:
        async with running() as server, VoxClient(url(server)) as c:
            with pytest.raises(BadOptionError) as e:
                await items(c.speak("Hi.", timestamps="sometimes"))
            assert e.value.context is not None
    run(main())


def test_too_many_contexts_and_busy() -> None:
    async def main() -> None:
        async with running(max_contexts=1) as server, VoxClient(url(server)) as c:
            long = c.speak("Keep talking for a while. " * 10)
            with pytest.raises(TooManyContextsError):
                await items(c.speak("One too many."))
            await long.cancel()
        async with running(max_num_seqs=1, max_queue=0) as server, VoxClient(url(server)) as c:
            long = c.speak("Keep talking for a while. " * 10)
            assert isinstance(await anext(long), Start)
            with pytest.raises(BusyError) as e:
                await items(c.speak("No room."))
            assert e.value.retry_after_ms is not None and e.value.retry_after_ms > 0
            await long.cancel()
    run(main())


def test_pacing_keeps_under_the_rate_limit_and_rate_limited_is_typed() -> None:
    async def main() -> None:
        async with running(rate_limit_per_s=5) as server:
            async with VoxClient(url(server)) as c:
                done = await asyncio.gather(*(c.speak(f"Line {i}.").wait() for i in range(14)))
                assert all(isinstance(d, Done) for d in done)
            async with VoxClient(url(server)) as c:
                c._pacer = _Pacer(None)  # a client that does not pace itself
                ctxs = [c.speak(f"Line {i}.") for i in range(14)]
                outcomes = await asyncio.gather(*(x.wait() for x in ctxs), return_exceptions=True)
                assert any(isinstance(o, RateLimitedError) for o in outcomes)
                assert not c.closed
    run(main())


def test_engine_error_and_engine_death() -> None:
    async def main() -> None:
        async with running(synthetic_fail_marker="KABOOM") as server, VoxClient(url(server)) as c:
            with pytest.raises(EngineError):
                await items(c.speak("This one goes KABOOM."))
            assert isinstance((await items(c.speak("This one is fine.")))[-1], Done)
        async with running(synthetic_crash_after_steps=3) as server, VoxClient(url(server)) as c:
            with pytest.raises(EngineError):
                await items(c.speak("The engine dies under this one. " * 5))
            await asyncio.wait_for(c.wait_closed(), 10)
            assert c.close_code == 1011
            with pytest.raises(ConnectionLost):
                await items(c.speak("After the socket closed."))
    run(main())


def test_socket_closing_errors() -> None:
    async def main() -> None:
        async with running(max_message_bytes=1024) as server, VoxClient(url(server)) as c:
            with pytest.raises(MessageTooBigError):
                await items(c.speak("word " * 400))
            await asyncio.wait_for(c.wait_closed(), 10)
            assert c.close_code == 1009
            with pytest.raises(MessageTooBigError):  # later contexts say why the socket is gone
                await items(c.speak("Hello."))
        async with running(idle_timeout_s=1) as server, VoxClient(url(server)) as c:
            await asyncio.wait_for(c.wait_closed(), 10)
            assert isinstance(c.error, IdleTimeoutError) and c.close_code == 1000
    run(main())


def test_handshake_statuses(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("s3cret\n")

    async def main() -> None:
        async with running(auth_token_file=str(token)) as server:
            for bad in (None, "wrong"):
                with pytest.raises(UnauthorizedError) as e:
                    await VoxClient(url(server), token=bad).connect()
                assert e.value.status == 401
            async with VoxClient(url(server), token="s3cret") as c:  # sent as Authorization: Bearer
                assert isinstance((await items(c.speak("Authorized.")))[-1], Done)
        async with running(allowed_origins=("https://app.example.com",)) as server:
            with pytest.raises(ForbiddenError) as f:
                await VoxClient(url(server), additional_headers={"Origin": "https://evil.example"}).connect()
            assert f.value.status == 403
        async with running(max_connections=1) as server, VoxClient(url(server)):
            with pytest.raises(UnavailableError) as u:
                await VoxClient(url(server)).connect()
            assert u.value.status == 503 and u.value.retry_after_s == 5
    run(main())


def test_going_away_mid_turn() -> None:
    async def main() -> None:
        async with running(drain_timeout_s=30) as server:
            seen: list[GoingAway] = []
            async with VoxClient(url(server), on_going_away=seen.append) as c:
                ctx = c.speak("This turn is in flight when the server starts draining. " * 3)
                got: list[Any] = [await anext(ctx)]
                server.drain()
                got += await items(ctx)
                # The turn in flight is told, then finishes with all its audio.
                assert any(isinstance(i, GoingAway) for i in got) and isinstance(got[-1], Done)
                assert seen and c.going_away is seen[0] and seen[0].deadline_ms == 30000
                await asyncio.wait_for(c.wait_closed(), 10)
                assert c.close_code == 1001
                with pytest.raises(ConnectionLost):
                    await items(c.speak("Too late."))
    run(main())


def test_new_context_while_draining_is_shutting_down() -> None:
    async def main() -> None:
        async with running(drain_timeout_s=30) as server, VoxClient(url(server)) as c:
            long = c.speak("Keep the socket busy while it drains. " * 6)
            await anext(long)
            server.drain()
            with pytest.raises(ShuttingDownError):
                await items(c.speak("A new turn."))
            assert isinstance((await items(long))[-1], Done)
    run(main())


def test_every_protocol_error_code_has_a_class() -> None:
    assert set(ERRORS) == set(ERROR_CODES) | {"bad_option"}
    for code, cls in ERRORS.items():
        err = error_from({"type": "error", "context": "c", "code": code, "message": "m", "retry_after_ms": 7})
        assert type(err) is cls and err.code == code and err.context == "c"
    busy = error_from({"type": "error", "context": None, "code": "busy", "message": "m", "retry_after_ms": 250})
    assert isinstance(busy, BusyError) and busy.retry_after_ms == 250
    assert type(error_from({"type": "error", "code": "new_code", "message": "m"})) is VoxError


def test_segments_map_back_to_the_text() -> None:
    async def main() -> None:
        async with running() as server:
            text = "First sentence here. Second sentence there."
            async with VoxClient(url(server)) as c:
                got = await items(c.speak(text))
            segs = [i for i in got if isinstance(i, Segment)]
            assert segs and segs[0].index == 0 and segs[0].audio_start_ms == 0
            assert all(s.text == text[s.source_start:s.source_end] for s in segs)
    run(main())


def test_word_timestamps() -> None:
    async def main() -> None:
        async with running() as server:
            text = "Good morning to you all."
            async with VoxClient(url(server)) as c:
                got = await items(c.speak(text, timestamps="word"))
            words = [w for i in got if isinstance(i, Words) for w in i.words]
            assert words == text.split()
            starts = [s for i in got if isinstance(i, Words) for s in i.start_ms]
            assert starts == sorted(starts)
            done = got[-1]
            assert isinstance(done, Done) and all(s <= done.audio_ms for s in starts)
    run(main())


def test_flushed_answers_each_flush_id() -> None:
    async def main() -> None:
        async with running(text_delay_ms=60000) as server, VoxClient(url(server)) as c:
            ctx = c.open_context()
            await ctx.send("Hello there.")
            await ctx.flush("f1")
            await ctx.flush(7)
            await ctx.end()
            got = await items(ctx)
            flushed = [i for i in got if isinstance(i, Flushed)]
            assert [f.flush_id for f in flushed] == ["f1", 7]
            assert isinstance(got[-1], Done)
    run(main())


def test_cancelled_says_up_to_where_it_spoke() -> None:
    async def main() -> None:
        async with running() as server, VoxClient(url(server)) as c:
            text = "First sentence here. Second sentence there. " * 4
            ctx = c.speak(text)
            async for item in ctx:
                if isinstance(item, Audio):
                    await ctx.cancel()
            assert ctx.cancelled is not None
            assert 0 <= ctx.cancelled.source_end <= len(text)
    run(main())
