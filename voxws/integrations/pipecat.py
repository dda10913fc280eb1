"""voxws as a Pipecat TTS service: `VoxWSTTSService` (install `voxws[pipecat]`).

    from voxws.integrations.pipecat import VoxWSTTSService
    tts = VoxWSTTSService(url="ws://127.0.0.1:8081/v1/tts", token=...)

Built the way Pipecat's own WebSocket TTS services are (a `WebsocketTTSService` with audio
contexts, the base class's reconnection), on `voxws.client`:
- one socket per service, opened at the pipeline's StartFrame; one voxws incremental context
  per Pipecat turn (Pipecat's context id is the voxws context id): every sentence of the turn is a
  `text` (plus `flush`, so synthesis starts at once), the end of the turn is `end`;
- audio is asked of the server at the pipeline's output rate (`sample_rate`), as 16-bit PCM, and
  goes out as TTSAudioRawFrame unchanged: nothing resamples it (only when the server does not offer
  that rate is it asked at the model's rate and resampled once, here);
- with `word_timestamps=True` the context asks for `timestamps: "word"` and the server's `words`
  become Pipecat's word-level TTSTextFrames, timed to the audio; a server that sends none still
  gets the turn's text out at the end of its audio (Pipecat completes untimed words then);
- an interruption cancels the voxws context: the server frees its engine slot within one engine
  step, and audio of that context still in flight is dropped by the client.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator
from typing import Any

from loguru import logger
from pipecat.frames.frames import (
    CancelFrame,
    EndFrame,
    ErrorFrame,
    Frame,
    StartFrame,
    TTSAudioRawFrame,
    TTSStoppedFrame,
)
from pipecat.services.settings import TTSSettings
from pipecat.services.tts_service import TextAggregationMode, WebsocketTTSService
from pipecat.transcriptions.language import Language

from voxws.client import Audio, Context, Done, ForbiddenError, UnauthorizedError, VoxClient, VoxError, Words

__all__ = ["VoxWSTTSService"]


class VoxWSTTSService(WebsocketTTSService):
    """Text to speech through a voxws server (see the module docstring)."""

    def __init__(
        self,
        *,
        url: str,
        token: str | None = None,
        voice: str | None = None,
        language: Language | str | None = None,
        normalize: bool | None = None,
        word_timestamps: bool = True,
        sample_rate: int | None = None,
        cfg_value: float | None = None,
        temperature: float | None = None,
        text_aggregation_mode: TextAggregationMode | None = None,
        **kwargs: Any,
    ):
        """
        Args:
            url: the server's WebSocket endpoint, e.g. ``ws://127.0.0.1:8081/v1/tts``.
            token: bearer token, when the server has one configured.
            voice: a registered voice id (None: the server's default voice).
            language: reading rules for normalization (``en``, ``zh``; anything else: ``auto``).
            normalize: expand numbers, dates, money... before synthesis (server default: on).
            word_timestamps: ask for word timestamps and push word-level TTSTextFrames.
            sample_rate: output rate; None: the pipeline's audio output rate.
            text_aggregation_mode: Pipecat's; SENTENCE (default) sends whole sentences and flushes each,
                TOKEN streams the LLM's tokens and leaves the cutting to the server's text buffer.
        """
        super().__init__(
            text_aggregation_mode=text_aggregation_mode,
            push_text_frames=not word_timestamps,
            push_start_frame=True,
            pause_frame_processing=False,
            sample_rate=sample_rate,
            settings=TTSSettings(model=None, voice=voice, language=language),
            **kwargs,
        )
        self._url = url
        self._token = token
        self._word_timestamps = word_timestamps
        self._normalize = normalize
        self._cfg_value = cfg_value
        self._temperature = temperature
        self._client: VoxClient | None = None
        self._contexts: dict[str, Context] = {}
        self._pumps: dict[str, asyncio.Task[None]] = {}
        self._server_rate: int | None = None  # what the server is asked for (differs only if it lacks ours)
        self._receive_task: asyncio.Task[None] | None = None
        # on_context_done(service, done: voxws.client.Done): a turn's audio is all out of the server (its last
        # frames may still be in Pipecat's audio-context queue: downstream, the turn's TTSStoppedFrame marks its end).
        self._register_event_handler("on_context_done")

    def can_generate_metrics(self) -> bool:
        return True

    def language_to_service_language(self, language: Language | str) -> str | None:
        base = str(language.value if isinstance(language, Language) else language).split("-")[0].lower()
        return base if base in ("zh", "en") else "auto"

    @property
    def client(self) -> VoxClient | None:
        """The voxws client of the current socket (None while disconnected)."""
        return self._client

    # -- lifecycle (Pipecat's WebsocketService contract) ----------------------

    async def start(self, frame: StartFrame) -> None:
        await super().start(frame)
        await self._connect()

    async def stop(self, frame: EndFrame) -> None:
        await super().stop(frame)
        await self._disconnect()

    async def cancel(self, frame: CancelFrame) -> None:
        await super().cancel(frame)
        await self._disconnect()

    async def _connect(self) -> None:
        await super()._connect()
        await self._connect_websocket()
        if self._client is not None and self._receive_task is None:
            self._receive_task = self.create_task(self._receive_task_handler(self._report_error))

    async def _disconnect(self) -> None:
        await super()._disconnect()
        if self._receive_task is not None:
            await self.cancel_task(self._receive_task)
            self._receive_task = None
        await self._disconnect_websocket()

    async def _connect_websocket(self) -> None:
        if self._client is not None and not self._client.closed:
            return
        try:
            client = await VoxClient(self._url, token=self._token, context_prefix="pc").connect()
        except (VoxError, OSError, asyncio.TimeoutError) as e:  # 3.10: not the builtin
            self._client = None
            # A refused token or origin is configuration that no retry fixes (Pipecat's "permanent" errors).
            permanent = isinstance(e, (UnauthorizedError, ForbiddenError))
            await self.push_error(error_msg=f"voxws: cannot connect to {self._url}: {e}", exception=e,
                                  force_treat_as_permanent=permanent)
            await self._call_event_handler("on_connection_error", str(e))
            return
        assert client.ready is not None
        rates = client.ready.sample_rates
        self._server_rate = self.sample_rate if self.sample_rate in rates else client.ready.sample_rate
        if self._server_rate != self.sample_rate:
            logger.warning(f"{self}: the server offers no {self.sample_rate} Hz output; asking for "
                           f"{self._server_rate} Hz and resampling once here")
        self._client = client
        await self._call_event_handler("on_connected")

    async def _disconnect_websocket(self) -> None:
        try:
            await self.stop_all_metrics()
            for task in list(self._pumps.values()):
                await self.cancel_task(task)
            self._pumps.clear()
            self._contexts.clear()
            if self._client is not None:
                await self._client.close()
        finally:
            self._client = None
            await self._call_event_handler("on_disconnected")

    async def _verify_connection(self) -> bool:
        return self._client is not None and not self._client.closed

    async def _receive_messages(self) -> None:
        # The client reads the socket and feeds each context's pump; this task only notices the socket
        # ending (server drain, network) so that Pipecat's reconnection logic takes over.
        if self._client is None:
            raise ConnectionError("voxws: not connected")
        await self._client.wait_closed()

    # -- turns ----------------------------------------------------------------

    def _open(self, context_id: str) -> Context:
        assert self._client is not None
        lang = self._settings.language
        ctx = self._client.open_context(
            context=context_id, format="pcm_s16le", sample_rate=self._server_rate,
            voice=self._settings.voice if isinstance(self._settings.voice, str) else None,
            language=self.language_to_service_language(lang) if isinstance(lang, str) else None,
            normalize=self._normalize,
            timestamps="word" if self._word_timestamps else None, cfg_value=self._cfg_value,
            temperature=self._temperature)
        self._contexts[context_id] = ctx
        self._pumps[context_id] = self.create_task(self._pump(ctx), name=f"voxws-{context_id}")
        return ctx

    async def run_tts(self, text: str, context_id: str) -> AsyncGenerator[Frame | None, None]:
        """Send one piece of the turn's text to its voxws context; audio comes back through the pump."""
        try:
            if self._client is None or self._client.closed:
                await self._connect()
            if self._client is None:
                yield ErrorFrame(error="voxws: not connected")
                return
            ctx = self._contexts.get(context_id)
            if ctx is None or ctx.finished:
                ctx = self._open(context_id)
            await ctx.send(text)
            if not self._is_streaming_tokens:
                await ctx.flush()  # a whole sentence: no reason to wait for the server's text delay
            await self.start_tts_usage_metrics(text)
            yield None
        except (VoxError, RuntimeError) as e:
            yield ErrorFrame(error=f"voxws: {e}")

    async def flush_audio(self, context_id: str | None = None) -> None:
        """The turn has all its text: end its voxws context."""
        cid = context_id or self.get_active_audio_context_id()
        ctx = self._contexts.get(cid) if cid else None
        if ctx is not None and not ctx.finished and not ctx.cancel_requested:
            with contextlib.suppress(RuntimeError):  # already ended
                await ctx.end()

    async def on_audio_context_interrupted(self, context_id: str) -> None:
        """Interruption: cancel the voxws context (slot freed within one engine step, its audio dropped)."""
        await self.stop_all_metrics()
        ctx = self._contexts.pop(context_id, None)
        if ctx is not None:
            await ctx.cancel()
        await super().on_audio_context_interrupted(context_id)

    async def _pump(self, ctx: Context) -> None:
        """One voxws context's items into its Pipecat audio context, in order."""
        cid = ctx.id
        try:
            async for item in ctx:
                if isinstance(item, Audio):
                    audio = item.data
                    if item.sample_rate != self.sample_rate:
                        audio = await self._resampler.resample(audio, item.sample_rate, self.sample_rate)
                    await self.append_to_audio_context(
                        cid, TTSAudioRawFrame(audio=audio, sample_rate=self.sample_rate, num_channels=1,
                                              context_id=cid))
                elif isinstance(item, Words):
                    times = zip(item.words, item.start_ms, strict=False)
                    await self.add_word_timestamps([(w, ms / 1000) for w, ms in times], cid)
                elif isinstance(item, Done):
                    await self.append_to_audio_context(cid, TTSStoppedFrame(context_id=cid))
                    await self.remove_audio_context(cid)
                    await self._call_event_handler("on_context_done", item)
        except VoxError as e:
            await self.push_error(error_msg=f"voxws: context {cid}: {e}", exception=e)
            if self.audio_context_available(cid):
                await self.append_to_audio_context(cid, TTSStoppedFrame(context_id=cid))
                await self.remove_audio_context(cid)
        finally:
            if self._contexts.get(cid) is ctx:
                del self._contexts[cid]
            self._pumps.pop(cid, None)
