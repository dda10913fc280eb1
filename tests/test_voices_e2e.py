"""Voices end to end: upload over HTTP, speak over the WebSocket, one voice per context, defaults, restarts.

The synthetic engine models cloning: with a prompt the speaker (in every chunk's mark, and in the
tone's pitch) is the prompt's; without one the speaker follows the text and the seed."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx2 as httpx
import numpy as np

from tests.audiofiles import encode, speechlike
from tests.conftest import running, url
from tests.wsclient import open_ws, run
from voxws import sizing
from voxws.engines.synthetic import speaker_of


def recording(seconds: float = 3.0, seed: int = 0) -> bytes:
    return encode("wav", speechlike(seconds, 44100, seed=seed), 44100)


async def upload(srv, vid: str, seconds: float = 3.0, seed: int = 0) -> dict:  # type: ignore[no-untyped-def]
    async with httpx.AsyncClient() as http:
        r = await http.post(f"http://127.0.0.1:{srv.port}/v1/voices",
                            files={"audio": ("me.wav", recording(seconds, seed), "audio/wav")},
                            data={"text": "这是我的声音，请记住它。", "id": vid})
    assert r.status_code == 201, r.text
    return r.json()


async def speak(srv, text: str, **opts: object) -> tuple[dict, list[bytes]]:  # type: ignore[no-untyped-def]
    ws, _ = await open_ws(url(srv))
    await ws.send(json.dumps({"type": "speak", "text": text, **opts}))
    frames: list[bytes] = []
    while True:
        msg = await asyncio.wait_for(ws.recv(), 60)
        if isinstance(msg, bytes):
            frames.append(msg)
        elif json.loads(msg)["type"] in ("done", "error", "cancelled"):
            await ws.close()
            return json.loads(msg), frames


def speakers(frames: list[bytes]) -> set[int | None]:
    return {speaker_of(np.frombuffer(f, "<i2")) for f in frames}


def test_a_cloned_voice_speaks_every_segment_of_a_long_text(tmp_path: Path) -> None:
    text = "今天天气很好，我们一起去公园散步吧。" * 30  # many segments at max_model_len 256

    async def scenario() -> None:
        async with running(voices_dir=str(tmp_path), max_model_len=256, synthetic_step_base_ms=0,
                           synthetic_step_per_seq_ms=0) as srv:
            amy = await upload(srv, "amy", seed=1)
            await upload(srv, "bob", seed=2)
            assert amy["id"] == "amy" and 2.9 < amy["duration_s"] < 3.1
            done_a, frames_a = await speak(srv, text, voice="amy")
            done_b, _ = await speak(srv, "你好。", voice="bob")
            _, frames_a2 = await speak(srv, "你好。", voice="amy")
            done_none, frames_none = await speak(srv, "你好。")
        assert done_a["voice"] == "amy" and done_b["voice"] == "bob" and done_none["voice"] is None
        assert done_a["segments"] > 5
        assert len(speakers(frames_a)) == 1  # every segment in the voice
        assert speakers(frames_a) == speakers(frames_a2)  # and the same voice in another context
        assert speakers(frames_a) != speakers(frames_none)

    run(scenario())


def test_the_default_voice_and_openai_names(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running(voices_dir=str(tmp_path)) as first:
            await upload(first, "house")
        async with running(voices_dir=str(tmp_path), default_voice="house") as srv:  # survives a restart
            ws, hello = await open_ws(url(srv))
            await ws.close()
            assert hello["default_voice"] == "house"
            plain, frames = await speak(srv, "你好。")
            alloy, frames_alloy = await speak(srv, "你好。", voice="alloy")
            named, frames_named = await speak(srv, "你好。", voice="house")
            unknown, _ = await speak(srv, "你好。", voice="nobody")
            async with httpx.AsyncClient() as http:
                listing = (await http.get(f"http://127.0.0.1:{srv.port}/v1/voices")).json()
        assert plain["voice"] == alloy["voice"] == named["voice"] == "house"
        assert speakers(frames) == speakers(frames_alloy) == speakers(frames_named)
        assert unknown["code"] == "unknown_voice"
        assert listing["default"] == "house" and [v["id"] for v in listing["voices"]] == ["house"]

    run(scenario())


def test_a_voice_added_through_one_server_is_used_through_another(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running(voices_dir=str(tmp_path)) as group0, running(voices_dir=str(tmp_path)) as group1:
            await upload(group0, "shared")
            done, _ = await speak(group1, "你好。", voice="shared")
            assert done["voice"] == "shared"

    run(scenario())


def test_a_voice_deleted_while_it_speaks_finishes_that_context(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running(voices_dir=str(tmp_path), synthetic_step_base_ms=5, synthetic_step_per_seq_ms=0) as srv:
            await upload(srv, "brief")
            ws, _ = await open_ws(url(srv))
            await ws.send(json.dumps({"type": "speak", "text": "长" * 40, "voice": "brief", "context": "k"}))
            while not isinstance(await ws.recv(), bytes):
                pass
            async with httpx.AsyncClient() as http:
                assert (await http.delete(f"http://127.0.0.1:{srv.port}/v1/voices/brief")).status_code == 204
            while True:
                msg = await ws.recv()
                if isinstance(msg, str) and json.loads(msg)["type"] in ("done", "error"):
                    break
            assert json.loads(msg)["type"] == "done" and json.loads(msg)["voice"] == "brief"
            await ws.send(json.dumps({"type": "speak", "text": "你好", "voice": "brief"}))
            assert json.loads(await ws.recv())["code"] == "unknown_voice"
            await ws.close()

    run(scenario())


def test_a_voice_too_long_for_max_model_len_is_refused_clearly(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running(voices_dir=str(tmp_path), max_model_len=256) as srv:
            await upload(srv, "long", seconds=25)  # 157 audio positions + its transcript: over half of 256
            done, _ = await speak(srv, "你好。", voice="long")
        assert done["code"] == "bad_option" and "max_model_len" in done["message"]
        assert sizing.audio_positions(25 * 44100) > 128

    run(scenario())
