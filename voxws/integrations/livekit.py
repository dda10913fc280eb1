"""voxws as a LiveKit Agents TTS: `voxws.integrations.livekit.TTS` (install `voxws[livekit]`).

    from voxws.integrations import livekit as voxws_lk
    session = AgentSession(tts=voxws_lk.TTS(url="ws://127.0.0.1:8081/v1/tts"), ...)

Built like LiveKit's own WebSocket TTS plugins, on `voxws.client`:
- one socket per TTS instance, opened on first use and opened again when it has closed or the
  server said `going_away` (contexts still running on the old one finish there);
- `synthesize(text)` is one `speak` context; `stream()` is one incremental context: pushed text
  goes out as `text`, `flush()` as `flush`, `end_input()` as `end`;
- audio is asked of the server at this TTS's `sample_rate` as 16-bit PCM and pushed as is;
- with `word_timestamps=True` (default) the stream asks for `timestamps: "word"` and turns each
  `words` message into `TimedString`s (an aligned transcript); a server that sends none just gives
  no timed transcript;
- `aclose()` of a stream (an interruption) cancels its context: the server frees the engine slot
  within one engine step and no more of its audio is pushed.
voxws errors become LiveKit's APIError family (busy -> 429, retryable; unauthorized -> 401 ...), so
LiveKit's own retry policy applies.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from typing import Any

from livekit.agents import (
    DEFAULT_API_CONNECT_OPTIONS,
    APIConnectionError,
    APIConnectOptions,
    APIError,
    APIStatusError,
    APITimeoutError,
    tts,
    utils,
)
from livekit.agents.types import TimedString

from voxws.client import (
    Audio,
    BusyError,
    ConnectionLost,
    EmptyTextError,
    EngineError,
    HandshakeError,
    ShuttingDownError,
    UnauthorizedError,
    VoxClient,
    VoxError,
    Words,
)

__all__ = ["TTS", "ChunkedStream", "SynthesizeStream"]


def api_error(e: VoxError) -> APIError:
    """A voxws error as the LiveKit exception its retry policy understands."""
    if isinstance(e, BusyError):
        return APIStatusError(str(e), status_code=429, body=e.data, retryable=True)
    if isinstance(e, (ConnectionLost, ShuttingDownError)):
        return APIConnectionError(str(e), retryable=True)
    if isinstance(e, UnauthorizedError):
        return APIStatusError(str(e), status_code=401, retryable=False)
    if isinstance(e, HandshakeError):
        return APIStatusError(str(e), status_code=e.status, retryable=e.status >= 500)
    if isinstance(e, EngineError):
        return APIStatusError(str(e), status_code=500, retryable=True)
    return APIStatusError(str(e), status_code=400, body={"code": e.code}, retryable=False)


class TTS(tts.TTS):
    def __init__(
        self,
        *,
        url: str,
        token: str | None = None,
        voice: str | None = None,
        sample_rate: int = 24000,
        language: str | None = None,
        normalize: bool | None = None,
        word_timestamps: bool = True,
        cfg_value: float | None = None,
        temperature: float | None = None,
    ) -> None:
        """
        Args:
            url: the server's WebSocket endpoint, e.g. ``ws://127.0.0.1:8081/v1/tts``.
            token: bearer token, when the server has one configured.
            voice: a registered voice id (None: the server's default voice).
            sample_rate: output rate; the server resamples to it (one of its `ready.sample_rates`).
            language: ``auto``, ``en`` or ``zh``: reading rules for normalization.
            word_timestamps: ask for word timestamps in `stream()` (aligned transcripts).
        """
        super().__init__(capabilities=tts.TTSCapabilities(streaming=True, aligned_transcript=word_timestamps),
                         sample_rate=sample_rate, num_channels=1)
        self._url = url
        self._token = token
        self._word_timestamps = word_timestamps
        self._opts: dict[str, Any] = {"voice": voice, "language": language, "normalize": normalize,
                                      "cfg_value": cfg_value, "temperature": temperature}
        self._client: VoxClient | None = None
        self._lock = asyncio.Lock()
        self._old: set[VoxClient] = set()  # draining sockets still finishing contexts
        self._tasks: set[asyncio.Task[None]] = set()  # held so that they are not collected mid-way

    @property
    def model(self) -> str:
        return self._client.ready.model if self._client and self._client.ready else "voxcpm1.5"

    @property
    def provider(self) -> str:
        return "voxws"

    async def client(self, timeout: float) -> VoxClient:
        """The shared socket, (re)opened when it is closed or its server is draining."""
        async with self._lock:
            c = self._client
            if c is not None and not c.closed and c.going_away is None:
                return c
            if c is not None and not c.closed:
                self._old.add(c)  # let it finish its contexts; it closes itself
                self._spawn(self._close_when_idle(c))
            try:
                self._client = c = await asyncio.wait_for(
                    VoxClient(self._url, token=self._token, context_prefix="lk").connect(), timeout)
            except asyncio.TimeoutError as e:  # 3.10: not the builtin TimeoutError
                raise APITimeoutError(f"voxws: no answer from {self._url}") from e
            except OSError as e:
                raise APIConnectionError(f"voxws: cannot connect to {self._url}: {e}") from e
            except VoxError as e:
                raise api_error(e) from e
            assert c.ready is not None
            if self.sample_rate not in c.ready.sample_rates:
                raise APIStatusError(f"voxws: the server offers no {self.sample_rate} Hz output "
                                     f"({list(c.ready.sample_rates)})", status_code=400, retryable=False)
            return c

    async def _close_when_idle(self, c: VoxClient) -> None:
        with contextlib.suppress(Exception):
            await c.wait_closed()
        self._old.discard(c)

    def prewarm(self) -> None:
        """Open the socket ahead of the first request (from a running event loop)."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop yet: the first request opens the socket
        self._spawn(self._prewarm())

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _prewarm(self) -> None:
        with contextlib.suppress(Exception):
            await self.client(DEFAULT_API_CONNECT_OPTIONS.timeout)

    def options(self, timestamps: bool) -> dict[str, Any]:
        return {**self._opts, "format": "pcm_s16le", "sample_rate": self.sample_rate,
                "timestamps": "word" if timestamps else None}

    def synthesize(self, text: str, *,
                   conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS) -> ChunkedStream:
        return ChunkedStream(tts=self, input_text=text, conn_options=conn_options)

    def stream(self, *, conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS) -> SynthesizeStream:
        return SynthesizeStream(tts=self, conn_options=conn_options)

    async def aclose(self) -> None:
        """Close the socket: every open context ends and the server frees its slots."""
        for c in [self._client, *self._old]:
            if c is not None:
                await c.close()
        self._client = None
        self._old.clear()


class ChunkedStream(tts.ChunkedStream):
    """`synthesize()`: the whole text in one `speak` context."""

    def __init__(self, *, tts: TTS, input_text: str, conn_options: APIConnectOptions) -> None:
        super().__init__(tts=tts, input_text=input_text, conn_options=conn_options)
        self._vtts = tts

    async def _run(self, output_emitter: tts.AudioEmitter) -> None:
        client = await self._vtts.client(self._conn_options.timeout)
        ctx = client.speak(self.input_text, **self._vtts.options(False))
        output_emitter.initialize(request_id=ctx.id, sample_rate=self._vtts.sample_rate, num_channels=1,
                                  mime_type="audio/pcm")
        try:
            async for item in ctx:
                if isinstance(item, Audio):
                    output_emitter.push(item.data)
            output_emitter.flush()
        except EmptyTextError:
            if self.input_text.strip():
                raise APIStatusError("voxws: nothing speakable in the text", status_code=400,
                                     retryable=False) from None
        except VoxError as e:
            raise api_error(e) from e
        finally:
            if not ctx.finished:
                await ctx.cancel()  # closed or cancelled by the caller: free the server's slot


class SynthesizeStream(tts.SynthesizeStream):
    """`stream()`: one incremental context for the whole stream."""

    def __init__(self, *, tts: TTS, conn_options: APIConnectOptions) -> None:
        super().__init__(tts=tts, conn_options=conn_options)
        self._vtts = tts

    async def _run(self, output_emitter: tts.AudioEmitter) -> None:
        client = await self._vtts.client(self._conn_options.timeout)
        timed = self._vtts._word_timestamps
        ctx = client.open_context(**self._vtts.options(timed))
        output_emitter.initialize(request_id=ctx.id, sample_rate=self._vtts.sample_rate, num_channels=1,
                                  mime_type="audio/pcm", stream=True)
        output_emitter.start_segment(segment_id=ctx.id)
        source: list[str] = []  # the context's source text: word offsets index into it

        async def send() -> None:
            sent = False
            async for data in self._input_ch:
                if isinstance(data, self._FlushSentinel):
                    if sent:
                        await ctx.flush()
                    continue
                self._mark_started()
                source.append(data)
                await ctx.send(data)
                sent = True
            if sent:
                await ctx.end()
            else:
                await ctx.cancel()  # no text at all: nothing to say

        async def receive() -> None:
            text_end = 0
            async for item in ctx:
                if isinstance(item, Audio):
                    output_emitter.push(item.data)
                elif isinstance(item, Words):
                    text_end = self._push_words(output_emitter, item, "".join(source), text_end)
            output_emitter.end_segment()

        sender = asyncio.create_task(send(), name="voxws-lk-send")
        try:
            await receive()
            await sender
        except EmptyTextError:
            if "".join(source).strip():
                raise APIStatusError("voxws: nothing speakable in the text", status_code=400,
                                     retryable=False) from None
            output_emitter.end_segment()
        except VoxError as e:
            raise api_error(e) from e
        finally:
            await utils.aio.cancel_and_wait(sender)
            if not ctx.finished:
                await ctx.cancel()  # aclose()/interruption: the server frees the slot, its audio is dropped

    @staticmethod
    def _push_words(emitter: tts.AudioEmitter, w: Words, source: str, text_end: int) -> int:
        """Each word as a TimedString that carries the source text since the previous word (its
        spaces and punctuation included), so the transcript reads exactly as the text sent."""
        out = []
        for word, start, end, s_end in zip(w.words, w.start_ms, w.end_ms, w.source_end, strict=False):
            piece = source[text_end:s_end] if s_end > text_end else word
            text_end = max(text_end, s_end)
            out.append(TimedString(piece, start_time=start / 1000, end_time=end / 1000))
        if out:
            emitter.push_timed_transcript(out)
        return text_end

