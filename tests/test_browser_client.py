"""voxws.js, the browser client module, used the way another page uses it, in a real headless Chromium
against a real `voxws serve --engine synthetic`."""

from __future__ import annotations

import functools
import http.server
import re
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page

from tests.conftest import ROOT, free_port, serve_process
from tests.test_browser_page import WAIT_MS, browser, pw  # noqa: F401  (the shared Chromium fixtures)

pytestmark = pytest.mark.browser

SLOW = {"VOXWS_SYNTHETIC_STEP_BASE_MS": "60"}
LONG_TEXT = " ".join(f"Sentence {i} keeps the engine busy for a while longer." for i in range(30))


@pytest.fixture(scope="module")
def server() -> Iterator[int]:
    with serve_process() as (_, port):
        yield port


def blank(browser: Browser, port: int) -> Page:  # noqa: F811
    """A page on the server's origin with voxws.js imported as `window.vox` (no demo page around it)."""
    page = browser.new_page()
    page.set_default_timeout(WAIT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"http://127.0.0.1:{port}/healthz")
    page.evaluate("async () => { window.vox = await import('/voxws.js'); }")
    page.errors = errors  # type: ignore[attr-defined]
    return page


def js(page: Page, body: str, arg: Any = None) -> Any:
    """Run an async function body with `vox` (the module) and `arg` in scope."""
    return page.evaluate(f"async (arg) => {{ const vox = window.vox; {body} }}", arg)


def test_formats_arrive_as_typed_arrays_with_the_same_audio(browser: Browser, server: int) -> None:  # noqa: F811
    page = blank(browser, server)
    out = js(page, """
        const client = await vox.VoxWS.connect(`ws://${location.host}/v1/tts`);
        const got = {};
        for (const format of ['pcm_s16le', 'pcm_f32le', 'pcm_mulaw']) {
          const u = client.speak('Three formats, one sound.', { format });
          const parts = [];
          for await (const chunk of u) parts.push(chunk);
          const summary = await u.done;
          const n = parts.reduce((a, c) => a + c.length, 0);
          const all = new Float32Array(n);
          let o = 0;
          for (const c of parts) { all.set(vox.toFloat32(c), o); o += c.length; }
          got[format] = { type: parts[0].constructor.name, n, all, summary, rate: u.sampleRate };
        }
        // The synthetic engine marks the first 14 samples of every chunk (context, step, speaker): skip those.
        const diff = (a, b) => {
          let m = 0;
          for (let i = 0; i < a.length; i++) if (i % 7056 >= 14) m = Math.max(m, Math.abs(a[i] - b[i]));
          return m;
        };
        const f = got.pcm_f32le.all;
        return {
          types: Object.fromEntries(Object.entries(got).map(([k, v]) => [k, v.type])),
          lengths: Object.values(got).map((v) => v.n),
          audioMs: got.pcm_s16le.summary.audio_ms, rate: got.pcm_s16le.rate,
          s16: diff(got.pcm_s16le.all, f), mulaw: diff(got.pcm_mulaw.all, f),
          peak: f.reduce((m, v) => Math.max(m, Math.abs(v)), 0),
        };
    """)
    assert out["types"] == {"pcm_s16le": "Int16Array", "pcm_f32le": "Float32Array", "pcm_mulaw": "Int16Array"}
    n = out["lengths"][0]
    assert out["lengths"] == [n, n, n]
    assert n == round(out["audioMs"] * out["rate"] / 1000)
    assert out["peak"] > 0.05  # real audio, not silence
    assert out["s16"] < 2 / 32768  # little-endian int16 decoded exactly
    assert out["mulaw"] < 0.02  # mu-law is lossy: a few percent of full scale at most near these levels
    assert page.errors == []  # type: ignore[attr-defined]
    page.close()


def test_sample_rate_option_and_events(browser: Browser, server: int) -> None:  # noqa: F811
    page = blank(browser, server)
    out = js(page, """
        const client = await vox.VoxWS.connect(`http://${location.host}`);  // http and bare origins work too
        const u = client.speak('At sixteen kilohertz.', { sampleRate: 16000 });
        const events = [];
        for (const t of ['start', 'chunk', 'done']) u.addEventListener(t, () => events.push(t));
        let samples = 0;
        for await (const c of u) samples += c.length;
        const summary = await u.done;
        return { samples, summary, rate: u.sampleRate, events: [...new Set(events)], state: u.state,
                 ttfb: u.ttfbMs, rtt: await client.ping() };
    """)
    assert out["rate"] == 16000
    assert out["samples"] == round(out["summary"]["audio_ms"] * 16)
    assert out["events"] == ["start", "chunk", "done"]
    assert out["state"] == "done"
    assert out["summary"]["cancelled"] is False and out["summary"]["chunks"] > 0
    assert out["ttfb"] is not None and out["rtt"] >= 0
    page.close()


def test_protocol_errors_are_typed_and_the_socket_goes_on(browser: Browser, server: int) -> None:  # noqa: F811
    page = blank(browser, server)
    out = js(page, """
        const client = await vox.VoxWS.connect(`ws://${location.host}/v1/tts`);
        const caught = async (u) => {
          try { await u.done; return null; } catch (e) {
            let iterated = null;
            try { for await (const _ of u) {} } catch (e2) { iterated = e2 === e; }
            const typed = e instanceof vox.VoxError;
            return { code: e.code, typed, context: e.context === u.context, iterated };
          }
        };
        const r = {
          empty: await caught(client.speak(' ... ')),
          rate: await caught(client.speak('Hello.', { sampleRate: 12345 })),
          voice: await caught(client.speak('Hello.', { voice: 'no-such-voice' })),
          emptyOpen: await (async () => {
            const c = client.open();
            c.write('  ');
            c.end();
            return caught(c);
          })(),
        };
        r.after = (await client.speak('Still here.').done).audio_ms;
        return r;
    """)
    for key, code in (("empty", "empty_text"), ("rate", "unsupported_format"), ("voice", "unknown_voice"),
                      ("emptyOpen", "empty_text")):
        assert out[key] == {"code": code, "typed": True, "context": True, "iterated": True}, key
    assert out["after"] > 0
    page.close()


def test_incremental_text_is_spoken_in_full(browser: Browser, server: int) -> None:  # noqa: F811
    page = blank(browser, server)
    out = js(page, """
        const client = await vox.VoxWS.connect();  // default: ./v1/tts on this page's server
        const ctx = client.open({ format: 'pcm_f32le' });
        const text = 'Pieces arrive one by one. Then a flush. And the end';
        const chunks = [];
        const reading = (async () => { for await (const c of ctx) chunks.push(c.constructor.name); })();
        for (const piece of text.match(/\\S+\\s*/g)) {
          ctx.write(piece);
          if (piece.startsWith('flush')) ctx.flush();
          await new Promise((r) => setTimeout(r, 20));
        }
        ctx.end();
        const summary = await ctx.done;
        await reading;
        let late = null;
        try { ctx.write('more'); } catch (e) { late = e.code; }
        return { summary, n: text.length, chunks: chunks.length, types: [...new Set(chunks)], late };
    """)
    assert out["summary"]["text_chars"] == out["n"]
    assert out["summary"]["cancelled"] is False
    assert out["chunks"] == out["summary"]["chunks"] > 0
    assert out["types"] == ["Float32Array"]
    assert out["late"] == "context_closed"
    page.close()


def test_contexts_come_back_in_order_and_play_back_to_back(browser: Browser, server: int) -> None:  # noqa: F811
    page = blank(browser, server)
    out = js(page, """
        const client = await vox.VoxWS.connect();
        const player = new vox.VoxPlayer();
        const texts = ['First of three.', 'Second, a little longer than the first.', 'Third.'];
        const order = [];
        const us = texts.map((t) => client.speak(t));
        us.forEach((u, i) => u.addEventListener('done', () => order.push(i)));
        const stats = await Promise.all(us.map((u) => player.play(u)));
        const sums = await Promise.all(us.map((u) => u.done));
        return { order, stats, sums };
    """)
    assert out["order"] == [0, 1, 2]
    for st, summary in zip(out["stats"], out["sums"], strict=True):
        assert st["underruns"] == 0 and st["stopped"] is False
        assert st["samplesPlayed"] == round(summary["audio_ms"] * st["sampleRate"] / 1000)
    page.close()


def test_cancel_stops_at_once_and_resolves_as_cancelled(browser: Browser) -> None:  # noqa: F811
    with serve_process(env=SLOW) as (_, port):
        page = blank(browser, port)
        out = js(page, """
            const client = await vox.VoxWS.connect();
            const u = client.speak(arg);
            let n = 0;
            for await (const c of u) { n += 1; if (n === 2) u.cancel(); }
            const summary = await u.done;
            // Leaving a for-await loop early cancels too.
            const v = client.speak(arg);
            for await (const c of v) break;
            const summary2 = await v.done;
            const after = await client.speak('Fine.').done;
            return { n, summary, state: u.state, summary2, after: after.cancelled };
        """, LONG_TEXT)
        assert out["n"] == 2  # no chunk delivered after cancel()
        assert out["summary"]["cancelled"] is True and out["state"] == "cancelled"
        assert out["summary2"]["cancelled"] is True
        assert out["after"] is False
        page.close()


def test_a_dropped_connection_rejects_pending_utterances(browser: Browser) -> None:  # noqa: F811
    with serve_process(env=SLOW) as (proc, port):
        page = blank(browser, port)
        js(page, """
            const client = await vox.VoxWS.connect();
            window.closeCode = null;
            client.addEventListener('close', (e) => { window.closeCode = e.detail.error.code; });
            window.u = client.speak(arg);
            window.queued = client.speak('I wait behind the first.');
            await new Promise((r) => window.u.addEventListener('chunk', r, { once: true }));
        """, LONG_TEXT)
        proc.send_signal(signal.SIGKILL)  # our own server, by PID
        proc.wait(10)
        out = js(page, """
            const why = async (u) => { try { await u.done; return null; } catch (e) {
              return { code: e.code, conn: e instanceof vox.VoxConnectionError, closeCode: e.closeCode }; } };
            const r = { first: await why(window.u), second: await why(window.queued) };
            await new Promise((res) => setTimeout(res, 50));
            r.closed = window.closeCode;
            return r;
        """)
    for key in ("first", "second"):
        assert out[key]["code"] == "connection_lost", out
        assert out[key]["conn"] is True
        assert out[key]["closeCode"] == 1006
    assert out["closed"] == "connection_lost"
    page.close()


def test_connection_errors_name_the_cause(browser: Browser, tmp_path: Path) -> None:  # noqa: F811
    token = "tok/en+with=chars"  # not a valid subprotocol name: voxws.js sends it as ?token=
    (tmp_path / "token").write_text(token + "\n")
    with serve_process(env={"VOXWS_AUTH_TOKEN_FILE": str(tmp_path / "token")}) as (_, port):
        page = blank(browser, port)
        out = js(page, """
            const code = async (opts, url) => {
              try { await vox.VoxWS.connect(url, opts); return 'connected'; }
              catch (e) { return e instanceof vox.VoxConnectionError ? e.code : 'untyped: ' + e; }
            };
            return {
              none: await code({}),
              wrong: await code({ token: 'wrong' }),
              right: await code({ token: arg.token }),
              unreachable: await code({}, `ws://127.0.0.1:${arg.dead}/v1/tts`),
            };
        """, {"token": token, "dead": free_port()})
        assert out == {"none": "unauthorized", "wrong": "unauthorized", "right": "connected",
                       "unreachable": "unreachable"}
        page.close()
    simple = "simple-token_1.2"  # fits a subprotocol name: sent as bearer.<token>
    (tmp_path / "token").write_text(simple)
    with serve_process(env={"VOXWS_AUTH_TOKEN_FILE": str(tmp_path / "token")}) as (_, port):
        page = blank(browser, port)
        out = js(page, """
            const c = await vox.VoxWS.connect(undefined, { token: arg });
            const audio = (await c.speak('Authorised.').done).audio_ms;
            return { proto: c.ws.protocol, url: c.ws.url, audio };
        """, simple)
        assert out["proto"] == "voxws.v1" and "token" not in out["url"] and out["audio"] > 0
        page.close()


def test_the_docs_snippet_works_from_another_origin(browser: Browser, server: int, tmp_path: Path) -> None:  # noqa: F811
    # docs/browser.md's lines, verbatim but for the port, on a page served by another origin.
    doc = (ROOT / "docs" / "browser.md").read_text()
    snippet = re.search(r"```html\n(.*?)```", doc, re.S)
    assert snippet is not None
    (tmp_path / "index.html").write_text(
        "<!doctype html><link rel=icon href='data:,'>\n" + snippet.group(1).replace("8081", str(server)))
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *a: None  # type: ignore[method-assign]
    other = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=other.serve_forever, daemon=True)
    thread.start()
    try:
        page = browser.new_page()
        page.set_default_timeout(WAIT_MS)
        logs: list[str] = []
        page.on("console", lambda m: logs.append(f"{m.type}: {m.text}"))
        page.on("pageerror", lambda e: logs.append(f"pageerror: {e}"))
        page.goto(f"http://127.0.0.1:{other.server_address[1]}/index.html")
        # The module sets the click handler once it is imported and connected; a refused import logs an error.
        errors = lambda: [line for line in logs if line.startswith(("error", "pageerror"))]  # noqa: E731
        for _ in range(WAIT_MS // 100):
            if errors() or page.evaluate("document.getElementById('say').onclick !== null"):
                break
            page.wait_for_timeout(100)
        assert not errors(), errors()
        with page.expect_console_message(lambda m: "first audible after" in m.text):
            page.click("#say")
        assert "0 underruns" in logs[-1]
        assert not errors(), logs
        page.close()
    finally:
        other.shutdown()
        other.server_close()
