"""voxws.v1 wire messages: parse and validate client frames, build server frames.

Pure functions, no I/O: the session feeds frames in and gets typed messages or a
ProtocolError (with its PROTOCOL.md code) out.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

from voxws.config import FORMATS, SAMPLE_RATES

PROTOCOL = "voxws.v1"
CONTEXT_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
DEFAULT_CONTEXT = "default"
CLIENT_TYPES = ("speak", "text", "flush", "end", "cancel", "ping")
MAX_SEED = 2**31 - 1
LANGUAGES = ("auto", "zh", "en")
TIMESTAMPS = ("none", "word")
BITRATES = (6_000, 512_000)  # bits per second accepted at all; each codec narrows it (codecs.check_bitrate)
FLUSH_ID_RE = re.compile(r"^.{1,64}$", re.DOTALL)
OPTION_KEYS = ("format", "sample_rate", "bitrate", "voice", "normalize", "language", "timestamps", "cfg_value",
               "temperature", "seed")

# code -> WebSocket close code (None: the socket stays open).
ERROR_CODES: dict[str, int | None] = {
    "bad_message": None,
    "empty_text": None,
    "text_too_long": None,
    "unsupported_format": None,
    "unknown_voice": None,
    "bad_option": None,
    "context_exists": None,
    "unknown_context": None,
    "too_many_contexts": None,
    "busy": None,
    "rate_limited": None,
    "slow_consumer": 1008,
    "engine_error": None,  # 1011 when the engine died: decided by the caller
    "unauthorized": 1008,
    "message_too_big": 1009,
    "idle_timeout": 1000,
    "shutting_down": None,
}


class ProtocolError(Exception):
    def __init__(self, code: str, message: str, context: str | None = None, **extra: Any):
        assert code in ERROR_CODES, code
        super().__init__(message)
        self.code = code
        self.message = message
        self.context = context
        self.extra = extra

    def frame(self) -> str:
        return error(self.code, self.message, self.context, **self.extra)


@dataclass(frozen=True)
class Options:
    """Per-context synthesis options (from `speak` or the first `text`)."""

    format: str = "pcm_s16le"
    sample_rate: int | None = None  # None: the engine's native rate
    bitrate: int | None = None  # mp3 / opus only; None: the codec's default
    voice: str | None = None  # None: the server's default voice
    normalize: bool = True
    language: str = "auto"
    timestamps: str = "none"
    cfg_value: float = 2.0
    temperature: float = 1.0
    seed: int | None = None


@dataclass(frozen=True)
class Message:
    type: str
    context: str | None = None  # None: absent in the frame
    text: str | None = None
    options: Options = field(default_factory=Options)
    has_options: bool = False  # any option field was present
    flush_id: str | int | None = None


def _bad(msg: str, context: str | None = None) -> ProtocolError:
    return ProtocolError("bad_message", msg, context)


def _number(obj: dict[str, Any], key: str, lo: float, hi: float, ctx: str | None) -> float | None:
    if key not in obj or obj[key] is None:
        return None
    v = obj[key]
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not lo <= v <= hi:
        raise _bad(f"`{key}` must be a number from {lo:g} to {hi:g}", ctx)
    return float(v)


def _choice(obj: dict[str, Any], key: str, allowed: tuple[str, ...], ctx: str | None) -> str | None:
    v = obj.get(key)
    if v is None:
        return None
    if not isinstance(v, str):
        raise _bad(f"`{key}` must be a string", ctx)
    if v not in allowed:
        raise ProtocolError("bad_option", f"`{key}` {v[:40]!r} is not one of {', '.join(allowed)}", ctx)
    return v


def _options(obj: dict[str, Any], ctx: str | None) -> tuple[Options, bool]:
    present = any(k in obj for k in OPTION_KEYS)
    fmt = obj.get("format", "pcm_s16le")
    if not isinstance(fmt, str):
        raise _bad("`format` must be a string", ctx)
    if fmt not in FORMATS:
        raise ProtocolError("unsupported_format", f"format {fmt[:40]!r} is not one of {', '.join(FORMATS)}", ctx)
    rate = obj.get("sample_rate")
    if rate is not None:
        if isinstance(rate, bool) or not isinstance(rate, int):
            raise _bad("`sample_rate` must be an integer", ctx)
        if rate not in SAMPLE_RATES:
            raise ProtocolError("unsupported_format", f"sample_rate {rate} is not one of {list(SAMPLE_RATES)}", ctx)
    bitrate = obj.get("bitrate")
    if bitrate is not None:
        if isinstance(bitrate, bool) or not isinstance(bitrate, int):
            raise _bad("`bitrate` must be an integer (bits per second)", ctx)
        lo, hi = BITRATES  # the codec narrows it when the context opens (codecs.check)
        if not lo <= bitrate <= hi:
            raise ProtocolError("bad_option", f"`bitrate` {bitrate} is not from {lo} to {hi} bits per second", ctx)
    voice = obj.get("voice")
    if voice is not None and not isinstance(voice, str):
        raise _bad("`voice` must be a string", ctx)
    norm = obj.get("normalize")
    if norm is not None and not isinstance(norm, bool):
        raise _bad("`normalize` must be true or false", ctx)
    language = _choice(obj, "language", LANGUAGES, ctx)
    timestamps = _choice(obj, "timestamps", TIMESTAMPS, ctx)
    cfg = _number(obj, "cfg_value", 0.0, 10.0, ctx)
    temp = _number(obj, "temperature", 0.0, 2.0, ctx)
    seed = obj.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED):
        raise _bad(f"`seed` must be an integer from 0 to {MAX_SEED}", ctx)
    opts = Options(
        format=fmt,
        sample_rate=rate,
        bitrate=bitrate,
        voice=voice or None,
        normalize=True if norm is None else norm,
        language=language or "auto",
        timestamps=timestamps or "none",
        cfg_value=2.0 if cfg is None else cfg,
        temperature=1.0 if temp is None else temp,
        seed=seed,
    )
    return opts, present


def parse(frame: str) -> Message:
    """Parse one text frame. Raises ProtocolError (bad_message, unsupported_format, ...).

    A frame that does not start with `{` is plain text to speak, so that typing lines
    into any WebSocket client speaks them. A frame that starts with `{` must be a
    valid JSON object with a known `type`.
    """
    if not frame.lstrip().startswith("{"):
        return Message("speak", text=frame)
    try:
        obj = json.loads(frame)
    except (ValueError, RecursionError):
        raise _bad("not valid JSON") from None
    if not isinstance(obj, dict):
        raise _bad("a JSON message must be an object")
    ctx = obj.get("context")
    if ctx is not None and (not isinstance(ctx, str) or not CONTEXT_RE.match(ctx)):
        raise _bad("`context` must be 1-64 characters of [A-Za-z0-9_.:-]")
    kind = obj.get("type")
    if not isinstance(kind, str) or kind not in CLIENT_TYPES:
        shown = kind[:40] if isinstance(kind, str) else kind
        raise _bad(f"unknown message type {shown!r}; expected one of {', '.join(CLIENT_TYPES)}", ctx)
    text = obj.get("text")
    if kind in ("speak", "text"):
        if not isinstance(text, str):
            raise _bad(f"`{kind}` needs `text` as a string", ctx)
        opts, present = _options(obj, ctx)
        return Message(kind, ctx, text, opts, present)
    if kind == "flush" and obj.get("flush_id") is not None:
        fid = obj["flush_id"]
        ok = (isinstance(fid, str) and FLUSH_ID_RE.match(fid)) or (isinstance(fid, int) and not isinstance(fid, bool))
        if not ok:
            raise _bad("`flush_id` must be a string of 1-64 characters or an integer", ctx)
        return Message(kind, ctx, flush_id=fid)
    return Message(kind, ctx)


def dumps(obj: dict[str, Any]) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def _dumps_client_text(obj: dict[str, Any]) -> str:
    """For frames that echo the client's text: a lone surrogate it sent (legal in JSON, not in UTF-8) is
    written as a JSON escape, so the frame stays valid UTF-8 and the offsets stay right."""
    frame = dumps(obj)
    try:
        frame.encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(obj, separators=(",", ":"))
    return frame


def ready(*, version: str, group: str, engine: str, model: str, sample_rate: int, default_voice: str | None,
          limits: dict[str, Any]) -> str:
    return dumps({
        "type": "ready", "protocol": PROTOCOL, "server": f"voxws/{version}", "group": group,
        "engine": engine, "model": model, "sample_rate": sample_rate, "formats": list(FORMATS),
        "sample_rates": list(SAMPLE_RATES), "default_voice": default_voice, "limits": limits,
    })


def queued(context: str, position: int) -> str:
    return dumps({"type": "queued", "context": context, "position": position})


def start(context: str, fmt: str, sample_rate: int) -> str:
    return dumps({"type": "start", "context": context, "format": fmt, "sample_rate": sample_rate, "channels": 1})


def segment(context: str, *, index: int, text: str, spoken: str, source_start: int, source_end: int,
            audio_start_ms: int) -> str:
    return _dumps_client_text({"type": "segment", "context": context, "index": index, "text": text, "spoken": spoken,
                  "source_start": source_start, "source_end": source_end, "audio_start_ms": audio_start_ms})


def words(context: str, *, words: list[str], start_ms: list[int], end_ms: list[int], source_start: list[int],
          source_end: list[int], estimated: bool) -> str:
    return _dumps_client_text({"type": "words", "context": context, "words": words, "start_ms": start_ms,
                               "end_ms": end_ms, "source_start": source_start, "source_end": source_end,
                               "estimated": estimated})


def flushed(context: str, flush_id: str | int | None) -> str:
    return dumps({"type": "flushed", "context": context, "flush_id": flush_id})


def done(context: str, *, audio_ms: int, ttfb_ms: int | None, chunks: int, text_chars: int,
         segments: int, voice: str | None) -> str:
    return dumps({"type": "done", "context": context, "audio_ms": audio_ms, "ttfb_ms": ttfb_ms,
                  "chunks": chunks, "text_chars": text_chars, "segments": segments, "voice": voice})


def cancelled(context: str, audio_ms: int, source_end: int) -> str:
    return dumps({"type": "cancelled", "context": context, "audio_ms": audio_ms, "source_end": source_end})


def error(code: str, message: str, context: str | None = None, **extra: Any) -> str:
    return dumps({"type": "error", "context": context, "code": code, "message": message, **extra})


def going_away(reason: str, deadline_ms: int) -> str:
    return dumps({"type": "going_away", "reason": reason, "deadline_ms": deadline_ms})


PONG = dumps({"type": "pong"})
