"""VoxWSTTSService in a real Pipecat pipeline (frame source -> TTS -> sink, no transport) against a real
voxws server on the synthetic engine."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

pytest.importorskip("pipecat")

from pipecat.frames.frames import (
    EndFrame,
    ErrorFrame,
    Frame,
    InterruptionFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
    StartFrame,
    TTSAudioRawFrame,
    TTSStoppedFrame,
    TTSTextFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.workers.runner import WorkerRunner

from tests.agentutil import slots_free, slots_in_use
from tests.conftest import running, url
from tests.wsclient import until
from voxws.client import Done
from voxws.integrations.pipecat import VoxWSTTSService
from voxws.server import Server

TURN_ONE = ["Hello there. ", "This is the first turn, ", "and it is spoken in full."]
TURN_TWO = ["This second turn is long. " * 6, "It goes on and on, so that the interruption lands in its middle. " * 3]


class Source(FrameProcessor):
    """The head of the pipeline: keeps what comes back upstream (errors)."""

    def __init__(self) -> None:
        super().__init__()
        self.up: list[Frame] = []

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if direction == FrameDirection.UPSTREAM:
            self.up.append(frame)
        await self.push_frame(frame, direction)

    def errors(self) -> list[str]:
        return [f.error for f in self.up if isinstance(f, ErrorFrame)]


class Sink(FrameProcessor):
    """The end of the pipeline: keeps every downstream frame in order."""

    def __init__(self) -> None:
        super().__init__()
        self.frames: list[Frame] = []

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if direction == FrameDirection.DOWNSTREAM and not isinstance(frame, StartFrame):
            self.frames.append(frame)
        await self.push_frame(frame, direction)

    def audio(self, context_id: str | None = None) -> list[TTSAudioRawFrame]:
        return [f for f in self.frames if isinstance(f, TTSAudioRawFrame)
                and (context_id is None or f.context_id == context_id)]

    def stopped(self, context_id: str) -> bool:
        return any(isinstance(f, TTSStoppedFrame) and f.context_id == context_id for f in self.frames)


@dataclass
class Bot:
    server: Server
    tts: VoxWSTTSService
    sink: Sink
    source: Source
    worker: PipelineWorker
    done: dict[str, Done] = field(default_factory=dict)

    async def say(self, pieces: list[str]) -> None:
        await self.worker.queue_frames([LLMFullResponseStartFrame(), *(LLMTextFrame(p) for p in pieces),
                                        LLMFullResponseEndFrame()])

    async def turn_played(self, timeout: float = 20) -> str:
        """Until the first turn's audio is all in the sink; its context id.

        `on_context_done` says the server has sent the whole turn, not that the sink has it: the frames
        still cross Pipecat's audio-context queue and the sink's own input queue. The turn's
        TTSStoppedFrame comes after all its audio, in order, so it is the sink's marker."""
        await until(lambda: len(self.done) == 1, timeout)
        cid = next(iter(self.done))
        await until(lambda: self.sink.stopped(cid), 10)
        return cid

    async def slots_in_use(self) -> float:
        return await slots_in_use(self.server.port)

    async def until_slots_free(self) -> None:
        await slots_free(self.server.port)


@contextlib.asynccontextmanager
async def _bot(rate: int = 24000, server_settings: dict[str, object] | None = None,
               **tts_kw: object) -> AsyncIterator[Bot]:
    async with running(**(server_settings or {})) as server:
        tts = VoxWSTTSService(url=url(server), **tts_kw)  # type: ignore[arg-type]
        source, sink = Source(), Sink()
        worker = PipelineWorker(Pipeline([source, tts, sink]), params=PipelineParams(audio_out_sample_rate=rate),
                                cancel_on_idle_timeout=False)
        bot = Bot(server, tts, sink, source, worker)

        @tts.event_handler("on_context_done")
        async def _done(service: VoxWSTTSService, done: Done) -> None:
            bot.done[done.context] = done

        runner = WorkerRunner(handle_sigint=False)
        await runner.add_workers(worker)
        run = asyncio.create_task(runner.run())
        try:
            await until(lambda: tts.client is not None or bool(source.errors()), 20)
            yield bot
        finally:
            await worker.queue_frame(EndFrame())
            try:
                await asyncio.wait_for(run, 20)
            except TimeoutError:
                await worker.cancel()
                await run


def turn_ids(sink: Sink) -> list[str]:
    ids: list[str] = []
    for f in sink.audio():
        if f.context_id not in ids:
            ids.append(f.context_id)  # type: ignore[arg-type]
    return ids


def test_two_turns_second_interrupted() -> None:
    asyncio.run(_two_turns())


async def _two_turns() -> None:
    async with _bot(24000) as bot:
        await bot.say(TURN_ONE)
        await until(lambda: len(turn_ids(bot.sink)) == 1 and bot.sink.stopped(turn_ids(bot.sink)[0]), 30)
        one = turn_ids(bot.sink)[0]
        await until(lambda: one in bot.done, 10)
        done = bot.done[one]
        frames = bot.sink.audio(one)
        # Every frame of turn one, at the pipeline's rate, straight from the server (no resampling).
        assert len(frames) == done.chunks
        assert all(f.sample_rate == 24000 and f.num_channels == 1 for f in frames)
        assert sum(len(f.audio) for f in frames) // 2 == pytest.approx(done.audio_ms * 24, abs=24)

        await bot.say(TURN_TWO)
        await until(lambda: len(turn_ids(bot.sink)) == 2 and len(bot.sink.audio(turn_ids(bot.sink)[1])) >= 3, 30)
        two = turn_ids(bot.sink)[1]
        await bot.worker.queue_frame(InterruptionFrame())
        await until(lambda: any(isinstance(f, InterruptionFrame) for f in bot.sink.frames), 10)
        # The slot is given back (the server cancels the engine request)...
        await bot.until_slots_free()
        await asyncio.sleep(0.5)  # room for any stale frame to (wrongly) arrive
        cut = next(i for i, f in enumerate(bot.sink.frames) if isinstance(f, InterruptionFrame))
        # ... and no audio of turn two follows the interruption.
        assert not [f for f in bot.sink.frames[cut:] if isinstance(f, TTSAudioRawFrame) and f.context_id == two]
        assert two not in bot.done
        assert await bot.slots_in_use() == 0


def test_native_rate_and_word_text_frames_without_server_words() -> None:
    asyncio.run(_native_rate())


async def _native_rate() -> None:
    # The server today sends no `words`: the turn's text still comes out (Pipecat completes it at the end).
    async with _bot(44100) as bot:
        await bot.say(["Good morning. ", "How are you today?"])
        await until(lambda: bool(turn_ids(bot.sink)) and bot.sink.stopped(turn_ids(bot.sink)[0]), 30)
        frames = bot.sink.audio()
        assert frames and all(f.sample_rate == 44100 for f in frames)
        text = " ".join(f.text for f in bot.sink.frames if isinstance(f, TTSTextFrame))
        assert "Good morning." in text and "today?" in text


def test_rate_the_server_lacks_is_resampled_once() -> None:
    asyncio.run(_other_rate())


async def _other_rate() -> None:
    async with _bot(12000) as bot:
        await bot.say(["One more sentence."])
        await until(lambda: bool(turn_ids(bot.sink)) and bot.sink.stopped(turn_ids(bot.sink)[0]), 30)
        assert all(f.sample_rate == 12000 for f in bot.sink.audio())


def test_context_errors_become_error_frames_and_the_next_turn_speaks() -> None:
    async def main() -> None:
        async with _bot(24000, server_settings={"synthetic_fail_marker": "KABOOM"}) as bot:
            await bot.say(["This turn goes KABOOM."])
            await until(lambda: any("engine_error" in e for e in bot.source.errors()), 20)
            await bot.say(["This one is fine."])
            cid = await bot.turn_played()
            assert len(bot.sink.audio(cid)) == bot.done[cid].chunks
            assert not bot.tts.client.closed  # type: ignore[union-attr]
        async with _bot(24000, voice="nobody") as bot:
            await bot.say(["Hello."])
            await until(lambda: any("unknown_voice" in e for e in bot.source.errors()), 20)
            assert not bot.sink.audio()
    asyncio.run(main())


def test_going_away_mid_turn_finishes_the_turn() -> None:
    async def main() -> None:
        async with _bot(24000, server_settings={"drain_timeout_s": 30}) as bot:
            await bot.say(TURN_TWO)
            await until(lambda: len(bot.sink.audio()) >= 2, 20)
            bot.server.drain()
            cid = await bot.turn_played(30)
            assert len(bot.sink.audio(cid)) == bot.done[cid].chunks  # every frame of the turn, despite the drain
            # Then the server closes the socket (1001) and Pipecat's reconnection takes over.
    asyncio.run(main())


def test_word_frames_follow_server_words() -> None:
    async def main() -> None:
        async with _bot(24000) as bot:
            await bot.say(["Good morning to you all."])
            await until(lambda: bool(turn_ids(bot.sink)) and bot.sink.stopped(turn_ids(bot.sink)[0]), 30)
            words = [f for f in bot.sink.frames if isinstance(f, TTSTextFrame)]
            assert [f.text for f in words] == ["Good", "morning", "to", "you", "all."]
            assert all(f.pts for f in words)  # timed to the audio
    asyncio.run(main())


def test_refused_token_is_a_permanent_error(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("s3cret")

    async def main() -> None:
        async with _bot(24000, server_settings={"auth_token_file": str(token)}, token="wrong") as bot:
            await until(lambda: any("unauthorized" in e for e in bot.source.errors()), 20)
            assert bot.tts.client is None and not bot.tts.is_usable
        async with _bot(24000, server_settings={"auth_token_file": str(token)}, token="s3cret") as bot:
            await bot.say(["Authorized."])
            await until(lambda: len(bot.done) == 1, 20)
    asyncio.run(main())
