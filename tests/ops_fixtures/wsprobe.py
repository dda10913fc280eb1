"""A voxws.v1 client for the ops tests: one `speak`, a JSON summary of what came back.

Runs as a script inside a container's network namespace (`nsenter -n python wsprobe.py ...`), so it
depends on websockets only. With --announce it prints "streaming" once the first audio frame is in
(the caller then stops the server); with --speak-again it answers `going_away` with a second `speak`,
which a draining server must refuse with `shutting_down`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from typing import Any

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed


async def probe(url: str, text: str, announce: bool = False, speak_again: bool = False,
                timeout: float = 120.0) -> dict[str, Any]:
    out: dict[str, Any] = {"ready": None, "start": None, "frames": 0, "bytes": 0, "done": None,
                           "going_away": None, "errors": [], "close_code": None}
    async with connect(url, compression=None, max_size=None, open_timeout=30) as ws:
        out["ready"] = json.loads(await ws.recv())
        await ws.send(json.dumps({"type": "speak", "text": text, "context": "a"}))

        async def read() -> None:
            while True:
                msg = await ws.recv()
                if isinstance(msg, bytes):
                    out["frames"] += 1
                    out["bytes"] += len(msg)
                    if announce and out["frames"] == 1:
                        print("streaming", flush=True)
                    continue
                m = json.loads(msg)
                kind = m.get("type")
                if kind == "start":
                    out["start"] = m
                elif kind == "done":
                    out["done"] = m
                    if out["going_away"] is None:
                        return
                elif kind == "going_away":
                    out["going_away"] = m
                    if speak_again:
                        await ws.send(json.dumps({"type": "speak", "text": "再来一次。", "context": "b"}))
                elif kind == "error":
                    out["errors"].append(m)
                    if m.get("context") == "a":
                        return

        with contextlib.suppress(ConnectionClosed):  # the server's 1001 after a drain
            await asyncio.wait_for(read(), timeout)
        out["close_code"] = ws.close_code
    if out["close_code"] is None:
        out["close_code"] = ws.close_code
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("text")
    ap.add_argument("--announce", action="store_true")
    ap.add_argument("--speak-again", action="store_true")
    a = ap.parse_args()
    summary = asyncio.run(probe(a.url, a.text, a.announce, a.speak_again))
    print(json.dumps(summary, ensure_ascii=False), flush=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
