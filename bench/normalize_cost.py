"""What text normalization (voxws.normalize) costs, per character and per typical `speak`.

Prints, for Chinese and English: the first call in a fresh process (imports wetext, which loads every
FST), then warm calls on a 68-character Chinese sentence, a 200-character English paragraph and a
5000-character article, with numbers (the texts wetext works on) and without (the cleanup only), and
the longest event-loop stall while `normalize_async` handles the 5000-character article.

    .venv/bin/python bench/normalize_cost.py [--repeat 20]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import time

from voxws.normalize import normalize, normalize_async, shutdown, warm_up, warm_up_async

ZH68 = ("会议定于2024年3月5日下午3:30开始，预算为$1,200，预计有120人参加，"
        "会场面积约为350平方米，请各位务必准时到场，谢谢。")
EN200 = ("The meeting starts on March 5, 2024 at 3:30 pm. The budget is $1,200 and about 25% of the staff "
         "will attend. Dr. Smith said the room holds 120 people, so please arrive by 3 pm and call 555-123-4567 now.")
ZH_PLAIN = "今天天气很好，我们一起去公园散步吧。" * 4
EN_PLAIN = ("The meeting starts tomorrow afternoon. The budget is fine and most of the staff will attend. The doctor "
            "said the room is large enough, so please arrive early and be kind to everyone you meet there today!!")


def article(sentence: str, chars: int = 5000) -> str:
    sep = "" if sentence[0] > "\u2e80" else " "
    return (sep.join([sentence] * (chars // len(sentence) + 1)))[:chars]


def first_call(text: str, language: str) -> float:
    """Seconds for import + first normalize() in a fresh interpreter (what a server start pays)."""
    code = ("import time; t = time.perf_counter(); from voxws.normalize import normalize; "
            f"normalize({text!r}, language={language!r}); print(time.perf_counter() - t)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip())


def warm(text: str, language: str, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        normalize(text, language=language)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


async def loop_stall(text: str | None, language: str) -> tuple[float, float]:
    """(seconds normalize_async took, longest gap between 1 ms ticks of the loop meanwhile).
    text None: the same loop doing nothing for a second (the machine's own noise)."""
    gaps: list[float] = []
    done = False

    async def ticker() -> None:
        last = time.perf_counter()
        while not done:
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    await warm_up_async()
    task = asyncio.create_task(ticker())
    await asyncio.sleep(0.01)
    t = time.perf_counter()
    if text is None:
        await asyncio.sleep(1.0)
    else:
        await normalize_async(text, language=language)
    took = time.perf_counter() - t
    done = True
    await task
    shutdown()
    return took, max(gaps) - 0.001


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=20)
    args = ap.parse_args()
    print(f"first call (fresh process: import wetext + FST load + one call): "
          f"zh {first_call(ZH68, 'zh') * 1000:.0f} ms, en {first_call(EN200, 'en') * 1000:.0f} ms")
    t = time.perf_counter()
    warm_up()
    print(f"warm_up() in this process: {(time.perf_counter() - t) * 1000:.0f} ms")
    print(f"{'text':<34}{'chars':>6}{'ms/call':>10}{'us/char':>9}")
    rows = [
        ("zh sentence with numbers", ZH68, "zh"), ("zh sentence, no digits", ZH_PLAIN[:68], "zh"),
        ("en paragraph with numbers", EN200, "en"), ("en paragraph, no digits", EN_PLAIN[:200], "en"),
        ("zh article with numbers", article(ZH68), "zh"), ("en article with numbers", article(EN200), "en"),
        ("zh article, no digits", article(ZH_PLAIN), "zh"), ("en article, no digits", article(EN_PLAIN), "en"),
        ("auto: zh sentence", ZH68, "auto"), ("auto: en paragraph", EN200, "auto"),
    ]
    for name, text, lang in rows:
        repeat = max(3, args.repeat // 5) if len(text) > 1000 else args.repeat
        s = warm(text, lang, repeat)
        print(f"{name:<34}{len(text):>6}{s * 1000:>10.2f}{s / len(text) * 1e6:>9.1f}")
    _, idle = asyncio.run(loop_stall(None, "zh"))
    print(f"event loop doing nothing for 1 s: longest stall {idle * 1000:.1f} ms (the machine's noise)")
    for name, text, lang in (("zh article", article(ZH68), "zh"), ("en article", article(EN200), "en")):
        took, stall = asyncio.run(loop_stall(text, lang))
        print(f"normalize_async, {name} ({len(text)} chars): {took * 1000:.0f} ms in the worker process, "
              f"longest event-loop stall meanwhile {stall * 1000:.1f} ms")


if __name__ == "__main__":
    main()
