"""The demo page in a real headless Chromium against a real `voxws serve --engine synthetic`.

Also the harness the other browser tests share: `browser` (one Chromium per module) and `open_page`.
Headless Chromium has no sound card: it plays into a fake output whose clock runs in real time, so
AudioContext and the player's AudioWorklet work with no extra flag.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, Playwright, sync_playwright
from websockets.sync.client import connect as ws_connect

from tests.conftest import ROOT, serve_process
from voxws.config import FORMATS

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("VOXWS_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",  # audio may start without a real click
]
ARTIFACTS = ROOT / "tests" / "artifacts"
WAIT_MS = 60_000  # generous: CI may be a loaded 2-core machine
# Long enough to still be generating when Stop is pressed, with slowed synthetic steps.
LONG_TEXT = " ".join(f"This is sentence {i} of a long text that keeps the engine busy." for i in range(40))
SLOW = {"VOXWS_SYNTHETIC_STEP_BASE_MS": "60"}


@pytest.fixture(scope="module")
def pw() -> Iterator[Playwright]:
    if not Path(CHROMIUM).exists() and not shutil.which(CHROMIUM):
        pytest.fail(f"Chromium not found at {CHROMIUM}: apt-get install chromium (or set VOXWS_CHROMIUM)")
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def browser(pw: Playwright) -> Iterator[Browser]:
    b = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
    try:
        yield b
    finally:
        b.close()


class Console:
    """Every console error and uncaught exception of a page."""

    def __init__(self, page: Page):
        self.errors: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", lambda e: self.errors.append(f"pageerror: {e}"))

    def _console(self, m: ConsoleMessage) -> None:
        if m.type == "error":
            self.errors.append(f"console: {m.text}")


def open_page(browser: Browser, port: int, query: str = "", connected: bool = True) -> tuple[Page, Console]:
    page = browser.new_page(viewport={"width": 1000, "height": 980})
    page.set_default_timeout(WAIT_MS)
    console = Console(page)
    page.goto(f"http://127.0.0.1:{port}/{query}")
    if connected:
        page.wait_for_function("window.voxDemo && window.voxDemo.connected")
    return page, console


def demo(page: Page, expr: str = "") -> Any:
    return page.evaluate(f"JSON.parse(JSON.stringify(window.voxDemo{expr}))")


def metric(port: int, name: str, labels: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    m = re.search(rf"^{re.escape(name)}\{{{re.escape(labels)}\}} (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def speak_and_wait(page: Page) -> dict[str, Any]:
    page.click("#speak")
    page.wait_for_function("window.voxDemo.playback || window.voxDemo.error")
    return demo(page)


@pytest.fixture(scope="module")
def server() -> Iterator[int]:
    with serve_process() as (_, port):
        yield port


def test_page_loads_without_console_errors(browser: Browser, server: int) -> None:
    page, console = open_page(browser, server)
    assert "synthetic" in page.inner_text("#status")
    formats = page.eval_on_selector_all("#format option", "os => os.map(o => o.value)")
    assert formats == [f for f in FORMATS if f != "mp3"]  # what this browser can play (the page decodes no mp3)
    assert page.eval_on_selector_all("#rate option", "os => os.length") == 6  # native + 5 others
    assert page.is_hidden("#banner")
    assert console.errors == []
    page.close()


def test_speak_plays_audio_without_underrun(browser: Browser, server: int) -> None:
    page, console = open_page(browser, server)
    page.fill("#text", "Hello there, this is a short sentence.")
    state = speak_and_wait(page)
    assert state["error"] is None, state["error"]
    played = state["playback"]
    assert played["samplesPlayed"] > 0
    assert played["underruns"] == 0, played
    assert played["stopped"] is False
    assert played["firstAudibleMs"] is not None
    assert state["summary"]["audio_ms"] > 0 and state["summary"]["cancelled"] is False
    # Everything the server sent was played.
    assert played["samplesPlayed"] == round(state["summary"]["audio_ms"] * played["sampleRate"] / 1000)
    for fig in ("#f-ttfb", "#f-audible", "#f-audio", "#f-underruns", "#f-chunks"):
        assert page.inner_text(fig) != "–", fig
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "browser-after-speak.png"), full_page=True)
    assert console.errors == []
    page.close()


def test_speak_at_another_rate_and_format(browser: Browser, server: int) -> None:
    page, console = open_page(browser, server)
    page.fill("#text", "Sixteen kilohertz, in mu-law.")
    page.select_option("#format", "pcm_mulaw")
    page.select_option("#rate", "16000")
    state = speak_and_wait(page)
    assert state["error"] is None, state["error"]
    assert state["playback"]["sampleRate"] == 16000
    assert state["playback"]["samplesPlayed"] == round(state["summary"]["audio_ms"] * 16)
    assert console.errors == []
    page.close()


def test_stop_cancels_on_the_server(browser: Browser) -> None:
    with serve_process(env=SLOW) as (_, port):
        page, console = open_page(browser, port)
        before = metric(port, "voxws_contexts_total", 'outcome="cancelled"')
        page.fill("#text", LONG_TEXT)
        page.click("#speak")
        page.wait_for_function("document.getElementById('f-chunks').textContent !== '–'")
        assert page.is_disabled("#speak")
        page.click("#stop")
        page.wait_for_function("window.voxDemo.playback")
        state = demo(page)
        assert state["summary"]["cancelled"] is True
        assert state["playback"]["stopped"] is True
        assert "Stopped" in page.inner_text("#banner")
        assert page.is_enabled("#speak")
        deadline = time.monotonic() + 30
        while metric(port, "voxws_contexts_total", 'outcome="cancelled"') < before + 1:
            assert time.monotonic() < deadline, "the server never counted the context as cancelled"
            time.sleep(0.1)
        assert metric(port, "voxws_contexts_total", 'outcome="done"') == 0
        assert console.errors == []
        page.close()


def test_llm_mode_speaks_before_the_text_is_complete(browser: Browser, server: int) -> None:
    page, console = open_page(browser, server, "?llm_ms=120")
    text = ("The first sentence is short. The second one arrives while the first is already speaking. "
            "And a third, so that the text is far from complete when the audio begins.")
    page.fill("#text", text)
    page.check("#llm", force=True)
    state = speak_and_wait(page)
    assert state["error"] is None, state["error"]
    llm = state["llm"]
    assert llm["totalChars"] == len(text)
    assert llm["charsAtFirstAudio"] is not None
    assert llm["charsAtFirstAudio"] < llm["totalChars"]  # audio came while text was still being written
    assert state["summary"]["text_chars"] == len(text)
    assert state["playback"]["samplesPlayed"] > 0
    assert page.inner_text("#typed") == text
    assert console.errors == []
    page.close()


def test_empty_text_shows_a_message(browser: Browser, server: int) -> None:
    page, _ = open_page(browser, server)
    page.fill("#text", "   ")
    page.click("#speak")
    assert page.get_attribute("#banner", "data-code") == "empty_text"
    assert "Nothing to speak" in page.inner_text("#banner")
    # Punctuation alone passes the page's check; the server's empty_text reads the same.
    page.fill("#text", "... !?")
    page.click("#speak")
    page.wait_for_function("window.voxDemo.error && window.voxDemo.error.code === 'empty_text'")
    assert "Nothing to speak" in page.inner_text("#banner")
    page.wait_for_function("!document.getElementById('speak').disabled")
    page.close()


def test_wrong_token_shows_an_authentication_error(browser: Browser, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("right-token-123\n")
    with serve_process(env={"VOXWS_AUTH_TOKEN_FILE": str(token_file)}) as (_, port):
        page, _ = open_page(browser, port, connected=False)
        page.wait_for_function("window.voxDemo.error")
        assert page.get_attribute("#banner", "data-code") == "unauthorized"
        assert "needs a token" in page.inner_text("#banner")

        page.fill("#token", "wrong-token")
        page.click("#connect")
        page.wait_for_function("document.getElementById('banner').textContent.includes('refused this token')")
        assert "Authentication failed" in page.inner_text("#banner")
        assert page.get_attribute("#status", "data-state") == "error"

        page.fill("#token", "right-token-123")
        page.click("#connect")
        page.wait_for_function("window.voxDemo.connected")
        assert page.is_hidden("#banner")
        page.close()


def test_busy_server_shows_a_message(browser: Browser) -> None:
    # One engine slot and no queue: while another client speaks, the page's request is refused.
    env = {"VOXCPM_MAX_NUM_SEQS": "1", "VOXWS_MAX_QUEUE": "0", "VOXWS_SYNTHETIC_STEP_BASE_MS": "200"}
    with serve_process(env=env) as (_, port), ws_connect(f"ws://127.0.0.1:{port}/v1/tts") as other:
        json.loads(other.recv(timeout=30))  # ready
        other.send(json.dumps({"type": "speak", "context": "hog", "text": LONG_TEXT[:300]}))
        while not isinstance(frame := other.recv(timeout=30), bytes):
            assert json.loads(frame)["type"] in ("start", "queued", "segment"), frame
        page, _ = open_page(browser, port)
        page.fill("#text", "Am I next?")
        page.click("#speak")
        page.wait_for_function("window.voxDemo.error")
        assert page.get_attribute("#banner", "data-code") == "busy"
        assert "busy" in page.inner_text("#banner")
        assert "Try again in" in page.inner_text("#banner")
        page.close()


def test_lost_connection_shows_a_message_and_reconnects(browser: Browser) -> None:
    with serve_process() as (proc, port):
        page, _ = open_page(browser, port)
        proc.send_signal(signal.SIGKILL)  # our own server process, by PID
        proc.wait(10)
        page.wait_for_function("!window.voxDemo.connected")
        page.wait_for_function("document.getElementById('banner').dataset.code === 'connection_lost'")
        assert "Lost the connection" in page.inner_text("#banner")
        assert page.get_attribute("#status", "data-state") == "disconnected"
    # A new server on the same port: Speak reconnects by itself.
    with serve_process(port=port) as (_, port2):
        assert port2 == port
        page.fill("#text", "Back again.")
        state = speak_and_wait(page)
        assert state["error"] is None, state["error"]
        assert state["connected"] is True
        assert state["playback"]["samplesPlayed"] > 0
        page.close()


def test_idle_disconnect_is_calm_and_speak_reconnects(browser: Browser) -> None:
    with serve_process(env={"VOXWS_IDLE_TIMEOUT_S": "1"}) as (_, port):
        page, console = open_page(browser, port)
        page.wait_for_function("!window.voxDemo.connected")
        assert page.get_attribute("#banner", "data-code") == "idle_timeout"
        assert page.get_attribute("#banner", "data-kind") == "info"
        assert "Press Speak to reconnect" in page.inner_text("#banner")
        page.fill("#text", "Awake again.")
        state = speak_and_wait(page)
        assert state["error"] is None, state["error"]
        assert state["playback"]["samplesPlayed"] > 0
        assert console.errors == []
        page.close()


def test_the_word_being_heard_is_highlighted_in_order(browser: Browser, server: int) -> None:
    page, console = open_page(browser, server)
    text = "Words light up 😀 as they are heard, one after another. 会议开始了。 The end."
    page.fill("#text", text)
    state = speak_and_wait(page)
    assert state["error"] is None, state["error"]
    words = page.evaluate("() => window.voxLast.words.map((w) => [w.sourceStart, w.sourceEnd, w.startMs])")
    marks = state["highlights"]
    assert words, "the server sent no word timestamps"
    # The words were marked in order, from the first to the last, and the mark is exactly the word's characters
    # (code points). A word is skipped only when the page's 10 ms timer stalls for longer than the word lasts
    # (~120 ms at least), which a loaded 2-core CI box does now and then: most words must be marked.
    ranges = [[s, e] for s, e, _ in words]
    marked = [[m["start"], m["end"]] for m in marks]
    assert marked[0] == ranges[0] and marked[-1] == ranges[-1], (marks, words)
    assert all(r in ranges for r in marked) and marked == sorted(marked, key=ranges.index), (marks, words)
    assert len(set(map(tuple, marked))) == len(marked) >= 0.8 * len(ranges), (marks, words)
    for m in marks:
        assert m["text"] == text[m["start"]:m["end"]]
    # The mark follows the playhead, not the words' arrival: a word is marked once the player is past its start,
    # and marking the last word took at least as long (wall clock) as the audio between the first and the last.
    for m in marks:
        assert m["playedMs"] >= m["wordMs"]
    assert marks[-1]["at"] - marks[0]["at"] >= (marks[-1]["wordMs"] - marks[0]["wordMs"]) * 0.95
    assert page.inner_text("#read-word") == text[marks[-1]["start"]:marks[-1]["end"]]
    page.click("#reading")  # back to the editable box
    assert page.is_visible("#text")
    assert console.errors == []
    page.close()


def wav_tone(path: Path, seconds: float = 6.0, rate: int = 48000) -> Path:
    """A speech-like test signal (a tone with syllable-rate bursts) for Chromium's fake microphone."""
    import math
    import struct
    import wave

    n = int(seconds * rate)
    frames = b"".join(
        struct.pack("<h", int(12000 * math.sin(2 * math.pi * 220 * t) * (0.5 + 0.5 * math.sin(2 * math.pi * 4 * t))))
        for t in (i / rate for i in range(n)))
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(frames)
    return path


def test_record_a_voice_and_speak_with_it(pw: Playwright, server: int, tmp_path: Path) -> None:
    mic = wav_tone(tmp_path / "mic.wav")
    b = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
        *CHROMIUM_FLAGS, "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={mic}"])
    try:
        page, console = open_page(b, server)
        page.click("#record summary")
        page.click("#rec-start")
        page.wait_for_function("document.getElementById('rec-state').textContent.includes('recording… 3')")
        page.click("#rec-start")
        page.wait_for_function("window.voxDemo.recording")
        rec = demo(page, ".recording")
        assert rec["type"].startswith("audio/webm") and rec["bytes"] > 1000 and rec["ms"] >= 3000
        assert demo(page, ".voices") is not None  # the picker was fed by GET /v1/voices
        page.fill("#rec-name", "Test voice")
        page.click("#rec-save")
        page.wait_for_function("window.voxDemo.savedVoice || window.voxDemo.error")
        state = demo(page)
        assert state["error"] is None, state["error"]
        saved = state["savedVoice"]
        assert saved["name"] == "Test voice" and 3 <= saved["duration_s"] <= 31
        assert saved["id"] in page.eval_on_selector_all("#voice option", "os => os.map(o => o.value)")
        assert page.input_value("#voice") == saved["id"]
        page.fill("#text", "Now in my own voice.")
        state = speak_and_wait(page)
        assert state["error"] is None, state["error"]
        assert state["summary"]["voice"] == saved["id"]
        assert console.errors == []
        page.close()
    finally:
        b.close()


def test_opus_plays_with_a_fraction_of_the_bandwidth(browser: Browser, server: int) -> None:
    page, console = open_page(browser, server)
    assert "opus" in demo(page, ".ready.formats")
    assert page.evaluate("typeof AudioDecoder === 'function'"), "Chromium without WebCodecs: the page offers PCM only"
    page.fill("#text", "Compressed speech takes a fraction of the bytes.")
    page.select_option("#format", "opus")
    state = speak_and_wait(page)
    assert state["error"] is None, state["error"]
    assert state["playback"]["error"] is None and state["playback"]["samplesPlayed"] > 0
    bw = state["bandwidth"]
    assert bw["format"] == "opus" and 0 < bw["bytes"] < bw["pcmBytes"] / 4
    assert "% of what 16-bit PCM" in (page.get_attribute("#f-bandwidth", "title") or "")
    assert console.errors == []
    page.close()
