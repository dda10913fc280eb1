"""The HTTP speech endpoint's context (voxws/speech.py) on the same core as the WebSocket's."""

from __future__ import annotations

import asyncio

import pytest

from tests.conftest import running
from voxws.engines.synthetic import natural_steps
from voxws.protocol import Options, ProtocolError
from voxws.speech import Speech, SpeechFailed


def test_a_speech_streams_every_chunk_then_accounts_for_itself() -> None:
    async def scenario() -> None:
        async with running() as srv:
            text = "今天天气很好，我们去散步。"
            sp = Speech(srv.shared, text, Options())
            await sp.first()
            body = b"".join([p async for p in sp])
            assert len(body) == natural_steps(text) * 7056 * 2
            assert sp.ctx.segment_count == 1 and srv.admission.in_use == 0
            assert srv.metrics.value("voxws_contexts_active") == 0

    asyncio.run(scenario())


def test_refusals_come_before_any_audio() -> None:
    async def scenario() -> None:
        async with running(max_text_chars=10, max_queue=0, max_num_seqs=1, synthetic_step_base_ms=50) as srv:
            for text, code in (("", "empty_text"), ("。。", "empty_text"), ("字" * 11, "text_too_long")):
                with pytest.raises(ProtocolError) as e:
                    Speech(srv.shared, text, Options())
                assert e.value.code == code
            with pytest.raises(ProtocolError) as e:
                Speech(srv.shared, "你好", Options(voice="nobody"))
            assert e.value.code == "unknown_voice"
            busy = Speech(srv.shared, "你好。", Options())
            await busy.first()  # holds the only slot
            full = Speech(srv.shared, "你好。", Options())
            with pytest.raises(SpeechFailed) as f:
                await full.first()
            assert f.value.code == "busy" and f.value.retry_after_ms
            await busy.aclose()
            assert srv.admission.in_use == 0

    asyncio.run(scenario())


def test_a_client_going_away_frees_the_engine_slot_within_a_step() -> None:
    async def scenario() -> None:
        async with running(synthetic_step_base_ms=5) as srv:
            sp = Speech(srv.shared, "长" * 300, Options())
            await sp.first()
            async for _ in sp:
                break
            assert srv.engine.running == 1
            await sp.aclose()
            await asyncio.sleep(0.02)
            assert srv.engine.running == 0 and srv.admission.in_use == 0
            assert srv.metrics.value("voxws_contexts_active") == 0

    asyncio.run(scenario())
