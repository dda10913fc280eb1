"""Text normalization for the engine, with an alignment back to the text as the client sent it.

`normalize(text)` cleans whitespace and controls (what the segmenter needs) and, with expand=True,
spells out numbers, dates, times, money, percentages, units and phone numbers in Chinese and English,
so that VoxCPM reads "2024年3月5日" as a date and "$5.20" as money.

Why `wetext`: it is the normalizer upstream VoxCPM calls (WeTextProcessing's grammars, compiled FSTs
shipped in the wheel, no download at run time, C++ via kaldifst). Its own mapping API
(`normalize_with_mapping`) traces FST paths in Python and costs 10-25x the plain call (190 ms for one
59-character Chinese sentence), so it is not used: wetext runs only on small windows around the
spans that hold digits, and each window's output is aligned to its input here (common prefix and
suffix, then equal Chinese characters or digit-free English words inside). Text without digits never
reaches wetext, so it stays byte-identical (after the cleanup); abbreviations such as "Dr." are left
to the model. URLs, e-mail addresses and version numbers ("v1.2.3", "Python 3.11") are left as
written. Where wetext 0.1.8 reads wrongly we apply rules of our own (`_FINAL_RULES`: spoken as we
write them; `_RULES_ZH`: rewrites before wetext), each with a test in tests/test_normalize.py.

Offsets are Unicode code points into `Normalized.source`, the text exactly as sent.
"""

from __future__ import annotations

import asyncio
import difflib
import functools
import itertools
import multiprocessing
import re
import threading
import unicodedata
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

LANGUAGES = ("auto", "zh", "en")

# ---------------------------------------------------------------------------------------------
# The result


@dataclass(frozen=True)
class Normalized:
    """`spoken` is what the model reads; each spoken code point j was made from
    source[src_start[j]:src_end[j]]; code points of one expansion share a `group` (> 0), and a cut
    between two code points of one group would split an expansion."""

    source: str
    spoken: str
    src_start: tuple[int, ...] = field(repr=False)
    src_end: tuple[int, ...] = field(repr=False)
    group: tuple[int, ...] = field(repr=False)

    def to_source(self, spoken_start: int, spoken_end: int) -> tuple[int, int]:
        """The smallest source span covering what spoken[spoken_start:spoken_end] was made from,
        trimmed of whitespace at both ends. An empty (or all-whitespace) range gives (p, p)."""
        n = len(self.spoken)
        a, b = max(0, spoken_start), min(n, spoken_end)
        if a >= b:
            p = self.src_start[a] if a < n else len(self.source)
            return p, p
        s, e = min(self.src_start[a:b]), max(self.src_end[a:b])
        while s < e and self.source[s].isspace():
            s += 1
        while e > s and self.source[e - 1].isspace():
            e -= 1
        return s, e

    def boundaries(self) -> list[int]:
        """Sorted spoken indices (0 and len(spoken) included) where a cut splits no expansion."""
        g, s, e = self.group, self.src_start, self.src_end
        # not inside an expansion, nor inside one source unit (a letter and its combining marks)
        inner = (j for j in range(1, len(g)) if (g[j] == 0 or g[j] != g[j - 1]) and s[j] >= e[j - 1])
        return [0, *inner, len(g)] if g else [0]

    def pieces(self) -> list[tuple[int, int, int, int]]:
        """(spoken_start, spoken_end, source_start, source_end) runs, in order: maximal runs of
        code points with one source span (an expansion, a collapsed whitespace run) or copied 1:1."""
        out: list[tuple[int, int, int, int]] = []
        for j in range(len(self.spoken)):
            s, e = self.src_start[j], self.src_end[j]
            if out and out[-1][2] == s and out[-1][3] == e:
                a, _, _, _ = out[-1]
                out[-1] = (a, j + 1, s, e)
            else:
                out.append((j, j + 1, s, e))
        return out


# ---------------------------------------------------------------------------------------------
# Cleanup (expand=False): exactly what voxws.text.normalize always did, with offsets

_TO_NEWLINE = frozenset("\r\x0b\x0c\x85\u2028\u2029")
_DROP_FORMAT = frozenset("\ufeff\u200b\u2060\u00ad")  # BOM, zero-width space, word joiner, soft hyphen


def _dropped(c: str) -> bool:
    return c != "\n" and (c in _DROP_FORMAT or unicodedata.category(c) in ("Cc", "Cs"))


def _starts_cluster(c: str) -> bool:
    """Where NFC cannot combine across: a starter that is not a Hangul medial/final jamo."""
    return unicodedata.combining(c) == 0 and not ("\u1160" <= c <= "\u11ff")


# Text with none of these is already clean (the common case: the fast path, in C).
_NEEDS_CLEANUP = re.compile(r"[^\S \n]| [ \n]|\n[ \n]"  # whitespace other than single spaces and line breaks
                            r"|[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029\ufeff\u200b\u2060\u00ad\ud800-\udfff]")


def _cleanup(text: str) -> tuple[str, list[int] | range, list[int] | range]:
    """(clean text, source start, source end per clean code point)."""
    if (not _NEEDS_CLEANUP.search(text) and not (text[:1].isspace() or text[-1:].isspace())
            and unicodedata.is_normalized("NFC", text)):
        return text, range(len(text)), range(1, len(text) + 1)
    chars: list[str] = []
    pos: list[int] = []
    for i, c in enumerate(text):
        if c in _TO_NEWLINE:
            c = "\n"
        elif c == "\t":
            c = " "
        elif _dropped(c):
            continue
        chars.append(c)
        pos.append(i)
    # NFC per cluster (a starter and what follows it); if that ever differs from NFC of the whole,
    # the whole text becomes one cluster (correct, only coarse).
    bounds = [k for k in range(len(chars))
              if k == 0 or _starts_cluster(chars[k]) or chars[k - 1].isspace() or chars[k].isspace()]
    bounds.append(len(chars))
    units: list[tuple[str, int, int]] = []
    for a, b in itertools.pairwise(bounds):
        units.append((unicodedata.normalize("NFC", "".join(chars[a:b])), pos[a], pos[b - 1] + 1))
    joined = "".join(u for u, _, _ in units)
    if joined != unicodedata.normalize("NFC", "".join(chars)):
        units = [(unicodedata.normalize("NFC", "".join(chars)), pos[0], pos[-1] + 1)] if chars else []
    # Collapse whitespace runs (a run holding a line break becomes "\n"), trim the ends.
    out: list[str] = []
    ss: list[int] = []
    se: list[int] = []
    k, n = 0, len(units)
    while k < n:
        u, s, e = units[k]
        if u.isspace():
            m = k
            newline = False
            while m < n and units[m][0].isspace():
                newline = newline or "\n" in units[m][0]
                m += 1
            if k > 0 and m < n:  # inner run; runs at the ends are trimmed
                out.append("\n" if newline else " ")
                ss.append(s)
                se.append(units[m - 1][2])
            k = m
            continue
        for ch in u:
            out.append(ch)
            ss.append(s)
            se.append(e)
        k += 1
    return "".join(out), ss, se


# ---------------------------------------------------------------------------------------------
# Spans wetext must not touch, spans it must see

_NUMBER_ABBR = re.compile(r"(?i)no\.|nos\.|pp?\.|vol\.|fig\.|ch\.|sec\.")
_PROTECTED = re.compile(
    r"(?:https?://|ftp://|www\.)[^\s，。！？；、）」』]+"  # URLs
    r"|[\w.+-]+@[\w-]+(?:\.[\w-]+)+"  # e-mail
    r"|\b(?:[A-Za-z0-9-]+\.)+(?:com|org|net|io|ai|dev|app|edu|gov|cn|uk|de|jp|fr|info|co)\b(?:/[^\s，。]*)?"
    r"|(?<![\w.])[vV]\d+(?:\.\d+)+[a-z0-9]*"  # v1.2.3
    r"|(?<![\w.])\d+(?:\.\d+){2,}(?![\w.]*\d)"  # 1.2.3, 10.0.0.1
    r"|(?<=[A-Za-z][ ])\d+\.\d+(?:\.\d+)*(?=[^\d%‰]|$)"  # Python 3.11, iOS 17.2 (filtered in _protected_spans)
    r"|(?<=[A-Za-z])\d+\.\d+(?=[^\d%‰]|$)"  # Python3.11
    r"|(?<=版本)\d+(?:\.\d+)+"
)
# A capitalised word before a decimal makes it a version ("Python 3.11"), unless it is one of these.
_NOT_NAMES = frozenset((
    "a", "an", "the", "it", "is", "was", "are", "be", "in", "on", "at", "by", "for", "of", "to", "from", "and",
    "or", "but", "if", "as", "with", "about", "only", "just", "over", "under", "around", "nearly", "almost",
    "each", "every", "all", "some", "total", "costs", "cost", "pay", "paid", "pi", "its", "this", "that", "these",
    "those", "there", "here", "then", "than", "up", "down", "into", "out", "off", "per", "near", "below", "above",
    "after", "before", "since", "until", "between",
))

_VERSION_WORDS = frozenset(("version", "ver", "release", "build", "python", "node", "java"))
_HOT = re.compile(r"\d")
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002fa1f]")


def _is_cjk(c: str) -> bool:
    return bool(_CJK.match(c))


def _is_latin(c: str) -> bool:
    return c.isalpha() and not _is_cjk(c) and ord(c) < 0x2000


def _protected_spans(text: str) -> list[tuple[int, int]]:
    spans = []
    for m in _PROTECTED.finditer(text):
        s, e = m.span()
        if s > 0 and text[s - 1] in " " and text[s].isdigit() and "." in m.group() and m.group().count(".") == 1:
            word = re.search(r"([A-Za-z][\w+#-]*) $", text[max(0, s - 40):s])
            name = word.group(1) if word else ""
            if name.lower() not in _VERSION_WORDS and (not name or name.lower() in _NOT_NAMES or name.islower()):
                continue  # "costs 3.50", "pi is 3.14": a decimal, not a version
        spans.append((s, e))
    return spans


# ---------------------------------------------------------------------------------------------
# Rules of our own (wetext 0.1.8 reads these wrongly; each has a test in tests/test_normalize.py)

_ONES = (
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
    "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen",
)
_TENS = ["_", "_", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
_SCALES = ((10**12, "trillion"), (10**9, "billion"), (10**6, "million"), (1000, "thousand"), (100, "hundred"))


def en_cardinal(n: int) -> str:
    """English words for a non-negative integer: 1200 -> "one thousand two hundred"."""
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else " " + _ONES[n % 10])
    for value, name in _SCALES:
        if n >= value:
            head, rest = divmod(n, value)
            words = f"{en_cardinal(head)} {name}"
            return words if rest == 0 else f"{words} {en_cardinal(rest)}"
    raise AssertionError(n)


def _en_year(n: int) -> str:
    if 2000 <= n < 2010 or n % 1000 == 0:
        return en_cardinal(n)
    hi, lo = divmod(n, 100)
    if lo == 0:
        return f"{en_cardinal(hi)} hundred"
    return f"{en_cardinal(hi)} {'oh ' + _ONES[lo] if lo < 10 else en_cardinal(lo)}"


_CURRENCIES = {"$": ("dollar", "dollars", "cent", "cents"), "€": ("euro", "euros", "cent", "cents"),
               "£": ("pound", "pounds", "penny", "pence"), "¥": ("yen", "yen", "", ""),
               "￥": ("yuan", "yuan", "", "")}


def _en_money(m: re.Match[str]) -> str:
    one, many, cent, cents = _CURRENCIES[m.group(1)]
    whole = int(m.group(2).replace(",", ""))
    frac = m.group(3)
    scale = m.group(4)
    if scale:  # "$2.5 million" -> "two point five million dollars"
        number = en_cardinal(whole) + (" point " + " ".join(_ONES[int(d)] for d in frac) if frac else "")
        return f"{number} {scale.strip()} {many}"
    parts = []
    if whole or not frac or not cent:
        parts.append(f"{en_cardinal(whole)} {one if whole == 1 else many}")
    if frac and cent:
        c = int(frac.ljust(2, "0"))
        if c:
            parts.append(f"{en_cardinal(c)} {cent if c == 1 else cents}")
    elif frac:  # yen/yuan with decimals
        parts[0] = f"{en_cardinal(whole)} point {' '.join(_ONES[int(d)] for d in frac)} {many}"
    return " and ".join(parts)


def _en_decade(m: re.Match[str]) -> str:
    words = _en_year(int(m.group(1)))
    last = words.rsplit(" ", 1)
    tail = last[-1]
    tail = tail[:-1] + "ies" if tail.endswith("y") else tail + "s"
    return (last[0] + " " + tail) if len(last) == 2 else tail


_EN_DIGITS = dict(enumerate(_ONES[:10]))


def _en_phone(m: re.Match[str]) -> str:
    groups = re.findall(r"\+|\d+", m.group(0))
    words = []
    for g in groups:
        words.append("plus" if g == "+" else " ".join(_EN_DIGITS[int(d)] for d in g))
    out = []
    for w in words:  # "plus one, five five five, ..."
        if out and out[-1] == "plus":
            out[-1] = f"plus {w}"
        else:
            out.append(w)
    return ", ".join(out)


_ZH_DIGITS = "零幺二三四五六七八九"


def _zh_phone(m: re.Match[str]) -> str:
    return "".join("加" if c == "+" else _ZH_DIGITS[int(c)] if c.isdigit() else " " if c in " -" else c
                   for c in m.group(0)).strip()


_THOUSANDS = re.compile(r"(?<![\d.,])\d{1,3}(?:,\d{3})+(?![\d,]|\.\d+\.)")
_THOUSANDS_EN = re.compile(r"(?<![\d.,])(\d{1,3}(?:,\d{3})+)(?:\.(\d+))?(?![\d,]|\.\d)")


def _en_grouped(m: re.Match[str]) -> str:
    words = en_cardinal(int(m.group(1).replace(",", "")))
    return words + (" point " + " ".join(_ONES[int(d)] for d in m.group(2)) if m.group(2) else "")


_PHONE_EN = re.compile(
    r"(?<![\d\w])(?:\+\d{1,3}[ -]?)?(?:\(\d{3}\) ?|\d{3}[ .-])\d{3}[ .-]\d{4}(?!\d)"
    r"|(?<![\d\w-])1-\d{3}-\d{3}-\d{4}(?!\d)"
    r"|(?<![\d\w-])\d{3}-\d{4}(?![\d-])")
_PHONE_ZH = re.compile(r"(?<!\d)(?:\+\d{1,3}[ -]?)?1\d{2}[ -]\d{4}[ -]\d{4}(?!\d)|\+\d{1,3}[ -]?\d[\d -]{6,}\d")

Rule = tuple[re.Pattern[str], Callable[[re.Match[str]], str] | str]

# Spoken as we write them, wetext never sees these (feeding our words back costs more than the digits).
_FINAL_RULES: list[tuple[str, re.Pattern[str], Callable[[re.Match[str]], str] | str]] = [
    ("en", _PHONE_EN, _en_phone),  # "555-1234" is not the range 555 to 1234; "+1 555 123 4567" crashes wetext
    ("en", re.compile(r"([$€£¥￥])(\d{1,3}(?:,\d{3})+|\d+)(?:\.(\d{1,2})(?!\d))?"
                      r"(\s(?:thousand|million|billion|trillion))?(?![\d.]*\d)"),
     _en_money),  # wetext: "$1,200" -> "thousand two hundred dollars", "$5.20" -> "five point two dollars"
    ("en", _THOUSANDS_EN, _en_grouped),  # "1,000" -> "thousand", "1000" -> "ten hundred"
    ("en", re.compile(r"(?<!\d)((?:1[0-9]|20)\d0)s\b"), _en_decade),  # "1990s" -> "... ninety seconds"
    ("en", re.compile(r"\bNo\. ?(?=\d)"), "number "),  # "No. 5" -> "Number. five"
    ("en", re.compile(r"#(?=\d)"), "number "),  # "#1" crashes wetext
    ("zh", _PHONE_ZH, _zh_phone),  # "+86 138 1234 5678" -> "正八十六 一百三十八 ..."
]
# Rewrites of a window before wetext reads it.
_RULES_ZH: list[Rule] = [
    (_THOUSANDS, lambda m: m.group(0).replace(",", "")),  # "$1,200" -> "一美元,两百"
    # "10-20" -> "十月二十日", "1990-2000" -> "一千九百九十减两千": a range between two numbers
    (re.compile(r"(?<![\d.\-/:])(\d+(?:\.\d+)?)-(\d+(?:\.\d+)?)(?![\d\-/:.])"),
     lambda m: m.group(0) if _not_a_range(m) else f"{m.group(1)}到{m.group(2)}"),
]
_RULES_EN: list[Rule] = []


def _not_a_range(m: re.Match[str]) -> bool:
    """"2024-03" is a month, "010-12345678" a phone number: wetext reads those right."""
    left, right = m.group(1), m.group(2)
    return bool(re.fullmatch(r"\d{4}-(0?[1-9]|1[0-2])", m.group(0))) or left.startswith("0") or len(right) >= 5


def _apply_rules(text: str, rules: list[Rule]) -> str:
    for pattern, repl in rules:
        text = pattern.sub(repl, text)
    return text


# ---------------------------------------------------------------------------------------------
# wetext

_lock = threading.Lock()
_wetext: Callable[..., str] | None = None


def warm_up() -> None:
    """Load wetext's FSTs (about 2.5 s, once per process) and run each language once. Call it at
    server start (off the event loop, e.g. in `normalize_async`'s executor) so no request pays it."""
    global _wetext
    with _lock:
        if _wetext is None:
            from wetext import normalize as wetext_normalize  # loads every FST at import

            _wetext = wetext_normalize
    _wetext("1", lang="zh")
    _wetext("1", lang="en")


def _run_wetext(text: str, lang: str) -> str:
    if _wetext is None:
        warm_up()
    assert _wetext is not None
    try:
        out = _wetext(text, lang=lang)
    except Exception:  # wetext asserts on some inputs ("#1", "+1 555 ..."): keep the text as written
        return text
    return out if out.strip() else text


# ---------------------------------------------------------------------------------------------
# Windows: the spans around digits that wetext sees, with context for units, months, am/pm


def _language_at(text: str, a: int, b: int, default: str) -> str:
    if (b < len(text) and _is_cjk(text[b])) or (a > 0 and _is_cjk(text[a - 1])):
        return "zh"  # glued to Chinese: "2024年", "为$1,200", "100元"
    for ks in (range(a - 1, -1, -1), range(b, len(text))):  # the nearest letter before, then after
        for k in ks:
            c = text[k]
            if c == "\n":
                break
            if _is_cjk(c):
                return "zh"
            if _is_latin(c):
                return "en"
    return default


_STOP = frozenset("。！？；")
_ZH_UNIT_WORD = re.compile(r" [A-Za-z°℃%/]{1,6}(?![A-Za-z])")


def _plan(text: str, language: str) -> list[tuple[int, int, str, str | None]]:
    """What to replace, in order: (start, end, language, our words) for a rule of our own, or
    (start, end, language, None) for a window that wetext reads. None overlaps a protected span."""
    blocked = [False] * (len(text) + 1)
    for s, e in _protected_spans(text):
        for k in range(s, e):
            blocked[k] = True
    if language == "auto":
        default = "zh" if _CJK.search(text) or not any(_is_latin(c) for c in text) else "en"
    else:
        default = language
    finals: list[tuple[int, int, str, str | None]] = []
    for rule_lang, pattern, repl in _FINAL_RULES:
        for m in pattern.finditer(text):
            s, e = m.span()
            if s == e or any(blocked[s:e]):
                continue
            lang = language if language != "auto" else _language_at(text, s, e, default)
            if lang != rule_lang:
                continue
            finals.append((s, e, lang, repl if isinstance(repl, str) else repl(m)))
            for k in range(s, e):
                blocked[k] = True
    raw: list[tuple[int, int, str]] = []
    n = len(text)
    i = 0
    while i < n:
        if not text[i].isdigit() or blocked[i]:
            i += 1
            continue
        # the digit-bearing token: a run of non-space, non-CJK, unblocked characters; digit groups
        # separated by single spaces stay together ("+86 138 1234 5678")
        a = i
        while a > 0 and not blocked[a - 1] and ((not text[a - 1].isspace() and not _is_cjk(text[a - 1]))
                                                or (text[a - 1] == " " and a > 1 and text[a - 2].isdigit())):
            a -= 1
        b = i
        while b < n and not blocked[b] and ((not text[b].isspace() and not _is_cjk(text[b]))
                                            or (text[b] == " " and b + 1 < n and text[b + 1].isdigit())):
            b += 1
        lang = language if language != "auto" else _language_at(text, a, b, default)
        if lang == "zh":
            a2, b2 = a, b
            for _ in range(2):  # 2 characters of context before ("第", "下午"), 3 after (units): wetext's
                # Chinese grammar costs about 1 ms a character, so windows stay small
                if a2 > 0 and not blocked[a2 - 1] and not text[a2 - 1].isspace() and text[a2 - 1] not in _STOP:
                    a2 -= 1
            unit = _ZH_UNIT_WORD.match(text, b2)  # "5 kg", "120 km/h"
            if unit and not any(blocked[unit.start():unit.end()]):
                b2 = unit.end()
            for _ in range(3):
                if b2 < n and not blocked[b2] and not text[b2].isspace() and text[b2] not in _STOP:
                    b2 += 1
        else:
            a2 = _extend_words(text, a, blocked, -1, 1)
            b2 = _extend_words(text, b, blocked, +1, 2)
        raw.append((a2, b2, lang))
        i = b
    merged: list[tuple[int, int, str]] = []
    for a, b, lang in raw:
        if merged and a <= merged[-1][1] and merged[-1][2] == lang:
            merged[-1] = (merged[-1][0], max(b, merged[-1][1]), lang)
        elif merged and a < merged[-1][1]:  # different languages overlapping: split the overlap
            pa, _, pl = merged[-1]
            merged[-1] = (pa, max(pa, a), pl)
            merged.append((a, b, lang))
        else:
            merged.append((a, b, lang))
    windows: list[tuple[int, int, str, str | None]] = [(a, b, lang, None) for a, b, lang in merged if b > a]
    return sorted(finals + windows)


def _extend_words(text: str, k: int, blocked: list[bool], step: int, words: int) -> int:
    """From boundary k, take up to `words` whitespace-delimited words (same line, Latin only)."""
    n = len(text)
    for _ in range(words):
        j = k
        if step < 0:
            while j > 0 and text[j - 1] == " ":
                j -= 1
            m = j
            while m > 0 and not text[m - 1].isspace() and not blocked[m - 1] and not _is_cjk(text[m - 1]):
                m -= 1
            if m == j or (m > 0 and not text[m - 1].isspace()):
                break
            if any(c in ".!?" for c in text[m:j]) and not _NUMBER_ABBR.fullmatch(text[m:j]):
                break  # the previous sentence is no context
            k = m
        else:
            while j < n and text[j] == " ":
                j += 1
            m = j
            while m < n and not text[m].isspace() and not blocked[m] and not _is_cjk(text[m]):
                m += 1
            if m == j or (m < n and not text[m].isspace()):
                break
            k = m
            if any(c in ".!?" for c in text[j:m]):
                break
    return k


# ---------------------------------------------------------------------------------------------
# Aligning one window's output to its input

_SNAP = re.compile(r"[A-Za-z0-9$€£¥￥%‰°℃.,:/+\-]")


def _align_window(src: str, out: str, lang: str) -> list[tuple[int, int, int, int]]:
    """Replacements (src_a, src_b, out_a, out_b), in order, that turn src into out; the rest is equal."""
    if src == out:
        return []
    p = 0
    while p < min(len(src), len(out)) and src[p] == out[p]:
        p += 1
    q = 0
    while q < min(len(src), len(out)) - p and src[-1 - q] == out[-1 - q]:
        q += 1
    # never end a replacement inside a word or number ("March" vs "march", "120km" vs "120 km")
    while p > 0 and _SNAP.match(src[p - 1]):
        p -= 1
    while q > 0 and _SNAP.match(src[len(src) - q]):
        q -= 1
    sa, sb, oa, ob = p, len(src) - q, p, len(out) - q
    if sa == sb or oa == ob:  # a pure insertion or deletion: attach it to a neighbouring character
        if sa > 0:
            sa, oa = sa - 1, oa - 1
        else:
            sb, ob = sb + 1, ob + 1
    # Inside, what is equal stays itself: Chinese characters ("年", "月", "万") and punctuation, or
    # English words without digits ("liter", "at"), so that words map back to themselves.
    unit = _UNIT_ZH if lang == "zh" else _UNIT_EN
    su = [(m.start() + sa, m.end() + sa) for m in unit.finditer(src[sa:sb])]
    ou = [(m.start() + oa, m.end() + oa) for m in unit.finditer(out[oa:ob])]
    sm = difflib.SequenceMatcher(None, [src[x:y] for x, y in su], [out[x:y] for x, y in ou], autojunk=False)
    blocks: list[tuple[int, int, int, int]] = []  # (src_a, src_b, out_a, out_b), equal
    for i, j, size in sm.get_matching_blocks():
        for d in range(size):
            x, y = su[i + d]
            if _KEEP.search(src[x:y]):
                continue
            if blocks and blocks[-1][1] == x and blocks[-1][3] == ou[j + d][0]:
                blocks[-1] = (blocks[-1][0], y, blocks[-1][2], ou[j + d][1])
            else:
                blocks.append((x, y, ou[j + d][0], ou[j + d][1]))
    reps: list[list[int]] = []
    i, j = sa, oa
    for bx, by, bo, bp in [*blocks, (sb, sb, ob, ob)]:
        if bx > i or bo > j:
            if reps and (bx == i or bo == j or reps[-1][0] == reps[-1][1] or reps[-1][2] == reps[-1][3]):
                reps[-1][1], reps[-1][3] = bx, bo  # an empty side: swallow the equal block between
            else:
                reps.append([i, bx, j, bo])
        i, j = by, bp
    if any(r[0] == r[1] or r[2] == r[3] for r in reps):
        return [(sa, sb, oa, ob)]  # could not pair up: one replacement for the whole region
    return [(r[0], r[1], r[2], r[3]) for r in reps]


_UNIT_ZH = re.compile(r".", re.S)
_UNIT_EN = re.compile(r"[A-Za-z]+|\s+|.", re.S)
_KEEP = re.compile(r"[0-9$€£¥￥%‰°℃+\-/:.]|^\s+$")  # never an anchor: digits, symbols, bare spaces


# ---------------------------------------------------------------------------------------------
# The entry points


def normalize(text: str, *, language: str = "auto", expand: bool = True) -> Normalized:
    """Clean `text` (expand=False) and spell out numbers and the like (expand=True) for the model.

    language: "auto" (Chinese or English, chosen per number by the script around it), "zh" or "en".
    Blocking (wetext is C++ but holds the GIL); on the server use `normalize_async`.
    Raises ValueError for an unknown language.
    """
    if language not in LANGUAGES:
        raise ValueError(f"language={language!r}: must be one of {', '.join(LANGUAGES)}")
    clean, cs, ce = _cleanup(text)
    if not expand or not _HOT.search(clean):
        return Normalized(text, clean, tuple(cs), tuple(ce), tuple([0] * len(clean)))
    spoken: list[str] = []
    ss: list[int] = []
    se: list[int] = []
    gg: list[int] = []
    group = 0
    k = 0  # next clean index to copy
    for wa, wb, lang, words in _plan(clean, language):
        if words is not None:
            out, reps = words, [(0, wb - wa, 0, len(words))]
        else:
            window = clean[wa:wb]
            out = _run_wetext(_apply_rules(window, _RULES_ZH if lang == "zh" else _RULES_EN), lang)
            reps = _align_window(window, out, lang)
        for ra, rb, oa, ob in reps:
            ra, rb = ra + wa, rb + wa
            spoken_out = out[oa:ob]
            # an edge inside one source unit (a letter and its combining mark): take the unit whole
            ra2, rb2 = ra, rb
            while ra2 > k and cs[ra2] == cs[ra2 - 1]:
                ra2 -= 1
            while rb2 < len(clean) and cs[rb2] == cs[rb2 - 1]:
                rb2 += 1
            if rb2 <= k:
                continue  # already taken whole by the replacement before
            spoken_out = clean[ra2:ra] + spoken_out + clean[rb:rb2]
            ra, rb = max(ra2, k), rb2
            for x in range(k, ra):
                spoken.append(clean[x])
                ss.append(cs[x])
                se.append(ce[x])
                gg.append(0)
            group += 1
            s0, e0 = cs[ra], ce[rb - 1]
            for ch in spoken_out:
                spoken.append(ch)
                ss.append(s0)
                se.append(e0)
                gg.append(group)
            k = rb
    for x in range(k, len(clean)):
        spoken.append(clean[x])
        ss.append(cs[x])
        se.append(ce[x])
        gg.append(0)
    _glue_edges(spoken, gg)
    return Normalized(text, "".join(spoken), tuple(ss), tuple(se), tuple(gg))


def _glue_edges(spoken: list[str], gg: list[int]) -> None:
    """A letter or digit glued to an expansion joins it ("二零二四|年|三|月|五|日" is one unit), and
    expansions joined that way or touching become one group; boundaries() cuts only between groups."""
    orig = gg[:]
    n = len(spoken)
    parent: dict[int, int] = {}

    def find(g: int) -> int:
        while parent.get(g, g) != g:
            g = parent[g]
        return g

    def glued(x: int, y: int) -> bool:
        return 0 <= x < n and 0 <= y < n and spoken[x].isalnum() and spoken[y].isalnum()

    for j in range(n):
        if orig[j]:
            if j + 1 < n and orig[j + 1] and orig[j + 1] != orig[j] and glued(j, j + 1):
                parent[find(orig[j + 1])] = find(orig[j])
            continue
        left = orig[j - 1] if j > 0 and orig[j - 1] and glued(j - 1, j) else 0
        right = orig[j + 1] if j + 1 < n and orig[j + 1] and glued(j, j + 1) else 0
        if left and right:
            parent[find(right)] = find(left)
        gg[j] = left or right
    for j in range(n):
        if gg[j]:
            gg[j] = find(gg[j])


# Off the event loop: wetext holds the GIL for a whole call (a 5000-character article with numbers
# is seconds of CPU; one call of a window up to tens of ms), so a thread would still stall the loop.
# A small process pool does not: FSTs load once per worker (~40 MB, ~1.5 s), and a Normalized
# pickles as a few tuples. Text without digits needs only the cleanup (about 1 us a character,
# mostly the C fast path) and stays inline.
_executor: ProcessPoolExecutor | None = None
_workers = 1
INLINE_MAX_CHARS = 1000  # digit-free text up to this long is cleaned inline (under 2 ms, slow path, loaded VM)


def _pool() -> ProcessPoolExecutor:
    global _executor
    if _executor is None:
        _executor = ProcessPoolExecutor(max_workers=_workers, mp_context=multiprocessing.get_context("spawn"),
                                        initializer=warm_up)
    return _executor


def needs_pool(text: str, *, expand: bool = True) -> bool:
    """Whether normalize(text) is too costly for the event loop (what normalize_async decides by)."""
    return len(text) > INLINE_MAX_CHARS or (expand and _HOT.search(text) is not None)


async def normalize_async(text: str, *, language: str = "auto", expand: bool = True) -> Normalized:
    """normalize() for the event loop: inline when it is cheap (no digits, not long), else in a
    worker process. Raises ValueError for a bad language, as normalize() does."""
    if language not in LANGUAGES:
        raise ValueError(f"language={language!r}: must be one of {', '.join(LANGUAGES)}")
    if not needs_pool(text, expand=expand):
        return normalize(text, language=language, expand=expand)
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_pool(), functools.partial(normalize, text, language=language, expand=expand))


async def warm_up_async(workers: int = 1) -> None:
    """Start the worker processes and load the FSTs in each (server start; does not block the loop).
    workers: how many texts with numbers can be normalized at once (each takes one core while busy)."""
    global _workers
    if _executor is None:
        _workers = max(1, workers)
    loop = asyncio.get_running_loop()
    pool = _pool()
    await asyncio.gather(*(loop.run_in_executor(pool, _noop) for _ in range(_workers)))


def _noop() -> None:
    pass


def shutdown() -> None:
    """Stop the worker processes (server stop)."""
    global _executor
    if _executor is not None:
        _executor.shutdown(wait=False, cancel_futures=True)
        _executor = None


__all__ = ["LANGUAGES", "Normalized", "en_cardinal", "needs_pool", "normalize", "normalize_async", "shutdown",
           "warm_up", "warm_up_async"]
