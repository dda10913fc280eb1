"""OpenAI-compatible speech: `POST /v1/audio/speech`, `GET /v1/audio/voices`, `GET /v1/models`.

What the official SDKs and the tools built on them send, mapped onto the same core as the WebSocket
(voxws/speech.py): the body streams as the engine makes audio, long input is segmented in one voice,
admission and drain behave as on the WebSocket (429 with Retry-After, 503), and a client that goes away
mid-body frees its engine slot before the next step. Errors have OpenAI's shape (voxws.http.errors).
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from voxws.http.errors import openai_error
from voxws.protocol import LANGUAGES, Options, ProtocolError
from voxws.shared import OPENAI_VOICES
from voxws.speech import Speech, SpeechFailed

if TYPE_CHECKING:
    from voxws.server import Server

MODEL_ID = "voxcpm-1.5"
# response_format -> (voxws format, sample rate (None: the model's own), media type)
FORMATS: dict[str, tuple[str, int | None, str]] = {
    "mp3": ("mp3", None, "audio/mpeg"),
    "opus": ("opus", 48000, "audio/ogg"),
    "aac": ("aac", None, "audio/aac"),
    "flac": ("flac", None, "audio/flac"),
    "wav": ("wav", None, "audio/wav"),
    "pcm": ("pcm_s16le", 24000, "audio/pcm"),  # OpenAI's pcm: 24 kHz 16-bit mono; 44.1 kHz would play too fast
}
STATUS = {"empty_text": 400, "text_too_long": 400, "unknown_voice": 400, "bad_option": 400,
          "unsupported_format": 400, "shutting_down": 503, "busy": 429, "engine_error": 500}


class BadRequest(Exception):
    def __init__(self, message: str, param: str | None, code: str = "bad_request", status: int = 400):
        super().__init__(message)
        self.message, self.param, self.code, self.status = message, param, code, status


async def _body(request: Request, limit: int) -> dict[str, Any]:
    """The JSON body, refused from Content-Length or while it streams once over `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BadRequest(f"request body over {limit} bytes", None, "too_large", 413)
    data = bytearray()
    async for piece in request.stream():
        data += piece
        if len(data) > limit:
            raise BadRequest(f"request body over {limit} bytes", None, "too_large", 413)
    try:
        obj = json.loads(data)
    except (ValueError, RecursionError):
        raise BadRequest("the body must be a JSON object", None) from None
    if not isinstance(obj, dict):
        raise BadRequest("the body must be a JSON object", None)
    return obj


def _field(obj: dict[str, Any], key: str, kind: type | tuple[type, ...], default: Any = None,
           required: bool = False) -> Any:
    value = obj.get(key, default)
    if value is None:
        if required:
            raise BadRequest(f"`{key}` is required", key)
        return default
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise BadRequest(f"`{key}` has the wrong type", key)
    return value


def _options(obj: dict[str, Any]) -> tuple[str, Options, str]:
    """(input, options, stream_format) from an OpenAI speech request; raises BadRequest."""
    text = _field(obj, "input", str, required=True)
    voice = _field(obj, "voice", str, required=True)
    _field(obj, "model", str)
    fmt = _field(obj, "response_format", str, "mp3")
    if fmt not in FORMATS:
        raise BadRequest(f"response_format {fmt[:40]!r} is not one of {', '.join(FORMATS)}", "response_format")
    speed = _field(obj, "speed", (int, float), 1.0)
    if not math.isfinite(speed) or not 0.25 <= speed <= 4.0:
        raise BadRequest("`speed` must be from 0.25 to 4.0", "speed")
    if speed != 1.0:
        raise BadRequest("`speed` other than 1.0 is not supported: voxws does not time-stretch the voice "
                         "(a stretched clone sounds worse than a player's own playback rate)", "speed")
    stream_format = _field(obj, "stream_format", str, "audio")
    if stream_format not in ("audio", "sse"):
        raise BadRequest("`stream_format` must be audio or sse", "stream_format")
    normalize = _field(obj, "normalize", bool, True)
    language = _field(obj, "language", str, "auto")
    if language not in LANGUAGES:
        raise BadRequest(f"`language` must be one of {', '.join(LANGUAGES)}", "language")
    codec, rate, _ = FORMATS[fmt]
    return text, Options(format=codec, sample_rate=rate, voice=voice, normalize=normalize, language=language), \
        stream_format


def routes(server: Server) -> list[BaseRoute]:
    shared = server.shared

    async def speech(request: Request) -> Response:
        try:
            obj = await _body(request, server.settings.max_message_bytes)
            text, opts, stream_format = _options(obj)
            sp = Speech(shared, text, opts)
        except BadRequest as e:
            return openai_error(e.status, e.code, e.message, e.param)
        except ProtocolError as e:
            param = "voice" if e.code == "unknown_voice" else "input"
            return openai_error(STATUS.get(e.code, 400), e.code, e.message, param,
                                {"Retry-After": "5"} if e.code == "shutting_down" else None)
        try:
            await sp.first()
        except SpeechFailed as e:
            headers = {"Retry-After": str(max(1, math.ceil((e.retry_after_ms or 1000) / 1000)))} \
                if e.code == "busy" else None
            return openai_error(STATUS.get(e.code, 500), e.code, e.message, None, headers)
        except BaseException:
            sp.stop()
            raise
        fmt = obj.get("response_format", "mp3")
        if stream_format == "sse":
            return StreamingResponse(_sse(sp, len(text)), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-store"})
        return StreamingResponse(_audio(sp), media_type=FORMATS[fmt][2], headers={"Cache-Control": "no-store"})

    async def voices(request: Request) -> Response:
        listed = [{"id": v.id, "name": v.name or v.id} for v in getattr(shared.voices, "list", list)()]
        have = {v["id"] for v in listed}
        listed += [{"id": name, "name": f"{name} (the server's default voice)"} for name in sorted(OPENAI_VOICES)
                   if name not in have]
        return JSONResponse({"voices": listed})

    async def models(request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [
            {"id": MODEL_ID, "object": "model", "created": 0, "owned_by": "voxws"}]})

    return [Route("/v1/audio/speech", speech, methods=["POST"]),
            Route("/v1/audio/voices", voices, methods=["GET"]),
            Route("/v1/models", models, methods=["GET"])]


async def _audio(sp: Speech) -> AsyncIterator[bytes]:
    try:
        async for payload in sp:
            yield payload
    finally:
        sp.stop()  # the client went away, or all was sent: nothing of it stays in the engine


async def _sse(sp: Speech, chars: int) -> AsyncIterator[bytes]:
    """OpenAI's SSE stream: `speech.audio.delta` events with base64 audio, then `speech.audio.done`."""
    try:
        async for payload in sp:
            event = {"type": "speech.audio.delta", "audio": base64.b64encode(payload).decode()}
            yield f"data: {json.dumps(event)}\n\n".encode()
        done = {"type": "speech.audio.done",
                "usage": {"input_tokens": chars, "output_tokens": sp.ctx.chunks, "total_tokens": chars + sp.ctx.chunks}}
        yield f"data: {json.dumps(done)}\n\n".encode()
    finally:
        sp.stop()
