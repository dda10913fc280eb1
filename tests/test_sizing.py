"""Sizing rules: text length <-> engine positions, and the report's check-points."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from voxws import sizing

ZH = "语音合成服务正在运行中"  # Chinese characters, cycled to any length


def zh(n: int) -> str:
    return (ZH * (n // len(ZH) + 1))[:n]


@pytest.mark.parametrize(("chars", "max_model_len", "fits"), [
    (8, 256, True), (68, 256, True),  # the report: both fit 256
    (313, 512, False), (313, 1024, True), (313, 2048, True),  # ... 313 does not fit 512
])
def test_report_checkpoints(chars: int, max_model_len: int, fits: bool) -> None:
    assert sizing.fits(zh(chars), max_model_len) is fits


@pytest.mark.parametrize(("chars", "expected"), [(68, 256), (300, 1024), (313, 1024), (8, 256)])
def test_min_max_model_len(chars: int, expected: int) -> None:
    assert sizing.min_max_model_len(chars) == expected


def test_min_max_model_len_is_smallest_block_multiple_that_fits() -> None:
    for n in (1, 50, 86, 87, 200, 640, 1000):
        length = sizing.min_max_model_len(n)
        assert length % 256 == 0
        assert sizing.fits(zh(n), length)
        assert length == 256 or not sizing.fits(zh(n), length - 256)


def test_min_max_model_len_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="max_text_chars=0"):
        sizing.min_max_model_len(0)
    with pytest.raises(ValueError, match="script='xx'"):
        sizing.min_max_model_len(10, "xx")
    assert sizing.min_max_model_len(300, "en") < sizing.min_max_model_len(300, "zh")


def test_steps_match_the_synthetic_speaking_rate() -> None:
    per_step = sizing.CHUNK_SAMPLES / sizing.SAMPLE_RATE
    assert per_step == pytest.approx(sizing.SECONDS_PER_STEP) == pytest.approx(1 / sizing.STEPS_PER_SECOND)
    assert sizing.estimate_seconds("你好") == pytest.approx(0.5)
    assert sizing.estimate_steps("你好") == 4  # 0.5 s = 3.125 steps -> 4
    assert sizing.estimate_steps("中" * 16) == 25  # 4 s exactly
    assert sizing.estimate_seconds("Hi 42") == pytest.approx(0.28)
    assert sizing.estimate_steps("!") == 1  # at least one step
    assert sizing.estimate_steps("a") == 1


def test_token_estimate() -> None:
    assert sizing.estimate_tokens("") == 0
    assert sizing.estimate_tokens("你好世界") == 4  # one per CJK character
    assert sizing.estimate_tokens("こんにちは") == 5
    assert sizing.estimate_tokens("hello") == 2  # ~1 per 4 Latin letters, per word
    assert sizing.estimate_tokens("the cat") == 2
    assert sizing.estimate_tokens("2024") == 4  # digits one each
    assert sizing.estimate_tokens("Привет") == 3  # other alphabets ~1 per 2 letters
    assert sizing.estimate_tokens("你好，world!") == 2 + 1 + 2 + 1
    assert sizing.estimate_tokens("😀") == 4  # byte fallback


@given(st.text(max_size=60), st.text(max_size=60))
def test_token_estimate_grows_with_text(a: str, b: str) -> None:
    assert sizing.estimate_tokens(a + b) >= sizing.estimate_tokens(a)
    assert sizing.estimate_steps(a + b) >= sizing.estimate_steps(a)


def test_generate_cap() -> None:
    assert sizing.generate_cap(10) == 70
    assert sizing.generate_cap(0) == 16  # never zero


@pytest.mark.parametrize("chars", [1, 8, 13, 68, 200, 313, 600])
@pytest.mark.parametrize("max_model_len", [256, 512, 1024, 2048, 4096])
def test_max_generate_length(chars: int, max_model_len: int) -> None:
    text = zh(chars)
    prompt = sizing.estimate_tokens(text) + 1
    natural = sizing.estimate_steps(text)
    if prompt >= max_model_len:
        with pytest.raises(ValueError, match=f"max_model_len={max_model_len}"):
            sizing.max_generate_length(prompt, max_model_len, natural)
        return
    n = sizing.max_generate_length(prompt, max_model_len, natural)
    assert n >= 1
    assert prompt + n <= max_model_len  # the engine never refuses
    assert n <= max(sizing.generate_cap(prompt - 1), natural)  # runaway cap
    if prompt + natural <= max_model_len:
        assert n >= natural  # natural speech is never cut
    if sizing.fits(text, max_model_len):
        assert n >= sizing.steps_with_margin(natural)


def test_max_generate_length_without_natural_steps() -> None:
    assert sizing.max_generate_length(11, 2048) == sizing.generate_cap(10)
    assert sizing.max_generate_length(250, 256) == 6


def test_exact_counter_replaces_the_estimate() -> None:
    text = zh(68)
    assert sizing.fits(text, 256)
    assert not sizing.fits(text, 256, count_tokens=lambda t: 200)  # a tokenizer that says 200
    assert sizing.positions(text, lambda t: 10) == 10 + sizing.steps_with_margin(sizing.estimate_steps(text))


@pytest.mark.parametrize("max_model_len", [256, 512, 768, 1024, 2048, 4096, 32768])
def test_segment_budget_fits_worst_case_text(max_model_len: int) -> None:
    budget = sizing.segment_budget(max_model_len)
    assert budget >= 1
    # Worst per token under the estimate: 4-letter Latin words (1 token, 1.75 steps each).
    latin = " ".join(["abcd"] * budget)
    assert sizing.estimate_tokens(latin) == budget
    assert sizing.fits(latin, max_model_len)
    assert sizing.fits(zh(budget), max_model_len)
    assert not sizing.fits(" ".join(["abcd"] * (budget + 1)), max_model_len)


def test_segment_budget_keeps_report_texts_whole() -> None:
    assert sizing.segment_budget(256) >= 68
    assert sizing.segment_budget(1024) >= 313


def test_segment_budget_rejects_tiny_lengths() -> None:
    with pytest.raises(ValueError, match="max_model_len=3"):
        sizing.segment_budget(3)


def test_memory_estimate() -> None:
    assert sizing.kv_bytes_per_position == 16 * 1024
    assert sizing.KV_BLOCK_BYTES == 4 * 1024 * 1024
    assert sizing.kv_cache_gb(128, 2048) == pytest.approx(128 * 8 * 4 * 2**20 / 1e9)
    assert sizing.kv_cache_gb(1, 300) == sizing.kv_cache_gb(1, 512)  # whole blocks
    default = sizing.memory_estimate_gb(128, 2048)
    assert 12 < default < 18
    assert sizing.memory_estimate_gb(256, 2048) > default > sizing.memory_estimate_gb(128, 1024)
    bare = sizing.memory_estimate_gb(1, 256, fixed_overhead_gb=0, per_seq_overhead_gb=0)
    assert bare == pytest.approx(sizing.WEIGHTS_GB + sizing.VAE_GB, abs=0.01)


def test_cjk_classifier() -> None:
    assert all(sizing.is_cjk(c) for c in "中文日本語ひらがなカタカナ한국어")
    assert not any(sizing.is_cjk(c) for c in "aZ9。，！？「」・ é")


# -- the position vocabulary: voice prompts, one request's fit, the engines' refusal ----------------


def test_a_voice_prompt_costs_its_transcript_and_one_position_per_step_of_audio() -> None:
    # 10 s of recording = 62.5 steps -> 63 positions; a 40-token transcript adds 40 (its audio-start
    # token is the target's own).
    assert sizing.voice_positions(41, 10 * 44100) == 40 + 63
    assert sizing.voice_positions(1, 7056) == 1
    assert sizing.audio_positions(7057) == 2


def test_fit_counts_the_voice_in_the_prompt_and_in_the_room_left() -> None:
    text = zh(60)
    alone = sizing.fit(text, 256)
    voiced = sizing.fit(text, 256, voice=50)
    assert voiced.prompt == alone.prompt + 50 and voiced.needed == alone.needed + 50
    assert alone.fits and not sizing.fit(text, 256, voice=200).fits
    assert voiced.prompt + voiced.steps <= 256  # never more than the engine takes
    assert sizing.refusal(voiced.prompt, voiced.steps, 256) is None
    assert sizing.refusal(voiced.prompt, 256, 256) == (f"prompt {voiced.prompt} + max_generate_length 256 > "
                                                       "max_model_len 256")
    assert sizing.positions(text, voice=50) == voiced.needed


def test_min_max_model_len_makes_room_for_a_voice() -> None:
    # 313 characters need 929 positions; a 10 s voice adds 63 audio positions and a 50-token transcript.
    assert sizing.min_max_model_len(313) == 1024
    assert sizing.min_max_model_len(313, voice_seconds=10) == 1280
    assert sizing.fits(zh(313), 1280, voice=sizing.voice_positions(51, 441000))
    assert not sizing.fits(zh(313), 1024, voice=sizing.voice_positions(51, 441000))
    with pytest.raises(ValueError, match="voice_seconds=61"):
        sizing.min_max_model_len(10, voice_seconds=61)


def test_the_continuity_prompt_keeps_a_quarter_of_max_model_len_and_at_most_13_s() -> None:
    assert sizing.continuity_budget(256) == 64 and sizing.continuity_budget(512) == 128
    assert sizing.continuity_budget(2048) == 160
    longest = max(n for n in range(1, 200) if sizing.positions(zh(n)) <= 160)
    assert longest * 0.25 <= 13.5  # seconds of speech at most
