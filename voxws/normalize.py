"""Placeholder for the normalization module (replaced by the real one): cleanup only, with alignment."""

from __future__ import annotations

import bisect
from dataclasses import dataclass

from voxws import text as _text


@dataclass(frozen=True)
class Normalized:
    source: str
    spoken: str
    src_index: tuple[int, ...]  # source index of each spoken character

    def to_source(self, spoken_start: int, spoken_end: int) -> tuple[int, int]:
        if spoken_end <= spoken_start:
            i = self.src_index[spoken_start] if spoken_start < len(self.src_index) else len(self.source)
            return i, i
        a = self.src_index[spoken_start]
        b = self.src_index[spoken_end - 1] + 1
        while a < b and self.source[a].isspace():
            a += 1
        while b > a and self.source[b - 1].isspace():
            b -= 1
        return a, b

    def boundaries(self) -> range:
        return range(len(self.spoken) + 1)


def normalize(text: str, *, language: str = "auto", expand: bool = True) -> Normalized:
    spoken = []
    idx = []
    prev_space = True
    for i, ch in enumerate(text):
        if ch.isspace():
            c = "\n" if ch in "\r\n\x0b\x0c\x85\u2028\u2029" else " "
            if prev_space:
                if c == "\n" and spoken and spoken[-1] == " ":
                    spoken[-1] = "\n"
                continue
            spoken.append(c)
            idx.append(i)
            prev_space = True
            continue
        if _text._dropped(ch):
            continue
        spoken.append(ch)
        idx.append(i)
        prev_space = False
    while spoken and spoken[-1].isspace():
        spoken.pop()
        idx.pop()
    _ = bisect
    return Normalized(text, "".join(spoken), tuple(idx))


async def normalize_async(text: str, *, language: str = "auto", expand: bool = True) -> Normalized:
    return normalize(text, language=language, expand=expand)
