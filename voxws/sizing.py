"""Text length <-> engine positions: the ONE place for these rules (server and voxws-ops use it).

Facts (DESIGN.md "Sizing rules"):
- One engine step makes 7056 samples = 0.16 s at 44.1 kHz: 6.25 steps per second of audio.
- A request takes text tokens + 1 (audio-start token) + generated steps positions, and the engine
  refuses it when prompt_len + max_generate_length > max_model_len.

Our estimates (all conservative, i.e. they over- rather than under-count):
- Tokens: one per CJK character (Han, kana, Hangul; DESIGN: "one token per character"), one per
  digit (LLaMA-style tokenizers split digits), one per punctuation mark, ~1 per 4 letters of a Latin
  word and ~1 per 2 letters of a word in another alphabet (Cyrillic, Greek, Arabic, Thai, ...: the
  vocabulary holds fewer of their pieces), a rare symbol or emoji as its UTF-8 bytes (byte fallback),
  whitespace 0 (merged into the next word).
- Natural speech: 0.25 s per CJK character (4 characters a second, the slow end of DESIGN's 4-5) and
  0.07 s per other letter or digit, at least one step. The synthetic engine speaks exactly this, so
  estimate_steps() is what it generates; the real model varies, hence the margin in `fits`.
- Margin: a text "fits" when tokens + 1 + ceil(1.25 x natural steps) + 2 <= max_model_len.
  25% covers slower real speech (pauses at punctuation, numbers read out); 2 steps cover leading and
  trailing silence. This gives ~3 positions per Chinese character, the report's "1 char : 2-3 tokens".
"""

from __future__ import annotations

import functools
import math
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass

STEPS_PER_SECOND = 6.25
SECONDS_PER_STEP = 0.16
CHUNK_SAMPLES = 7056  # samples per step at 44.1 kHz
SAMPLE_RATE = 44100

CJK_CENTISECONDS = 25  # 0.25 s per CJK character
OTHER_CENTISECONDS = 7  # 0.07 s per other letter or digit
STEP_MARGIN = 1.25  # natural steps x this, rounded up ...
EXTRA_STEPS = 2  # ... plus this, is what a request must have room for
LATIN_LETTERS_PER_TOKEN = 4
OTHER_LETTERS_PER_TOKEN = 2
# Most steps one estimated token can need: a 4-letter Latin word is 1 token and 4 x 0.07 s = 1.75 steps
# (a CJK character is 1 token and 1.5625 steps). segment_budget() sizes segments for this worst case.
WORST_STEPS_PER_TOKEN = LATIN_LETTERS_PER_TOKEN * OTHER_CENTISECONDS * STEPS_PER_SECOND / 100
BLOCK_POSITIONS = 256  # max_model_len is a multiple of this (the engine's KV block size)

CountTokens = Callable[[str], int]  # text -> prompt positions (text tokens + the audio-start token)

_CJK_RANGES = (
    (0x1100, 0x11FF),  # Hangul Jamo
    (0x2E80, 0x2FDF),  # CJK radicals, Kangxi radicals
    (0x3040, 0x30FF),  # Hiragana, Katakana
    (0x3100, 0x312F),  # Bopomofo
    (0x3130, 0x318F),  # Hangul compatibility Jamo
    (0x31A0, 0x31BF),  # Bopomofo extended
    (0x31F0, 0x31FF),  # Katakana phonetic extensions
    (0x3400, 0x4DBF),  # CJK extension A
    (0x4E00, 0x9FFF),  # CJK unified ideographs
    (0xA960, 0xA97F),  # Hangul Jamo extended A
    (0xAC00, 0xD7AF),  # Hangul syllables
    (0xD7B0, 0xD7FF),  # Hangul Jamo extended B
    (0xF900, 0xFAFF),  # CJK compatibility ideographs
    (0xFF66, 0xFF9F),  # halfwidth Katakana
    (0xFFA0, 0xFFDC),  # halfwidth Hangul
    (0x1B000, 0x1B16F),  # kana supplement / extended
    (0x20000, 0x3134F),  # CJK extensions B-G, compatibility supplement
)


@functools.lru_cache(maxsize=1 << 16)
def is_cjk(ch: str) -> bool:
    """A CJK letter (Han, kana, Hangul): one token and 0.25 s of speech. Punctuation is not."""
    o = ord(ch)
    if o < 0x1100:
        return False
    for lo, hi in _CJK_RANGES:
        if o < lo:
            return False
        if o <= hi:
            return ch.isalnum()  # leaves out e.g. the katakana middle dot
    return False


# Character kinds for the token and speech estimates (cached: texts are long, alphabets small).
_SPACE, _LATIN, _OTHER_LETTER, _CJK, _ONE_TOKEN = 0, 1, 2, 3, 4


@functools.lru_cache(maxsize=1 << 16)
def _kind(ch: str) -> int:
    """_SPACE, _LATIN / _OTHER_LETTER (word runs), _CJK, _ONE_TOKEN, or 5+: that many byte tokens."""
    cat = unicodedata.category(ch)
    if is_cjk(ch):
        return _CJK
    if ch.isalpha() or cat in ("Mn", "Mc", "Me"):
        latin = ord(ch) < 0x250 if ch.isalpha() else ord(ch) < 0x370
        return _LATIN if latin else _OTHER_LETTER
    if ch.isspace():
        return _SPACE
    if ch.isalnum() or ch.isascii() or cat[0] == "P" or cat in ("Cf", "Cc"):
        return _ONE_TOKEN  # digit, punctuation, ASCII symbol, format character
    return 4 + min(4, len(ch.encode("utf-8", "surrogatepass")))  # rare symbol / emoji: byte fallback


# Memoised: the server asks for the same segment's figures several times on the way to the engine.
@functools.lru_cache(maxsize=2048)
def estimate_tokens(text: str) -> int:
    """Text tokens of `text` (no audio-start token). See the module doc for the rule."""
    tokens = latin = other = 0  # latin/other: letters in the current word run
    for ch in text:
        k = _kind(ch)
        if k == _LATIN:
            latin += 1
            continue
        if k == _OTHER_LETTER:
            other += 1
            continue
        if latin or other:
            tokens += -(-latin // LATIN_LETTERS_PER_TOKEN) + -(-other // OTHER_LETTERS_PER_TOKEN)
            latin = other = 0
        if k >= _CJK:
            tokens += 1 if k <= _ONE_TOKEN else k - 4
    return tokens + -(-latin // LATIN_LETTERS_PER_TOKEN) + -(-other // OTHER_LETTERS_PER_TOKEN)


@functools.lru_cache(maxsize=1 << 16)
def _centiseconds(ch: str) -> int:
    if is_cjk(ch):
        return CJK_CENTISECONDS
    return OTHER_CENTISECONDS if ch.isalnum() else 0


def _speech_centiseconds(text: str) -> int:
    return sum(map(_centiseconds, text))


def estimate_seconds(text: str) -> float:
    """Natural speech duration: 0.25 s per CJK character, 0.07 s per other letter or digit."""
    return _speech_centiseconds(text) / 100


@functools.lru_cache(maxsize=2048)
def estimate_steps(text: str) -> int:
    """Engine steps natural speech of `text` takes (at least one)."""
    # Integer arithmetic: centiseconds x 6.25 / 100 = centiseconds / 16.
    return max(1, -(-_speech_centiseconds(text) // 16))


def steps_with_margin(natural_steps: int) -> int:
    """Steps a request must have room for when natural speech needs `natural_steps`."""
    return math.ceil(natural_steps * STEP_MARGIN) + EXTRA_STEPS


def generate_cap(prompt_tokens: int) -> int:
    """Runaway cap for one segment: at most 6 x text tokens + 10 steps (the official VoxCPM's rule),
    so that a model that never says stop cannot run to max_model_len."""
    return 6 * max(1, prompt_tokens) + 10


def prompt_positions(text: str, count_tokens: CountTokens | None = None) -> int:
    """Prompt positions of a text alone: text tokens + the audio-start token (exact when the engine counts)."""
    return count_tokens(text) if count_tokens else estimate_tokens(text) + 1


# A voice prompt (a registered voice, or a context's first segment kept for continuity) is the
# recording's transcript and its audio: the engine's sequence is tokens(transcript + text) + audio-start
# + one position per 0.16 s of recording + the generated steps.
VOICE_TOKENS_PER_SECOND = 5  # transcript tokens per second of recording, for sizing before a voice exists
# A context without a named voice is conditioned on its first segment: that prompt may take at most this
# share of max_model_len (so the segments after it keep most of the room), and at most CONTINUITY_MAX
# positions (a first segment of ~13 s at most: longer prompts cost every later segment prefill and KV).
CONTINUITY_SHARE = 0.25
CONTINUITY_MAX = 160


def audio_positions(samples: int, chunk_samples: int = CHUNK_SAMPLES) -> int:
    """Positions a prompt recording of this many native-rate samples takes: one per engine step's worth."""
    return -(-samples // chunk_samples)


def voice_positions(transcript_positions: int, samples: int) -> int:
    """Positions a voice prompt adds to every request that uses it. transcript_positions is the
    transcript's own count with the audio-start token (count_tokens), which the target already has."""
    return max(0, transcript_positions - 1) + audio_positions(samples)


def continuity_budget(max_model_len: int) -> int:
    """Most positions a context's continuity prompt (its first segment's text + audio) may take."""
    return min(int(max_model_len * CONTINUITY_SHARE), CONTINUITY_MAX)


@dataclass(frozen=True)
class Fit:
    """One engine request, in positions: the vocabulary of segmentation, segment runs, the engines'
    refusal and voxws-ops."""

    prompt: int  # positions before any audio: text tokens + audio-start token + voice prompt
    natural_steps: int  # steps natural speech of the text takes
    max_model_len: int

    @property
    def needed(self) -> int:
        """Positions the request must have room for: prompt + natural steps with the safety margin."""
        return self.prompt + steps_with_margin(self.natural_steps)

    @property
    def fits(self) -> bool:
        return self.needed <= self.max_model_len

    @property
    def steps(self) -> int:
        """max_generate_length to ask for: natural steps with room to spare, under the runaway cap."""
        return max_generate_length(self.prompt, self.max_model_len, self.natural_steps)


def fit(text: str, max_model_len: int, count_tokens: CountTokens | None = None, voice: int = 0) -> Fit:
    """How one request with this (spoken) text and a voice prompt of `voice` positions sits in max_model_len."""
    return Fit(prompt_positions(text, count_tokens) + voice, estimate_steps(text), max_model_len)


def positions(text: str, count_tokens: CountTokens | None = None, voice: int = 0) -> int:
    """Positions one request with this text needs (fit(...).needed): also the segment cost for
    text.split_segments(text, max_model_len, count_tokens=...), e.g. ``lambda s: positions(s, count)``."""
    return prompt_positions(text, count_tokens) + voice + steps_with_margin(estimate_steps(text))


def fits(text: str, max_model_len: int, count_tokens: CountTokens | None = None, voice: int = 0) -> bool:
    """Whether one request with this text (and voice prompt) fits max_model_len, with room for its audio."""
    return positions(text, count_tokens, voice) <= max_model_len


def refusal(prompt: int, max_generate_length: int, max_model_len: int) -> str | None:
    """The engine's own rule (nano-vllm-voxcpm refuses with ValueError): why a request does not fit, or None.
    Both engines refuse with it, before any work."""
    if max_generate_length < 1:
        return f"max_generate_length={max_generate_length}: must be at least 1"
    if prompt + max_generate_length > max_model_len:
        return f"prompt {prompt} + max_generate_length {max_generate_length} > max_model_len {max_model_len}"
    return None


def max_generate_length(prompt_len: int, max_model_len: int, natural_steps: int | None = None) -> int:
    """max_generate_length the server passes to the engine for one segment.

    prompt_len includes the audio-start token and any voice prompt. The result never makes prompt_len +
    result exceed max_model_len, is bounded by the runaway cap generate_cap(prompt_len - 1), and is never
    below natural_steps when those fit (natural speech wins over the cap in that rare case).
    """
    room = max_model_len - prompt_len
    if room < 1:
        raise ValueError(f"prompt of {prompt_len} positions leaves no room for audio in max_model_len="
                         f"{max_model_len}: the prompt must be shorter than max_model_len")
    want = generate_cap(prompt_len - 1)
    if natural_steps is not None:
        want = max(want, natural_steps)
    return min(room, want)


def segment_budget(max_model_len: int) -> int:
    """Most text tokens one segment may have so that it fits, whatever its script.

    Sized for WORST_STEPS_PER_TOKEN (Latin text under the estimate): tokens + 1 + margin(steps) <= len.
    """
    per_token = 1 + WORST_STEPS_PER_TOKEN * STEP_MARGIN
    t = max(0, int((max_model_len - 1 - EXTRA_STEPS) / per_token) + 1)
    while t > 0 and t + 1 + steps_with_margin(math.ceil(t * WORST_STEPS_PER_TOKEN)) > max_model_len:
        t -= 1
    if t < 1:
        raise ValueError(f"max_model_len={max_model_len}: must leave room for at least one text token and "
                         "its audio")
    return t


_SCRIPT_SAMPLE = {"zh": "中", "ja": "あ", "ko": "한", "en": "abcd "}


def min_max_model_len(max_text_chars: int, script: str = "zh", voice_seconds: float = 0.0) -> int:
    """Smallest multiple of 256 with which one text of max_text_chars characters fits, spoken in a voice
    of voice_seconds (its recording and a transcript of VOICE_TOKENS_PER_SECOND tokens a second).

    script "zh" (default) is the worst case per character; "ja", "ko" are the same; "en" assumes
    4-letter words separated by spaces.
    """
    if max_text_chars < 1:
        raise ValueError(f"max_text_chars={max_text_chars}: must be a positive integer")
    if script not in _SCRIPT_SAMPLE:
        raise ValueError(f"script={script!r}: must be one of {', '.join(_SCRIPT_SAMPLE)}")
    if not 0 <= voice_seconds <= 60:
        raise ValueError(f"voice_seconds={voice_seconds}: must be from 0 to 60")
    sample = _SCRIPT_SAMPLE[script]
    text = (sample * (max_text_chars // len(sample) + 1))[:max_text_chars]
    voice = 0
    if voice_seconds:
        voice = voice_positions(math.ceil(voice_seconds * VOICE_TOKENS_PER_SECOND) + 1,
                                math.ceil(voice_seconds * SAMPLE_RATE))
    return -(-positions(text, voice=voice) // BLOCK_POSITIONS) * BLOCK_POSITIONS


# Memory (DESIGN.md): KV 16 KiB per position = 32 causal layers x 2 KV heads x 64 dims x (K+V) x bf16.
kv_bytes_per_position = 16 * 1024
KV_BLOCK_BYTES = BLOCK_POSITIONS * kv_bytes_per_position  # 4 MiB
WEIGHTS_GB = 1.6  # LM + DiT + encoders, bf16
VAE_GB = 0.35  # AudioVAE, fp32
# Outside the engine's KV budget, measured on an H100 (shared/notes/gpu-harness.md): CUDA context,
# graphs and LM activations ~1.5 GB; streaming-VAE activations and allocator growth ~55 MB per
# running sequence (card memory went from 31.1 GB at 1 sequence to 38.0 GB at 128).
FIXED_OVERHEAD_GB = 1.5
PER_SEQ_OVERHEAD_GB = 0.055


def kv_cache_gb(max_num_seqs: int, max_model_len: int) -> float:
    """KV cache for max_num_seqs sequences of max_model_len positions each (whole 4 MiB blocks)."""
    blocks = max_num_seqs * -(-max_model_len // BLOCK_POSITIONS)
    return blocks * KV_BLOCK_BYTES / 1e9


def memory_estimate_gb(max_num_seqs: int, max_model_len: int, *, fixed_overhead_gb: float = FIXED_OVERHEAD_GB,
                       per_seq_overhead_gb: float = PER_SEQ_OVERHEAD_GB) -> float:
    """GB (1e9 bytes) one card needs to run max_num_seqs full-length sequences at once.

    weights + VAE + KV (worst case: every sequence at max_model_len) + activation/graph overhead.
    Default config (128 seqs, len 2048): 1.6 + 0.35 + 4.29 + 1.5 + 7.04 = ~14.8 GB.
    """
    return round(WEIGHTS_GB + VAE_GB + kv_cache_gb(max_num_seqs, max_model_len)
                 + fixed_overhead_gb + per_seq_overhead_gb * max_num_seqs, 2)
