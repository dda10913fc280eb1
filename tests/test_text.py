"""Text handling: normalisation, sentence/clause cuts, segmentation, the incremental buffer."""

from __future__ import annotations

import random
import re
import unicodedata

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from voxws import sizing
from voxws.text import (
    TextBuffer,
    clause_cuts,
    is_speakable,
    is_speakable_char,
    normalize,
    sentence_cuts,
    split_segments,
)


def sentences(text: str) -> list[str]:
    cuts, undecided = sentence_cuts(text, final=True)
    assert undecided is None
    out, p = [], 0
    for q in [*cuts, len(text)]:
        if text[p:q].strip():
            out.append(text[p:q].strip())
        p = q
    return out


def speakable(text: str) -> str:
    return "".join(c for c in text if is_speakable_char(c))


# (text, the sentences it holds). Mixed Chinese/English/Japanese with numbers, URLs, abbreviations,
# e-mail addresses, ellipses and decimals.
SENTENCE_CASES = [
    ("你好。世界。", ["你好。", "世界。"]),
    ("今天天气很好！我们去公园吧？", ["今天天气很好！", "我们去公园吧？"]),
    ("他说：“你好。”然后走了。", ["他说：“你好。”", "然后走了。"]),
    ("“好的。”他说。", ["“好的。”", "他说。"]),
    ("圆周率是3.14159。", ["圆周率是3.14159。"]),
    ("价格是1,000元。", ["价格是1,000元。"]),
    ("温度是-3.5度；明天更冷。", ["温度是-3.5度；", "明天更冷。"]),
    ("第一章。第二章！第三章？", ["第一章。", "第二章！", "第三章？"]),
    ("真的吗……我不信。", ["真的吗……", "我不信。"]),
    ("我用Python写代码。It works well.", ["我用Python写代码。", "It works well."]),
    ("He said OK.我们走吧。", ["He said OK.", "我们走吧。"]),
    ("访问https://x.com/a.b?c=1获取详情。谢谢！", ["访问https://x.com/a.b?c=1获取详情。", "谢谢！"]),
    ("今日は良い天気です。散歩に行きましょう！", ["今日は良い天気です。", "散歩に行きましょう！"]),
    ("「こんにちは。」と彼は言った。", ["「こんにちは。」", "と彼は言った。"]),
    ("価格は3.5ドルです。本当？", ["価格は3.5ドルです。", "本当？"]),
    ("Hello world. How are you?", ["Hello world.", "How are you?"]),
    ("Pi is 3.14. Really.", ["Pi is 3.14.", "Really."]),
    ("It costs $1,000.50 today.", ["It costs $1,000.50 today."]),
    ("He paid 1.000,50 EUR. Done.", ["He paid 1.000,50 EUR.", "Done."]),
    ("Prices rose 2.5% in Q3. Analysts expected 3%.", ["Prices rose 2.5% in Q3.", "Analysts expected 3%."]),
    ("Version 2.0.1 is out. Update now.", ["Version 2.0.1 is out.", "Update now."]),
    ("Is it 12:30? Yes, at 12:30.", ["Is it 12:30?", "Yes, at 12:30."]),
    ("See e.g. the manual. Then stop.", ["See e.g. the manual.", "Then stop."]),
    ("That is, i.e. the best one.", ["That is, i.e. the best one."]),
    ("Dr. Smith is here. Mr. Jones too.", ["Dr. Smith is here.", "Mr. Jones too."]),
    ("Mrs. Brown went to the U.S. last year.", ["Mrs. Brown went to the U.S. last year."]),
    ("The U.S. Army is big. Yes.", ["The U.S. Army is big.", "Yes."]),
    ("Apples, pears, etc. are fruit.", ["Apples, pears, etc. are fruit."]),
    ("Call me at 10 a.m. tomorrow.", ["Call me at 10 a.m. tomorrow."]),
    ("J. K. Rowling wrote it.", ["J. K. Rowling wrote it."]),
    ("See Fig. 3 for details.", ["See Fig. 3 for details."]),
    ("No. 5 is mine.", ["No. 5 is mine."]),
    ("I said no. Then I left.", ["I said no.", "Then I left."]),
    ("1. Preheat the oven. 2. Mix the flour.", ["1. Preheat the oven.", "2. Mix the flour."]),
    ("Visit https://x.com/a.b?c=1&d=2. It is free.", ["Visit https://x.com/a.b?c=1&d=2.", "It is free."]),
    ("www.example.com is a site.", ["www.example.com is a site."]),
    ("The file is named report.pdf. Open it.", ["The file is named report.pdf.", "Open it."]),
    ("Mail me at john.doe@example.co.uk. Thanks!", ["Mail me at john.doe@example.co.uk.", "Thanks!"]),
    ("Write to a.b@c.org, or call.", ["Write to a.b@c.org, or call."]),
    ("Wait... what?", ["Wait... what?"]),
    ("I was thinking... Then it hit me.", ["I was thinking...", "Then it hit me."]),
    ("So... what now? I don't know.", ["So... what now?", "I don't know."]),
    ("Well…maybe.", ["Well…maybe."]),
    ("What?! No way!", ["What?!", "No way!"]),
    ('He said "Stop." Then he left.', ['He said "Stop."', "Then he left."]),
    ("Use Python 3.11; it is fast.", ["Use Python 3.11;", "it is fast."]),
    ("AT&amp;T is a company.", ["AT&amp;T is a company."]),
    ("Yahoo!Inc is a company.", ["Yahoo!Inc is a company."]),
    ("Line one\nLine two", ["Line one", "Line two"]),
    ("Hello!", ["Hello!"]),
    ("यह अच्छा है। धन्यवाद।", ["यह अच्छा है।", "धन्यवाद।"]),
    ("Это тест. Второе предложение!", ["Это тест.", "Второе предложение!"]),
]


@pytest.mark.parametrize(("text", "expected"), SENTENCE_CASES)
def test_sentence_ends(text: str, expected: list[str]) -> None:
    assert sentences(text) == expected


# Incremental input: (buffer so far, sentences certain now, whether an end is still undecided).
INCREMENTAL_CASES = [
    ("Pi is 3.", [], True),  # "3." may become "3.14"
    ("Pi is 3.1", [], False),
    ("Hello. ", [], True),  # waits for the next word (lowercase would go on)
    ("Hello. W", ["Hello."], False),
    ("Hello. w", [], False),
    ("Hello!", [], True),
    ("Hello! ", ["Hello!"], False),
    ("你好。", ["你好。"], False),  # CJK marks are final at once
    ("你好！再见", ["你好！"], False),
    ("Wait..", [], True),
    ("Dr.", [], True),
    ("See e.g. ", [], True),
    ("line\n", ["line"], False),
]


@pytest.mark.parametrize(("text", "expected", "undecided"), INCREMENTAL_CASES)
def test_sentence_ends_incremental(text: str, expected: list[str], undecided: bool) -> None:
    cuts, pending = sentence_cuts(text, final=False)
    assert [text[p:q].strip() for p, q in zip([0, *cuts], cuts, strict=False)] == expected
    assert (pending is not None) is undecided


def test_clause_cuts() -> None:
    text = "你好，世界、朋友：再见"
    assert [text[:c] for c in clause_cuts(text)] == ["你好，", "你好，世界、", "你好，世界、朋友："]
    text = "1,000 at 12:30, then https://x.io:80 and a,b"
    assert [text[:c][-6:] for c in clause_cuts(text)] == ["12:30,"]
    assert clause_cuts("one,", final=False) == []
    assert clause_cuts("one,", final=True) == [4]


def test_normalize() -> None:
    assert normalize("  a\t\tb  ") == "a b"
    assert normalize("a\r\nb\r c") == "a\nb\nc"
    assert normalize("a \n\n  b") == "a\nb"
    assert normalize("e\u0301") == "\u00e9"  # NFC
    assert normalize("a\x00b\x07c\x1bd") == "abcd"
    assert normalize("zero\u200bwidth\ufeff") == "zerowidth"
    assert normalize("lone \ud800 surrogate") == "lone surrogate"
    assert normalize("") == ""


@pytest.mark.parametrize("text", ["", "   ", "\n\t", "。。。", "!?", "...", "…", "😀👍", "「」", "- * -"])
def test_not_speakable(text: str) -> None:
    assert not is_speakable(normalize(text))


@pytest.mark.parametrize("text", ["a", "你", "3", "か", "😀 ok", "Ω"])
def test_speakable(text: str) -> None:
    assert is_speakable(text)


def test_short_text_is_one_segment() -> None:
    assert split_segments("  Hello   world.  ", 50) == ["Hello world."]
    assert split_segments("", 50) == []
    assert split_segments("。。。", 50) == []


def test_report_texts_are_one_segment() -> None:
    zh68 = ("今天天气很好，我们一起去公园散步吧。" * 4)[:68]
    assert split_segments(zh68, sizing.segment_budget(256)) == [zh68]


def test_packs_sentences_up_to_the_budget() -> None:
    text = " ".join(f"Sentence number {i} is here." for i in range(40))
    segs = split_segments(text, 40)
    assert len(segs) > 1
    assert all(sizing.estimate_tokens(s) <= 40 for s in segs)
    assert all(s.endswith(".") for s in segs)  # whole sentences only
    assert all(s.count(".") >= 2 for s in segs[:-1])  # several per segment
    assert " ".join(segs) == text


def test_long_sentence_cuts_at_clauses() -> None:
    text = "我们今天去了公园，" * 12 + "然后回家了。"
    segs = split_segments(text, 30)
    assert all(sizing.estimate_tokens(s) <= 30 for s in segs)
    assert all(s.endswith(("，", "。")) for s in segs)
    assert "".join(segs) == text


def test_long_latin_run_cuts_between_words() -> None:
    words = [f"word{i}" for i in range(200)]
    text = " ".join(words)
    segs = split_segments(text, 25)
    assert all(sizing.estimate_tokens(s) <= 25 for s in segs)
    assert " ".join(segs).split() == words  # no word broken


def test_chinese_without_punctuation_hard_cuts() -> None:
    text = "中文没有标点符号的时候也要能切开" * 20
    segs = split_segments(text, 37)
    assert all(sizing.estimate_tokens(s) <= 37 for s in segs)
    assert "".join(segs) == text
    assert all(len(s) >= 18 for s in segs[:-1])  # cuts are not wastefully small


def test_numbers_urls_and_emails_stay_whole() -> None:
    text = ("数值3.14159和2.71828以及1,000,000还有https://example.com/x?y=1和a.b@example.org" * 8)
    segs = split_segments(text, 40)
    assert all(sizing.estimate_tokens(s) <= 40 for s in segs)
    assert "".join(segs) == text
    for token in ("3.14159", "2.71828", "1,000,000", "https://example.com/x?y=1", "a.b@example.org"):
        assert sum(s.count(token) for s in segs) == 8


def test_first_segment_can_be_short() -> None:
    text = "你好。" + "这是一段比较长的文字，用来测试第一段是否单独发送。" * 3
    segs = split_segments(text, 200, first_max_tokens=40)
    assert segs[0] == "你好。"
    assert len(segs) == 2
    segs = split_segments("这是第一句话，它有一点长，需要切开。第二句。", 200, first_max_tokens=8)
    assert segs[0] == "这是第一句话，"
    assert "".join(segs) == "这是第一句话，它有一点长，需要切开。第二句。"


def test_exact_counter_is_respected() -> None:
    def count(s: str) -> int:  # a pretend tokenizer: one token per 2 characters
        return (len(s) + 1) // 2

    text = "Alpha beta gamma. Delta epsilon zeta, eta theta iota kappa lambda. Mu nu xi omicron pi rho."
    segs = split_segments(text, 12, count_tokens=count)
    assert all(count(s) <= 12 for s in segs)
    assert " ".join(segs) == text


def test_positions_cost_keeps_fitting_texts_whole() -> None:
    # The lead's option: count positions (prompt + audio) against max_model_len directly.
    text = ("语音合成服务正在运行中" * 40)[:313]
    def cost(s: str) -> int:
        return sizing.positions(s)

    assert split_segments(text, 1024, count_tokens=cost) == [text]
    segs = split_segments(text, 512, count_tokens=cost)
    assert len(segs) == 2 and all(sizing.fits(s, 512) for s in segs)


def test_bad_budgets_are_refused() -> None:
    with pytest.raises(ValueError, match="max_tokens=0"):
        split_segments("hello", 0)
    with pytest.raises(ValueError, match="first_max_tokens=0"):
        split_segments("hello", 10, first_max_tokens=0)
    with pytest.raises(ValueError, match="max_tokens=2"):
        split_segments("😀 a", 2)  # one emoji alone costs 4


def test_graphemes_are_not_split_when_avoidable() -> None:
    text = "नमस्तेदुनिया" * 12  # Devanagari without spaces: vowel signs and viramas are combining marks
    segs = split_segments(text, 9)
    assert len(segs) > 1 and all(sizing.estimate_tokens(s) <= 9 for s in segs)
    assert "".join(segs) == text
    assert not any(unicodedata.category(s[0]).startswith("M") for s in segs)
    family = "👨\u200d👩\u200d👧"
    segs = split_segments(("x" + family) * 10, 20)
    assert all(not s.startswith("\u200d") and not s.endswith("\u200d") for s in segs)
    assert "".join(segs).count("x") == 10


INTERESTING = st.sampled_from([*"abcXYZ 中文字。，、.!?;,:…\n「」\"'", " 3.14", " 1,000", " e.g.", " Dr.", " https://a.b/c?d=1",
                               " x@y.z"])


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.lists(INTERESTING | st.characters(), max_size=120).map("".join), st.integers(4, 60),
       st.none() | st.integers(4, 30))
def test_split_invariants(text: str, max_tokens: int, first: int | None) -> None:
    segs = split_segments(text, max_tokens, first_max_tokens=first)
    assert all(sizing.estimate_tokens(s) <= max_tokens for s in segs)
    assert all(s and s == s.strip() and is_speakable(s) for s in segs)
    assert speakable("".join(segs)) == speakable(normalize(text))
    if first is not None and segs:
        assert sizing.estimate_tokens(segs[0]) <= first


def test_buffer_waits_for_decimals() -> None:
    buf = TextBuffer(threshold_chars=60)
    out = []
    for piece in ["Pi", " is", " 3", ".", "14", ".", " It", " is", " a", " number", ".", " "]:
        out += buf.append(piece)
    assert out == ["Pi is 3.14."]
    assert buf.pending == "It is a number. "
    assert buf.flush() == "It is a number."
    assert buf.pending == "" and buf.flush() == ""


def test_buffer_chinese_end_is_final_at_once() -> None:
    buf = TextBuffer()
    assert buf.append("你好") == []
    assert buf.append("。") == ["你好。"]
    assert buf.append("今天") == []
    assert buf.pending == "今天"


def test_buffer_threshold_cuts_at_last_clause() -> None:
    buf = TextBuffer(threshold_chars=20)
    out = buf.append("我们今天去了公园，看到了很多花，还有一些小鸟")
    assert out == ["我们今天去了公园，看到了很多花，"]
    assert buf.pending == "还有一些小鸟"


def test_buffer_over_budget_speaks_all_but_the_tail() -> None:
    buf = TextBuffer(threshold_chars=10_000, max_tokens=20)
    out = []
    words = [f"word{i}" for i in range(60)]
    for w in words:
        out += buf.append(w + " ")
    assert out and all(sizing.estimate_tokens(p) <= 20 for p in out)
    assert " ".join([*out, buf.flush()]).split() == words


def test_buffer_keeps_unspeakable_leftovers_pending() -> None:
    buf = TextBuffer()
    assert buf.append("“你好。") == ["“你好。"]
    assert buf.append("”") == []
    assert not is_speakable(buf.flush())


@settings(max_examples=150, deadline=None)
@given(st.lists(INTERESTING, max_size=150).map("".join), st.randoms(use_true_random=False),
       st.integers(1, 80), st.integers(8, 60))
def test_buffer_streaming_invariants(text: str, rnd: random.Random, threshold: int, max_tokens: int) -> None:
    buf = TextBuffer(threshold_chars=threshold, max_tokens=max_tokens)
    pieces: list[str] = []
    i = 0
    while i < len(text):
        n = rnd.randint(1, 3)  # an LLM's stream: 1-3 characters at a time
        pieces += buf.append(text[i:i + n])
        i += n
    assert all(sizing.estimate_tokens(p) <= max_tokens and is_speakable(p) for p in pieces)
    rest = split_segments(buf.flush(), max_tokens)
    assert speakable("".join(pieces + rest)) == speakable(normalize(text))


def test_buffer_never_cuts_inside_numbers_or_urls() -> None:
    text = ("The value is 3.14159 and the site is https://example.com/a.b?x=1. "
            "Mail a.b@example.org now. 价格是1,000元。")
    buf = TextBuffer(threshold_chars=15)
    pieces = []
    for i in range(0, len(text), 2):
        pieces += buf.append(text[i:i + 2])
    pieces.append(buf.flush())
    joined = " | ".join(pieces)
    for token in ("3.14159", "https://example.com/a.b?x=1.", "a.b@example.org", "1,000"):
        assert token in joined
    assert not re.search(r"\d \| \d", joined)
