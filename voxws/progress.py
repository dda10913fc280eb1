"""Word timestamps: which words of a segment are heard when.

A word is a run of non-space characters in space-separated scripts and a single character in Chinese
and Japanese (punctuation alone is no word: it is a pause). The engine says nothing about timing inside
a segment, so the times are an estimate: each spoken character gets the sizing rule's natural duration
(0.25 s a CJK character, 0.07 s another letter or digit), sentence and clause marks a pause, every
spoken character is charged to the source word it was made from (so "2024年" read as four digits and
a character weighs what it is read as), and the whole is scaled to the segment's expected length.
"""

from __future__ import annotations

from dataclasses import dataclass

from voxws import sizing, text
from voxws.intake import Segment

SENTENCE_PAUSE_S = 0.20
CLAUSE_PAUSE_S = 0.10
_SENTENCE_MARKS = frozenset("。！？；.!?;…")
_CLAUSE_MARKS = frozenset("，、：,:")


@dataclass(frozen=True, slots=True)
class Word:
    text: str
    source_start: int
    source_end: int
    start: int  # samples from the segment's first sample (output rate)
    end: int


def word_spans(source: str, start: int, end: int) -> list[tuple[int, int]]:
    """Words of source[start:end] as (start, end) code point offsets."""
    out: list[tuple[int, int]] = []
    i = start
    while i < end:
        ch = source[i]
        if ch.isspace():
            i += 1
            continue
        if sizing.is_cjk(ch):
            out.append((i, i + 1))
            i += 1
            continue
        j = i
        while j < end and not source[j].isspace() and not sizing.is_cjk(source[j]):
            j += 1
        if any(text.is_speakable_char(c) for c in source[i:j]):
            out.append((i, j))
        i = j
    return out


def _weight(ch: str) -> float:
    if ch in _SENTENCE_MARKS:
        return SENTENCE_PAUSE_S
    if ch in _CLAUSE_MARKS:
        return CLAUSE_PAUSE_S
    return sizing.estimate_seconds(ch)


def schedule(source: str, seg: Segment, total_samples: int) -> list[Word]:
    """The segment's words with estimated times, spread over total_samples (its expected length)."""
    spans = word_spans(source, seg.source_start, seg.source_end)
    if not spans:
        return []
    starts = [a for a, _ in spans]
    weight = [0.0] * len(spans)
    k = 0
    for i, ch in enumerate(seg.spoken):
        w = _weight(ch)
        if not w:
            continue
        src = seg.src_of(i)
        while k + 1 < len(spans) and src >= starts[k + 1]:
            k += 1  # spoken text comes in source order: the word index only moves on
        weight[k] += w
    weight = [max(w, 0.02) for w in weight]
    scale = total_samples / sum(weight)
    out: list[Word] = []
    t = 0.0
    for (a, b), w in zip(spans, weight, strict=True):
        s0 = int(t)
        t += w * scale
        out.append(Word(source[a:b], a, b, s0, max(s0, min(int(t), total_samples))))
    return out
