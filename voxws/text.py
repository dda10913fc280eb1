"""Text for the engine: normalisation, sentence/clause segmentation, the incremental buffer.

Cut points, best first: sentence ends (。！？；… . ! ? ; and newlines), clause ends (，、,:：),
whitespace, CJK character boundaries, grapheme boundaries, and as the very last resort code points.
ASCII marks are cut points only where the next character says so: "3.14", "1,000", "12:30",
"example.com", "a@b.org", "e.g." and "https://x.io/?a=1" never cut; an ASCII mark at the very end of
an incremental buffer waits for the next character (or the caller's flush timer).
"""

from __future__ import annotations

import bisect
import re
import unicodedata
from collections.abc import Callable, Container, Sequence

from voxws import sizing
from voxws.normalize import normalize as normalize_text

CountTokens = Callable[[str], int]

# Sentence-ending marks. STRONG ones end a sentence at once (CJK, Devanagari danda, Arabic/Urdu).
_STRONG_ENDS = frozenset("。！？；｡︒︕︖﹒﹗﹖‼⁇⁈⁉।॥؟۔")
_ASCII_ENDS = frozenset(".!?;．")  # ．(U+FF0E) behaves like "."
_ELLIPSIS = "…"
_END_MARKS = _STRONG_ENDS | _ASCII_ENDS | {_ELLIPSIS}
_CLOSERS = frozenset("\"'”’」』）)】》〉］]｝}»›〕〗〙〛")
_CJK_CLAUSE = frozenset("，、：﹐﹑﹕،")
_ASCII_CLAUSE = frozenset(",:")


def _words(s: str) -> frozenset[str]:
    return frozenset(s.split())


# Words after which "." does not end a sentence. Matched case-insensitively, without leading brackets.
_ABBREVIATIONS = _words("""
    e.g. i.e. etc. vs. cf. al. approx. ca. viz. a.m. p.m. u.s. u.s.a. u.k. e.u. u.n. ph.d. b.a. m.a.
    b.sc. m.sc. d.c. mr. mrs. ms. dr. prof. sr. jr. st. mt. ft. gen. col. lt. sgt. capt. cmdr. adm. gov.
    sen. rep. rev. hon. pres. supt. ave. blvd. rd. dept. univ. est. inc. ltd. co. corp. bros. jan. feb.
    mar. apr. jun. jul. aug. sep. sept. oct. nov. dec. mon. tue. tues. wed. thu. thur. thurs. fri. sat. sun.
""")
# ... and these only when a number follows ("No. 5", "Fig. 3", "pp. 10-12").
_NUMBER_ABBREVIATIONS = _words("no. nos. fig. figs. eq. vol. vols. p. pp. ch. sec. art. op. nr.")

_CONTROL_TO_NEWLINE = str.maketrans({"\r": "\n", "\x0b": "\n", "\x0c": "\n", "\x85": "\n",
                                     "\u2028": "\n", "\u2029": "\n", "\t": " "})
_SPACE_RUN = re.compile(r"[^\S\n]+")
_BREAK_RUN = re.compile(r"\s*\n\s*")
_DROP_FORMAT = frozenset("\ufeff\u200b\u2060\u00ad")  # BOM, zero-width space, word joiner, soft hyphen


def _dropped(c: str) -> bool:
    return c != "\n" and (c in _DROP_FORMAT or unicodedata.category(c) in ("Cc", "Cs"))


def _clean(text: str) -> str:
    """Control characters out, line breaks unified to \\n, NFC. Keeps whitespace runs as they are."""
    text = text.translate(_CONTROL_TO_NEWLINE)
    if any(_dropped(c) for c in text):
        text = "".join(c for c in text if not _dropped(c))
    return unicodedata.normalize("NFC", text)


def _collapse(text: str) -> str:
    """One space for a run of spaces, one newline for a run of whitespace holding a line break."""
    return _BREAK_RUN.sub("\n", _SPACE_RUN.sub(" ", text))


def normalize(text: str) -> str:
    """Clean text for segmentation: controls stripped (line breaks kept as "\\n", they are sentence
    breaks), whitespace runs collapsed, NFC, ends trimmed. The aligned version (offsets back to the
    text as sent, and number expansion) is voxws.normalize.normalize."""
    return normalize_text(text, expand=False).spoken


def is_speakable_char(ch: str) -> bool:
    return unicodedata.category(ch)[0] in "LN"


def is_speakable(text: str) -> bool:
    """False when text is empty or only whitespace/punctuation/symbols (the protocol's `empty_text`)."""
    return any(is_speakable_char(c) for c in text)


def _next_nonspace(text: str, k: int) -> int:
    n = len(text)
    while k < n and text[k].isspace() and text[k] != "\n":
        k += 1
    return k


def _word_before(text: str, i: int) -> str:
    """The whitespace-delimited word ending at text[i] (inclusive), without leading brackets/quotes."""
    j = i
    while j > 0 and not text[j - 1].isspace():
        j -= 1
    return text[j:i + 1].lstrip("\"'“‘([{«<")


def _period_ends(text: str, i: int, k: int, final: bool) -> bool | None:
    """Does the "." at text[i] (closers up to k) end a sentence? None: undecided (wait for text)."""
    n = len(text)
    if k < n and not text[k].isspace():
        return sizing.is_cjk(text[k])  # "OK.我们" ends; "3.14", "e.g", "x.com" do not
    m = _next_nonspace(text, k)
    if m >= n:
        nxt = None
        if not final:
            return None
    else:
        nxt = text[m]
    word = _word_before(text, i)
    lower = word.lower()
    if lower in _ABBREVIATIONS:
        return False
    if lower in _NUMBER_ABBREVIATIONS and nxt is not None and nxt.isdigit():
        return False
    if len(word) == 2 and word[0].isupper() and nxt is not None and nxt.isupper():
        return False  # an initial: "J. K. Rowling"
    if word[:-1].isdigit() and nxt is not None and nxt != "\n":
        b = i - len(word)
        while b >= 0 and text[b] == " ":
            b -= 1
        if b < 0 or text[b] == "\n" or text[b] in _END_MARKS or text[b] in _CLOSERS:
            return False  # a list marker: "1. Preheat the oven. 2. Mix the flour."
    return nxt is None or nxt == "\n" or not nxt.islower()  # "cf. the" style: lowercase goes on


def _ellipsis_ends(text: str, k: int, final: bool) -> bool | None:
    n = len(text)
    if k < n and not text[k].isspace():
        return sizing.is_cjk(text[k])  # "……然后" ends; "...and" does not
    m = _next_nonspace(text, k)
    if m >= n:
        return True if final else None
    return text[m] == "\n" or not text[m].islower()


def sentence_cuts(text: str, final: bool = True) -> tuple[list[int], int | None]:
    """Indices where sentences end (after their marks and closing quotes/brackets), in order.

    With final=False (incremental input) an ASCII mark near the end of text is undecided; the second
    value is then the index of the first undecided mark (None when there is none).
    """
    cuts: list[int] = []
    n = len(text)
    i = 0
    while i < n:
        ch = text[i]
        if ch == "\n":
            if not cuts or cuts[-1] != i:
                cuts.append(i)
            i += 1
            continue
        if ch not in _END_MARKS:
            i += 1
            continue
        j = i
        while j < n and text[j] in _END_MARKS:
            j += 1
        k = j
        while k < n and text[k] in _CLOSERS:
            k += 1
        run = text[i:j]
        if run in (".", "．"):
            ends = _period_ends(text, i, k, final)
        elif "…" in run or ".." in run:
            if any(c in _STRONG_ENDS for c in run):
                ends = True
            elif j == n and not final:
                ends = None  # more dots may follow
            else:
                ends = _ellipsis_ends(text, k, final)
        elif any(c in _STRONG_ENDS for c in run):
            ends = True  # 。！？ are final at once
        elif k < n:
            ends = text[k].isspace() or sizing.is_cjk(text[k])  # "Yahoo!Inc", "?a=1" do not end
        else:
            ends = True if final else None
        if ends is None:
            return cuts, i
        if ends and (not cuts or cuts[-1] != k):
            cuts.append(k)
        i = k if k > i else i + 1
    return cuts, None


def clause_cuts(text: str, final: bool = True) -> list[int]:
    """Indices after clause marks: CJK ones always; "," and ":" only before whitespace or CJK."""
    cuts = []
    n = len(text)
    for i, ch in enumerate(text):
        if ch in _CJK_CLAUSE:
            cuts.append(i + 1)
        elif ch in _ASCII_CLAUSE:
            if i + 1 < n:
                if text[i + 1].isspace() or sizing.is_cjk(text[i + 1]):
                    cuts.append(i + 1)
            elif final:
                cuts.append(i + 1)
    return cuts


# Joins to the character before it: ZWJ, variation selectors, skin tones, tag characters.
_GLUE_NEXT = re.compile(
    "[\u200d\ufe00-\ufe0f\U0001f3fb-\U0001f3ff\U000e0020-\U000e007f\U000e0100-\U000e01ef]"
)
_REGIONAL = re.compile(r"[\U0001f1e6-\U0001f1ff]")


def _grapheme_boundary(text: str, i: int) -> bool:
    """Approximate extended-grapheme boundary test at index i (0 < i < len)."""
    a, b = text[i - 1], text[i]
    if unicodedata.category(b) in ("Mn", "Mc", "Me") or _GLUE_NEXT.match(b) or a == "\u200d":
        return False
    if _REGIONAL.match(a) and _REGIONAL.match(b):
        j = i - 1
        while j > 0 and _REGIONAL.match(text[j - 1]):
            j -= 1
        return (i - j) % 2 == 0  # flags are pairs
    return not ("\u1100" <= a <= "\u11ff" and "\u1160" <= b <= "\u11ff")  # Hangul jamo L V T


def _segment_text(text: str, p: int, q: int) -> str:
    return text[p:q].strip().replace("\n", " ")


class _Splitter:
    """Greedy packer over one normalised text: each step takes the farthest cut that fits."""

    def __init__(self, text: str, count_tokens: CountTokens, final: bool = True,
                 allowed: Container[int] | None = None):
        """allowed: the only indices where a cut may fall (e.g. not inside a normalized number); None: any."""
        self.text = text
        self.count = count_tokens
        ok = (lambda i: True) if allowed is None else (lambda i: i in allowed)
        self.ok = ok
        self.sentences = [i for i in sentence_cuts(text, final)[0] if ok(i)] + [len(text)]
        self.clauses = [i for i in clause_cuts(text, final) if ok(i)]
        self.spaces = [i for i, c in enumerate(text) if c.isspace() and ok(i)]

    def cost(self, p: int, q: int) -> int:
        s = _segment_text(self.text, p, q)
        return self.count(s) if s else 0

    def _farthest(self, p: int, cands: Sequence[int], limit: int) -> int | None:
        """Farthest candidate in cands (sorted, all > p) with cost(p, c) <= limit.

        Galloping then binary search: probed spans stay within twice the answer, so a long text
        costs O(n log n), not O(n^2). Assumes cost grows with the span (true of the estimate; a real
        tokenizer is close enough, and every answer is checked against the limit anyway)."""
        n = len(cands)
        if n == 0 or self.cost(p, cands[0]) > limit:
            return None
        lo, step = 0, 1  # cands[lo] fits
        while lo + step < n and self.cost(p, cands[lo + step]) <= limit:
            lo += step
            step *= 2
        hi = min(n, lo + step)  # cands[hi] does not fit (or is past the end)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if self.cost(p, cands[mid]) <= limit:
                lo = mid
            else:
                hi = mid
        return cands[lo]

    def next_cut(self, p: int, limit: int, one_sentence: bool = False) -> int:
        text = self.text
        si = bisect.bisect_right(self.sentences, p)
        e = self.sentences[si]
        if self.cost(p, e) <= limit:
            if one_sentence:
                return e
            return self._farthest(p, self.sentences[si:], limit) or e
        # The sentence alone is too long: the farthest code point that fits bounds every other level.
        qmax = self._farthest(p, range(p + 1, e), limit)
        while qmax is not None and qmax > p + 1 and not self.ok(qmax):
            qmax -= 1  # never inside one normalized expansion
        if qmax is None:
            raise ValueError(f"max_tokens={limit}: must be at least the token count of one character "
                             f"({text[p]!r} costs {self.cost(p, p + 1)})")
        half = p + (qmax - p) // 2  # a better-kind cut is taken if it keeps at least half the room
        for cands in (self.clauses, self.spaces):
            c = bisect.bisect_right(cands, qmax) - 1
            if c >= 0 and cands[c] > max(p, half) and self.cost(p, cands[c]) <= limit \
                    and _segment_text(text, p, cands[c]):
                return cands[c]
        for level in (3, 4, 5):
            for q in range(qmax, max(p, half if level == 3 else p), -1):
                if not self.ok(q):
                    continue
                if level == 3 and not (sizing.is_cjk(text[q - 1]) or sizing.is_cjk(text[q])):
                    continue  # CJK text has no spaces: a character boundary next to CJK is a word edge
                if level == 4 and not _grapheme_boundary(text, q):
                    continue
                return q
        return qmax

    def spans(self, max_tokens: int, first_max_tokens: int | None = None) -> list[tuple[int, int]]:
        text, n = self.text, len(self.text)
        out = []
        p = 0
        while p < n:
            while p < n and text[p].isspace():
                p += 1
            if p >= n:
                break
            if first_max_tokens is not None:
                q = self.next_cut(p, min(first_max_tokens, max_tokens), one_sentence=True)
                if is_speakable(text[p:q]):
                    first_max_tokens = None  # only the first speakable segment is short
            else:
                q = self.next_cut(p, max_tokens)
            out.append((p, q))
            p = q
        return out


def _check_budget(name: str, value: int | None) -> None:
    if value is not None and value < 1:
        raise ValueError(f"{name}={value}: must be a positive number of tokens")


def split_spans(text: str, max_tokens: int, count_tokens: CountTokens, *, allowed: Container[int] | None = None,
                first_max_tokens: int | None = None) -> list[tuple[int, int]]:
    """Spans (start, end) of an already normalised text, cut as split_segments() cuts it, each at most
    max_tokens by count_tokens; cuts only at `allowed` indices (when given). Spans with nothing speakable
    are included: the caller decides what they cover."""
    _check_budget("max_tokens", max_tokens)
    _check_budget("first_max_tokens", first_max_tokens)
    return _Splitter(text, count_tokens, allowed=allowed).spans(max_tokens, first_max_tokens)


def split_segments(text: str, max_tokens: int, count_tokens: CountTokens = sizing.estimate_tokens,
                   first_max_tokens: int | None = None) -> list[str]:
    """Cut text into segments of at most max_tokens (by count_tokens) each, packing whole sentences.

    Text is normalised first; segments with nothing speakable (stray punctuation) are left out, and
    nothing speakable is lost: the segments joined with spaces read as the normalised text.
    first_max_tokens: make the first segment the first sentence alone (cut to this budget), so that
    first audio comes sooner. Raises ValueError when a single character costs more than the budget.
    """
    text = normalize(text)
    if not text:
        return []
    spans = split_spans(text, max_tokens, count_tokens, first_max_tokens=first_max_tokens)
    segs = (_segment_text(text, p, q) for p, q in spans)
    return [s for s in segs if is_speakable(s)]


def ready_cut(buf: str, threshold_chars: int, max_tokens: int, count_tokens: CountTokens) -> int:
    """How much of a clean incremental buffer is ready to speak now: up to its last certain sentence end;
    up to its last clause end once threshold_chars wait after that; and when what is left outgrows
    max_tokens (a long run without punctuation), all but its tail."""
    cut = 0
    cuts, _ = sentence_cuts(buf, final=False)
    if cuts:
        cut = cuts[-1]
    rest = buf[cut:]
    if len(rest.strip()) >= threshold_chars:
        clauses = clause_cuts(rest, final=False)
        if clauses:
            cut += clauses[-1]
    tail = buf[cut:]
    if tail.strip() and count_tokens(tail.strip()) > max_tokens:
        tail_spans = _Splitter(tail, count_tokens, final=False).spans(max_tokens)
        cut += tail_spans[-1][0]
    return cut


def _join_clean(buf: str, text: str) -> str:
    """_collapse(_clean(buf + text)).lstrip() for a buf that is already clean, in time ~len(text):
    only the junction (trailing whitespace, a base character and its combining marks) is redone."""
    j = len(buf)
    while j > 0 and buf[j - 1].isspace():
        j -= 1
    while j > 0 and unicodedata.combining(buf[j - 1]):
        j -= 1
    j = max(0, j - 1)
    return (buf[:j] + _collapse(_clean(buf[j:] + text))).lstrip()


class TextBuffer:
    """Incremental text (protocol `text` messages, often 1-3 characters each).

    append() returns pieces ready to speak now: complete sentences, or, once threshold_chars wait,
    text up to the last clause end; or, when the buffer outgrows max_tokens, all but its tail.
    A sentence end is certain only once the next character arrived ("3." may become "3.14"); CJK
    marks such as "。" are final at once. flush() returns the rest (the caller's max-delay timer).
    Every piece has count_tokens(piece) <= max_tokens; flush() may return more, or nothing
    speakable: pass it through split_segments() and skip it when is_speakable() is False.
    """

    def __init__(self, threshold_chars: int = 60, max_tokens: int = sizing.segment_budget(2048),
                 count_tokens: CountTokens = sizing.estimate_tokens):
        if threshold_chars < 1:
            raise ValueError(f"threshold_chars={threshold_chars}: must be a positive number of characters")
        _check_budget("max_tokens", max_tokens)
        self.threshold_chars = threshold_chars
        self.max_tokens = max_tokens
        self.count_tokens = count_tokens
        self._buf = ""

    @property
    def pending(self) -> str:
        return self._buf

    def append(self, text: str) -> list[str]:
        buf = _join_clean(self._buf, text)
        cut = ready_cut(buf, self.threshold_chars, self.max_tokens, self.count_tokens)
        spans = _Splitter(buf[:cut], self.count_tokens).spans(self.max_tokens) if cut else []
        self._buf = buf[cut:].lstrip()
        pieces = (_segment_text(buf, p, q) for p, q in spans)
        return [s for s in pieces if is_speakable(s)]

    def flush(self) -> str:
        out, self._buf = normalize(self._buf), ""
        return out
