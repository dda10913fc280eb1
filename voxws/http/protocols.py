"""The two uvicorn protocol classes voxws serves with (uvicorn's `http=` / `ws=` accept a class).

`WebSocket` is uvicorn's `websockets-sansio` implementation (the `websockets` library's ServerProtocol
parses and checks every frame; uvicorn 0.54 awaits the transport's writability in `send`, so a client that
stops reading blocks its writer instead of filling memory), with three additions the ASGI surface lacks:

- a last word: when the library fails a connection for a frame over `max_size` (1009) or a text frame
  that is not UTF-8 (1007), the client first gets the `error` message that says why, then the close;
- the library's own write limit (32 KiB, as `websockets` has it) and a 5 s close handshake;
- `scope["extensions"]["voxws.socket"]`: a `Socket` through which the one owner of the connection
  (voxws.http.ws) can see the write buffer and drop a peer that does not take its close frame.

`Http` is uvicorn's h11 protocol with a deadline for the request head: a client that opens a
connection and never finishes its request (slowloris) is dropped after HEAD_TIMEOUT_S.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.frames import CloseCode, Frame, Opcode

from voxws import protocol

HEAD_TIMEOUT_S = 10.0  # a request head (the WebSocket handshake included) must arrive within this
CLOSE_TIMEOUT_S = 5.0  # for the peer's close frame
WRITE_LIMIT = 32 * 1024  # the transport's high-water mark: past it, send() waits
EXTENSION = "voxws.socket"
_LAST_WORDS = {CloseCode.MESSAGE_TOO_BIG: ("message_too_big", "frame over the limit"),
               CloseCode.INVALID_DATA: ("bad_message", "text frame is not UTF-8")}


class Socket:
    """The TCP side of one WebSocket, for its owner: buffer size, drop, end."""

    __slots__ = ("_proto", "closed", "refused")

    def __init__(self, proto: WebSocket):
        self._proto = proto
        self.closed: asyncio.Future[None] = proto.loop.create_future()
        self.refused: str | None = None  # the error code of a last word, when the library closed the socket

    def write_buffer_size(self) -> int:
        t = self._proto.transport
        return 0 if t is None or t.is_closing() else t.get_write_buffer_size()

    @property
    def closing(self) -> bool:
        """A close frame went out (ours or the library's) or the connection is gone: nothing more can be sent."""
        return self._proto.close_sent or self._proto.disconnected

    def abort(self) -> None:
        """Drop the TCP connection now (the peer sees a reset): for a peer that does not read."""
        if self._proto.transport is not None:
            self._proto.transport.abort()

    async def wait_closed(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(asyncio.shield(self.closed), timeout)
            return True
        except asyncio.TimeoutError:
            return False


class WebSocket(WebSocketsSansIOProtocol):
    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.close_timeout = CLOSE_TIMEOUT_S
        self.socket = Socket(self)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.transport.set_write_buffer_limits(high=WRITE_LIMIT)

    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        scope = getattr(self, "scope", None)
        if scope is not None:  # the handshake is valid: the app runs and may use the socket
            scope["extensions"][EXTENSION] = self.socket

    def handle_parser_exception(self) -> None:
        close = self.conn.close_sent
        word = _LAST_WORDS.get(close.code) if close is not None else None  # type: ignore[call-overload]
        if word is not None and self.handshake_complete and not self.close_sent and not self.disconnected:
            # The library has queued its close frame; our frame goes out first (no extensions: deflate is off).
            code, what = word
            self.socket.refused = code
            text = protocol.error(code, f"{what} ({close.reason})")  # type: ignore[union-attr]
            self.transport.write(Frame(Opcode.TEXT, text.encode()).serialize(mask=False))
        super().handle_parser_exception()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if not self.socket.closed.done():
            self.socket.closed.set_result(None)


class Http(H11Protocol):
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_timer: asyncio.TimerHandle | None = self.loop.call_later(HEAD_TIMEOUT_S, self._head_timeout)

    def handle_events(self) -> None:
        super().handle_events()
        if self._head_timer is not None and self.scope is not None:  # a request head arrived
            self._head_timer.cancel()
            self._head_timer = None

    def connection_lost(self, exc: Exception | None) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        super().connection_lost(exc)

    def _head_timeout(self) -> None:
        self._head_timer = None
        if self.scope is None and not self.transport.is_closing():
            self.transport.close()
