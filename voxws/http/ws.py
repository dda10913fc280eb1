"""`/v1/tts`: one WebSocket, one Session. This module owns the socket: it is the only code that closes it
(the session asks through its Transport; a failed handler closes 1011 here; a peer that takes no close
frame is dropped here). The library closes on its own only for protocol violations (1009, 1007, with the
last word of voxws.http.protocols first), keepalive timeouts and uvicorn's shutdown of leftovers."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import structlog
from starlette.routing import BaseRoute, WebSocketRoute
from starlette.types import Receive, Scope, Send

from voxws import protocol
from voxws.http.protocols import CLOSE_TIMEOUT_S, EXTENSION, Socket
from voxws.session import Session

if TYPE_CHECKING:
    from voxws.server import Server

log = structlog.get_logger("voxws.server")
WS_PATH = "/v1/tts"


class AsgiTransport:
    """The session's Transport over ASGI: send a frame, close with a code (within a deadline)."""

    __slots__ = ("_send", "close_code", "socket")

    def __init__(self, send: Send, socket: Socket | None):
        self._send = send
        self.socket = socket
        self.close_code: int | None = None

    async def send(self, data: str | bytes) -> None:
        try:
            if isinstance(data, bytes):
                await self._send({"type": "websocket.send", "bytes": data})
            else:
                await self._send({"type": "websocket.send", "text": data})
        except OSError as e:  # uvicorn's ClientDisconnected: the session knows no server types
            raise ConnectionResetError(str(e) or "disconnected") from e
        except RuntimeError as e:  # a send after the library closed (1009/1007, keepalive): the peer is gone
            if self.socket is not None and self.socket.closing:
                raise ConnectionResetError("closed") from e
            raise

    async def close(self, code: int, reason: str) -> None:
        # The close frame waits for room in the write buffer like any frame, and then for the peer's answer:
        # a peer that stopped reading would hold its socket until keepalive gives up. Drop it instead.
        if self.close_code is not None:
            return
        self.close_code = code
        try:
            await asyncio.wait_for(self._send({"type": "websocket.close", "code": code, "reason": reason}),
                                   CLOSE_TIMEOUT_S)
        except asyncio.TimeoutError:
            self.abort()
            return
        except (OSError, RuntimeError):
            return  # already closed or closing
        if self.socket is not None and not await self.socket.wait_closed(CLOSE_TIMEOUT_S + 1):
            self.abort()

    def abort(self) -> None:
        if self.socket is not None:
            self.socket.abort()

    def write_buffer_size(self) -> int:
        """Bytes accepted by the transport and not yet taken by the kernel."""
        return self.socket.write_buffer_size() if self.socket is not None else 0


class TtsEndpoint:
    """A raw ASGI app (no per-message wrapper objects): the hot path is one dict per frame."""

    def __init__(self, server: Server):
        self.server = server

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        srv = self.server
        # The guard let this handshake in and counted it (srv.handshakes) so that a burst cannot pass the
        # connection limit; the count moves to shared.sessions in session.start(), with no await between.
        try:
            if (await receive())["type"] != "websocket.connect":
                return
            offered = scope.get("subprotocols") or ()
            await send({"type": "websocket.accept",
                        "subprotocol": protocol.PROTOCOL if protocol.PROTOCOL in offered else None})
            sock = scope.get("extensions", {}).get(EXTENSION)
            transport = AsgiTransport(send, sock)
            client = scope.get("client")
            session = Session(srv.shared, transport, peer=str(client[0]) if client else "")
            session.start()
        finally:
            srv.handshakes -= 1
        srv.metrics.connections_total.inc()
        session.log.info("connected")
        await self._serve(session, transport, receive)

    async def _serve(self, session: Session, transport: AsgiTransport, receive: Receive) -> None:
        failed = False
        peer_code: int | None = None
        try:
            while True:
                msg = await receive()
                kind = msg["type"]
                if kind == "websocket.receive":
                    text = msg.get("text")
                    if text is not None:
                        session.handle_text(text)
                    else:
                        session.handle_binary(msg.get("bytes") or b"")
                    if session.close_code is not None:
                        break
                elif kind == "websocket.disconnect":
                    peer_code = msg.get("code")
                    break
            if session.writer is not None and session.close_code is not None:
                await asyncio.wait_for(asyncio.shield(session.writer), self.server.settings.stall_timeout_s)
        except Exception as e:  # one connection's failure never touches another
            if not isinstance(e, (asyncio.TimeoutError, ConnectionError)):
                failed = True
                session.log.error("connection_failed", error=repr(e))
        finally:
            sock = transport.socket
            refused = sock.refused if sock is not None else None
            if refused:  # refused by the library's frame checks (1009, 1007): one line and a count, as any refusal
                self.server.metrics.errors.labels(code=refused).inc()
                session.log.info("refused", code=refused, close=peer_code)
            await session.finish()
            if failed:  # say so: ending the handler would close without a code, as if the peer vanished
                await transport.close(1011, "internal error")
            session.log.info("disconnected", code=transport.close_code or peer_code)


def routes(server: Server) -> list[BaseRoute]:
    return [WebSocketRoute(WS_PATH, TtsEndpoint(server))]
