"""/v1/voices: create, list, show and delete voices (PROTOCOL.md "Voices").

`routes(server)` returns Starlette routes; the app mounts them behind its guard (token, origin, readiness).
`server` needs `.settings` (max_upload_bytes, default_voice) and `.voices` (a voxws.voices.VoiceStore).

The upload is parsed here, as a stream, with python-multipart's MultipartParser rather than Starlette's
request.form(): form() enforces max_part_size only on fields without a filename and spools file parts to
disk with no limit at all, so a 10 GB upload would be written out before anyone looks at its size. Here
the body is refused from its Content-Length before a byte is read, or as soon as the bytes received pass
VOXWS_MAX_UPLOAD_BYTES; the audio part goes to an anonymous spooled temp file (memory up to 1 MB, then an
unlinked file that vanishes with the process), and decoding runs in a worker thread, bounded per process.

After an early 413 the server does not close the connection: uvicorn reads and discards the rest of the
body and the client reads the answer (closing with unread bytes would make the kernel send a reset that
can destroy the 413 before the client reads it).
"""

from __future__ import annotations

import functools
import tempfile
from typing import Any

import anyio
import structlog
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from voxws.voices import VoiceError, VoiceStore, check_id, valid_id

log = structlog.get_logger("voxws.voices")

FIELDS = ("audio", "text", "name", "id")
FIELD_MAX_BYTES = 16 * 1024  # text: 2000 characters of UTF-8 fit; name and id far less
MAX_PARTS = 16
SPOOL_BYTES = 1024 * 1024
DECODERS_PER_PROCESS = 2  # decoding is CPU work: keep it from taking every core from the engine's loop


def error(e: VoiceError) -> JSONResponse:
    return JSONResponse(e.to_json(), status_code=e.status)


def bad(message: str) -> VoiceError:
    return VoiceError("bad_request", message, 400)


class Upload:
    """Callbacks for MultipartParser: the four known parts, each at most once; others are skipped."""

    def __init__(self) -> None:
        self.fields: dict[str, bytearray] = {}
        self.audio: tempfile.SpooledTemporaryFile[bytes] | None = None
        self.parts = 0
        self.ended = False
        self._headers: dict[bytes, bytes] = {}
        self._hname = bytearray()
        self._hvalue = bytearray()
        self._current: str | None = None

    def callbacks(self) -> dict[str, Any]:
        return {"on_part_begin": self.on_part_begin, "on_header_field": self.on_header_field,
                "on_header_value": self.on_header_value, "on_header_end": self.on_header_end,
                "on_headers_finished": self.on_headers_finished, "on_part_data": self.on_part_data,
                "on_end": self.on_end}

    def on_part_begin(self) -> None:
        self.parts += 1
        if self.parts > MAX_PARTS:
            raise bad(f"multipart body: at most {MAX_PARTS} parts")
        self._headers = {}
        self._current = None

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._hname += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._hvalue += data[start:end]

    def on_header_end(self) -> None:
        self._headers[bytes(self._hname).lower().strip()] = bytes(self._hvalue)
        self._hname.clear()
        self._hvalue.clear()

    def on_headers_finished(self) -> None:
        disposition, params = parse_options_header(self._headers.get(b"content-disposition", b"").decode("latin-1"))
        if disposition != b"form-data" or b"name" not in params:
            raise bad("multipart body: every part needs Content-Disposition: form-data; name=...")
        name = params[b"name"].decode("latin-1")
        if name not in FIELDS:
            return  # unknown parts are ignored (their data is dropped)
        if name in self.fields or (name == "audio" and self.audio is not None):
            raise bad(f"multipart body: {name!r} given twice")
        self._current = name
        if name == "audio":
            self.audio = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)  # noqa: SIM115 (close())
        else:
            self.fields[name] = bytearray()

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._current == "audio":
            assert self.audio is not None
            self.audio.write(data[start:end])
        elif self._current is not None:
            buf = self.fields[self._current]
            if len(buf) + end - start > FIELD_MAX_BYTES:
                raise bad(f"{self._current}: at most {FIELD_MAX_BYTES} bytes")
            buf += data[start:end]

    def on_end(self) -> None:
        self.ended = True

    def text(self, name: str) -> str | None:
        raw = self.fields.get(name)
        if raw is None:
            return None
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise bad(f"{name}: must be UTF-8 text") from None

    def close(self) -> None:
        if self.audio is not None:
            self.audio.close()


async def read_upload(request: Request, limit: int) -> Upload:
    """The parsed multipart body, or VoiceError (too_large, bad_request)."""
    length = request.headers.get("content-length")
    if length is not None:
        if not length.strip().isdigit():
            raise bad("Content-Length: must be a number")
        if int(length) > limit:
            raise VoiceError("too_large", f"body: {int(length)} bytes; the limit is {limit}", 413)
    ctype, params = parse_options_header(request.headers.get("content-type", ""))
    if ctype != b"multipart/form-data" or not params.get(b"boundary"):
        raise bad("Content-Type: must be multipart/form-data with a boundary (curl -F audio=@me.wav -F text=...)")
    up = Upload()
    try:
        try:
            parser = MultipartParser(params[b"boundary"], up.callbacks())
        except (FormParserError, ValueError) as e:
            raise bad(f"Content-Type: bad boundary ({e})") from None
        got = 0
        async for chunk in request.stream():
            got += len(chunk)
            if got > limit:
                raise VoiceError("too_large", f"body: over the limit of {limit} bytes", 413)
            if chunk:
                parser.write(chunk)
        parser.finalize()
        if not up.ended:
            raise bad("multipart body: truncated (no closing boundary)")
        return up
    except FormParserError as e:
        up.close()
        raise bad(f"multipart body: malformed ({e.__class__.__name__})") from None
    except BaseException:
        up.close()
        raise


def routes(server: Any) -> list[BaseRoute]:
    limiter = anyio.CapacityLimiter(DECODERS_PER_PROCESS)

    def store() -> VoiceStore:
        return server.voices

    async def create(request: Request) -> Response:
        try:
            up = await read_upload(request, server.settings.max_upload_bytes)
        except VoiceError as e:
            return error(e)
        except ClientDisconnect:
            return Response(status_code=400)  # nobody reads it
        try:
            voice_id = (up.text("id") or "").strip() or None
            if voice_id is not None:
                check_id(voice_id)
            if up.audio is None:
                raise bad("audio: a file part named 'audio' is required (curl -F audio=@me.wav)")
            add = functools.partial(store().add, up.audio, up.text("text"), name=up.text("name"),
                                    voice_id=voice_id)
            voice = await anyio.to_thread.run_sync(add, limiter=limiter)
        except VoiceError as e:
            return error(e)
        finally:
            up.close()
        log.info("voice_added", voice=voice.id, duration_s=voice.duration_s)
        return JSONResponse(voice.to_json(), status_code=201)

    async def list_voices(request: Request) -> Response:
        voices = await anyio.to_thread.run_sync(store().list)
        default = server.settings.default_voice
        if default and not any(v.id == default for v in voices):
            default = None  # configured but not in the store: no voice is the default
        return JSONResponse({"voices": [v.to_json() for v in voices], "default": default})

    async def show(request: Request) -> Response:
        vid = request.path_params["voice_id"]
        voice = await anyio.to_thread.run_sync(store().get, vid)
        if voice is None:
            return error(VoiceError("unknown_voice", f"voice {vid!r} is not registered", 404))
        return JSONResponse(voice.to_json())

    async def delete(request: Request) -> Response:
        vid = request.path_params["voice_id"]
        if not valid_id(vid) or not await anyio.to_thread.run_sync(store().delete, vid):
            return error(VoiceError("unknown_voice", f"voice {vid!r} is not registered", 404))
        log.info("voice_deleted", voice=vid)
        return Response(status_code=204)

    return [
        Route("/v1/voices", create, methods=["POST"]),
        Route("/v1/voices", list_voices, methods=["GET"]),
        Route("/v1/voices/{voice_id}", show, methods=["GET"]),
        Route("/v1/voices/{voice_id}", delete, methods=["DELETE"]),
    ]


__all__ = ["read_upload", "routes"]
