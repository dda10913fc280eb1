"""One context's text in, Segments out: the source text kept, normalized once, cut where it fits.

Two steps. `speak` / `add` / `flush` decide, at once and cheaply, which part of the source text is
ready to speak: a Release (the whole `speak` text; for incremental text, up to a sentence end found by
text.ready_cut on a cleaned copy of the unreleased tail). `cut(release)` then normalizes it (off the
event loop when that is costly: normalize.normalize_async) and cuts it into Segments that fit the
engine with room for the voice prompt; the producer awaits it, in order.

A Segment knows where it came from (`source_start:source_end`, code points into the context's source
text: the `speak` text, or every `text` message joined) and what the model is given for it (`spoken`).
The same Intake serves the WebSocket and HTTP requests.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from voxws import normalize as norm
from voxws import text


@dataclass(eq=False)
class Release:
    """Source text ready to speak, and the `flush_id`s to answer once its audio is all sent."""

    start: int
    end: int
    flush_ids: list[str | int] = field(default_factory=list)
    done: bool = False  # its audio is all in the context's lane
    after: Release | None = None  # nothing speakable: it is done when this earlier release is

    @property
    def finished(self) -> bool:
        """Whether a flush now would be answered at once (all audio of this release is queued)."""
        return self.done or (self.after is not None and self.after.finished)


@dataclass(eq=False)
class Segment:
    index: int
    source_start: int
    source_end: int
    text: str  # source[source_start:source_end]
    spoken: str  # what the model is given
    src_of: Callable[[int], int]  # spoken index -> source index (for word timing)
    release: Release | None = None  # set on the last segment of a release: its end ends the release


@dataclass(frozen=True)
class Sizer:
    """How segments are cut: the cost of a spoken text in engine positions, the room one segment may take,
    and the smaller room of the first segment (when it is to be the context's continuity prompt)."""

    cost: Callable[[str], int]
    limit: int
    first_limit: int | None = None
    full: int | None = None  # a whole `speak` text within this is one segment, whatever first_limit says


class Intake:
    def __init__(self, *, language: str, expand: bool, sizer: Sizer, threshold_chars: int = 60):
        self.language = language
        self.expand = expand
        self.sizer = sizer
        self.threshold_chars = threshold_chars
        self.source = ""
        self.released = 0  # source[:released] has been cut into segments
        self.count = 0  # segments made
        self.whole = False  # a `speak` context
        self.last: Release | None = None
        self._uncovered: int | None = None  # start of unspeakable source text waiting for the next segment

    @property
    def pending(self) -> str:
        return self.source[self.released:]

    def speak(self, whole: str) -> Release:
        self.source = whole
        self.whole = True
        return self._release(len(whole))

    def add(self, more: str) -> Release | None:
        """Append incremental text; return what is ready to speak now, if anything."""
        self.source += more
        tail = norm.normalize(self.pending, expand=False)
        budget = self.sizer.first_limit if self.count == 0 and self.sizer.first_limit else self.sizer.limit
        cut = text.ready_cut(tail.spoken, self.threshold_chars, budget, self.sizer.cost)
        if cut == 0:
            return None
        return self._release(self.released + tail.to_source(0, cut)[1])

    def flush(self) -> Release | None:
        return self._release(len(self.source))

    def _release(self, end: int) -> Release | None:
        start, self.released = self.released, max(self.released, end)
        if end <= start:
            return None
        self.last = Release(start, end)
        return self.last

    async def cut(self, rel: Release) -> list[Segment]:
        """The release's segments (none when it has nothing speakable)."""
        start, end = rel.start, rel.end
        n = await norm.normalize_async(self.source[start:end], language=self.language, expand=self.expand)
        spoken = n.spoken
        if not text.is_speakable(spoken):
            self._cover(start, n)
            return []
        sz = self.sizer
        first = sz.first_limit if self.count == 0 else None
        if self.whole and sz.full is not None and sz.cost(spoken) <= sz.full:
            spans = [(0, len(spoken))]  # one request: no continuity prompt needed
        elif sz.cost(spoken) <= (first or sz.limit):
            spans = [(0, len(spoken))]
        else:
            spans = text.split_spans(spoken, sz.limit, sz.cost, allowed=set(n.boundaries()), first_max_tokens=first)
        out: list[Segment] = []
        for p, q in spans:
            while p < q and spoken[p].isspace():
                p += 1
            while q > p and spoken[q - 1].isspace():
                q -= 1
            a, b = n.to_source(p, q)
            a, b = a + start, b + start
            piece = spoken[p:q].replace("\n", " ")
            if not text.is_speakable(piece):
                if out:  # stray punctuation joins the segment before it
                    out[-1].source_end = max(out[-1].source_end, b)
                    out[-1].text = self.source[out[-1].source_start:out[-1].source_end]
                elif self._uncovered is None:
                    self._uncovered = a
                continue
            if self._uncovered is not None:
                a, self._uncovered = min(a, self._uncovered), None
            out.append(Segment(self.count, a, b, self.source[a:b], piece, _mapper(n, start, p)))
            self.count += 1
        if out:
            out[-1].release = rel
        return out

    def tail(self) -> Segment | None:
        """At the end of input: source text no segment covers (stray marks or symbols after the last
        speakable text, e.g. "好。" then "…"), as a segment with nothing to say, or None."""
        if self._uncovered is None:
            return None
        a, b = self._uncovered, len(self.source.rstrip())
        self._uncovered = None
        if b <= a:
            return None
        seg = Segment(self.count, a, b, self.source[a:b], "", lambda i: a)
        self.count += 1
        return seg

    def _cover(self, start: int, n: norm.Normalized) -> None:
        a, b = n.to_source(0, len(n.spoken))
        if b > a and self._uncovered is None:
            self._uncovered = a + start


def _mapper(n: norm.Normalized, base: int, offset: int) -> Callable[[int], int]:
    def src_of(i: int) -> int:
        return base + n.to_source(offset + i, offset + i + 1)[0]

    return src_of
