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


def test_protocol_constants_match_the_server(browser: Browser, server: int) -> None:  # noqa: F811
    from voxws import config, protocol

    page = blank(browser, server)
    out = js(page, """return { protocol: vox.PROTOCOL, codes: vox.ERROR_CODES, formats: vox.FORMATS,
                              rates: vox.SAMPLE_RATES, ready: (await vox.VoxWS.connect()).ready };""")
    assert out["protocol"] == protocol.PROTOCOL
    assert out["codes"] == protocol.ERROR_CODES  # every code, with the close code that follows it
    assert out["rates"] == list(config.SAMPLE_RATES)
    # voxws.js knows every format of the protocol; the server offers a subset of them.
    assert set(config.FORMATS) <= set(out["formats"]) == {"pcm_s16le", "pcm_f32le", "pcm_mulaw", "wav", "mp3", "opus"}
    assert set(out["ready"]["formats"]) <= set(out["formats"])
    page.close()


def test_resampler_keeps_its_state_across_chunks(browser: Browser, server: int) -> None:  # noqa: F811
    page = blank(browser, server)
    out = js(page, """
        // A 440 Hz tone at 22050 Hz, cut into uneven chunks (as frames arrive), resampled to 48 kHz.
        const from = 22050, to = 48000, f = 440, total = 22050 * 2;
        const tone = new Float32Array(total).map((_, i) => Math.sin(2 * Math.PI * f * i / from));
        const r = new vox.Resampler(from, to);
        const parts = [];
        let o = 0, k = 0;
        while (o < total) {
          const n = Math.min(total - o, [7056, 313, 1, 2205, 4096, 17][k++ % 6]);
          parts.push(r.push(tone.subarray(o, o + n)));
          o += n;
        }
        parts.push(r.flush());  // the end of the stream: the last input sample's period
        const out = new Float32Array(parts.reduce((a, p) => a + p.length, 0));
        o = 0;
        for (const p of parts) { out.set(p, o); o += p.length; }
        const w = new vox.Resampler(from, to);
        const whole = [...w.push(tone), ...w.flush()];
        let err = 0, jump = 0, same = 0;
        for (let i = 0; i < out.length; i++) {
          if (i < out.length - 3) err = Math.max(err, Math.abs(out[i] - Math.sin(2 * Math.PI * f * i / to)));
          if (i) jump = Math.max(jump, Math.abs(out[i] - out[i - 1]));
          same = Math.max(same, Math.abs(out[i] - whole[i]));
        }
        return { n: out.length, expected: total * to / from, err, jump, same, wholeN: whole.length,
                 maxStep: 2 * Math.PI * f / to };
    """)
    assert abs(out["n"] - out["expected"]) <= 1  # no drift: the length is the rate ratio's
    assert out["wholeN"] == out["n"] and out["same"] < 1e-6  # chunking changes nothing
    assert out["err"] < 0.01  # it is the tone, at the new rate, from the first sample to the last
    assert out["jump"] <= out["maxStep"] * 1.01  # no click at any seam: no step steeper than the tone's own
    page.close()


def test_play_settles_when_something_throws(browser: Browser, server: int) -> None:  # noqa: F811
    page = blank(browser, server)
    out = js(page, """
        const player = new vox.VoxPlayer();
        const fake = (props, iterate) => Object.assign(new EventTarget(), { context: 'x', sentAt: performance.now(),
          state: 'streaming', format: 'pcm_s16le', sampleRate: 16000, ...props, [Symbol.asyncIterator]: iterate });
        const settle = (p) => Promise.race([
          p.then((s) => ({ error: s.error ? String(s.error) : null, stopped: s.stopped })),
          new Promise((r) => setTimeout(() => r('pending'), 5000))]);
        return {
          // the iterator throws at once, after a chunk, or hands over something that is not audio
          sync: await settle(player.play(fake({}, () => { throw new Error('boom'); }))),
          later: await settle(player.play(fake({}, async function* () {
            yield new Int16Array(800);
            throw new Error('late');
          }))),
          garbage: await settle(player.play(fake({}, async function* () { yield null; }))),
          // an AudioContext rate the browser refuses
          rate: await settle(player.play(fake({ sampleRate: 1 }, async function* () {}))),
          // an encoded format this player cannot play
          mp3: await settle(player.play(fake({ format: 'mp3' }, async function* () { yield new Uint8Array(10); }))),
        };
    """)
    for key, value in out.items():
        assert value != "pending", key
        assert value["error"], (key, value)
    page.close()


def test_segments_words_and_flush_acknowledgements(browser: Browser, server: int) -> None:  # noqa: F811
    page = blank(browser, server)
    text = "Hello 😀 world, 会议定于三月五日。 Second sentence here! And a third one."
    out = js(page, """
        const client = await vox.VoxWS.connect();
        const seen = { onSegment: 0, onWords: 0, events: [] };
        const u = client.speak(arg, { timestamps: 'word', normalize: true, language: 'auto',
          onSegment: () => seen.onSegment++, onWords: () => seen.onWords++ });
        for (const t of ['segment', 'words']) u.addEventListener(t, () => seen.events.push(t));
        for await (const _ of u) {}
        const summary = await u.done;
        const slice = (s, e) => vox.sourceSlice(arg, s, e);
        // Incremental: flush ids come back as promises; a cancelled context says where its audio stops.
        const ctx = client.open({ timestamps: 'word' });
        ctx.write('First part is here. ');
        const f1 = await ctx.flush('one');
        ctx.write('Second part comes next.');
        const f2 = await ctx.flush();
        ctx.write(' ' + arg.repeat(6));
        await new Promise((r) => ctx.addEventListener('chunk', r, { once: true }));
        ctx.cancel();
        const cancelled = await ctx.done;
        return {
          ready: 'default_voice' in client.ready, seen,
          segments: u.segments.map((s) => ({ text: s.text, slice: slice(s.source_start, s.source_end),
                                            start: s.audio_start_ms, range: [s.source_start, s.source_end] })),
          words: u.words.map((w) => ({ word: w.word, slice: slice(w.sourceStart, w.sourceEnd), start: w.startMs,
                                      end: w.endMs, range: [w.sourceStart, w.sourceEnd] })),
          summary, voice: u.voice, f1: f1.flush_id, f2: f2.flush_id,
          cancelled: { end: ctx.sourceEnd, summary: cancelled.source_end, source: ctx.source.length },
          mid: u.wordAt(summary.audio_ms / 2)?.word ?? null,
        };
    """, text)
    assert out["ready"] is True
    assert out["summary"]["voice"] is None and out["voice"] is None  # no voices yet: the model's own
    segs, words = out["segments"], out["words"]
    assert len(segs) == out["summary"]["segments"] == out["seen"]["onSegment"] >= 1
    for s in segs:
        assert s["text"] == s["slice"] == text[s["range"][0]:s["range"][1]]  # code points, as the server counts
    assert [s["start"] for s in segs] == sorted(s["start"] for s in segs)
    assert words and out["seen"]["onWords"] >= 1
    for w in words:
        assert w["word"] == w["slice"] == text[w["range"][0]:w["range"][1]]
        assert 0 <= w["start"] <= w["end"] <= out["summary"]["audio_ms"]
    assert [w["range"][0] for w in words] == sorted(w["range"][0] for w in words)
    assert "world," in [w["word"] for w in words]  # offsets after the emoji (two UTF-16 units, one code point)
    assert out["mid"] in [w["word"] for w in words]
    assert out["f1"] == "one" and out["f2"] == 1
    assert out["cancelled"]["end"] == out["cancelled"]["summary"]
    assert 0 <= out["cancelled"]["end"] <= out["cancelled"]["source"]
    page.close()


def ogg_opus_tone(tmp_path: Path, seconds: float = 2.0, freq: int = 440) -> bytes:
    """A mono Ogg Opus file of a tone, made by ffmpeg (libopus), as the server's `opus` frames concatenate to."""
    import shutil
    import subprocess

    assert shutil.which("ffmpeg"), "ffmpeg is not installed (bin/test installs it): it makes the Ogg Opus test file"
    out = tmp_path / "tone.opus"
    tone = f"sine=frequency={freq}:duration={seconds}:sample_rate=48000"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", tone, "-ac", "1", "-c:a", "libopus", "-b:a", "48k",
                    "-page_duration", "100000", str(out)], check=True)
    return out.read_bytes()


def test_ogg_opus_decodes_as_its_bytes_arrive(browser: Browser, server: int, tmp_path: Path) -> None:  # noqa: F811
    import base64

    data = ogg_opus_tone(tmp_path)
    page = blank(browser, server)
    out = js(page, """
        if (!vox.VoxPlayer.canPlay('opus')) return { unsupported: 'no WebCodecs AudioDecoder in this Chromium' };
        const bytes = Uint8Array.from(atob(arg), (c) => c.charCodeAt(0));
        const parts = [];
        let rate = null;
        const d = new vox.OggOpusDecoder((s, r) => { parts.push(s); rate = r; });
        // Cut anywhere: pages split across pushes must still decode.
        for (let o = 0; o < bytes.length; o += 777) d.push(bytes.subarray(o, o + 777));
        await d.flush();
        d.close();
        const all = new Float32Array(parts.reduce((a, p) => a + p.length, 0));
        let o = 0;
        for (const p of parts) { all.set(p, o); o += p.length; }
        let crossings = 0;
        for (let i = 1; i < all.length; i++) if (all[i - 1] < 0 && all[i] >= 0) crossings++;
        const peak = all.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
        return { n: all.length, rate, crossings, peak, head: d.head, packets: d.packets };
    """, base64.b64encode(data).decode())
    assert "unsupported" not in out, out
    assert out["head"]["channels"] == 1 and out["head"]["preSkip"] > 0
    seconds = out["n"] / out["rate"]
    assert 2.0 <= seconds <= 2.0 + 0.03  # all of it, pre-skip dropped (the last packet may carry padding)
    assert abs(out["crossings"] / seconds - 440) < 5  # the tone, at its pitch
    assert out["peak"] > 0.1  # ffmpeg's sine is at 1/8 of full scale
    page.close()


def test_opus_from_the_server_plays_with_less_bandwidth(browser: Browser, server: int) -> None:  # noqa: F811
    page = blank(browser, server)
    out = js(page, """
        const client = await vox.VoxWS.connect();
        if (!client.ready.formats.includes('opus')) return { unsupported: 'the server does not offer opus' };
        if (!vox.VoxPlayer.canPlay('opus')) return { unsupported: 'no WebCodecs AudioDecoder in this Chromium' };
        const player = new vox.VoxPlayer();
        const text = 'Compressed audio, decoded in the browser as it arrives.';
        const u = client.speak(text, { format: 'opus', sampleRate: 48000 });
        const stats = await player.play(u);
        const p = client.speak(text, { sampleRate: 48000 });
        for await (const _ of p) {}
        return { stats: { ...stats, error: stats.error && String(stats.error) }, summary: await u.done,
                 opusBytes: u.bytes, pcmBytes: p.bytes, types: u.chunks };
    """)
    assert "unsupported" not in out, out
    st = out["stats"]
    assert st["error"] is None and st["underruns"] == 0
    played_ms = st["playedMs"]
    assert abs(played_ms - out["summary"]["audio_ms"]) < 30  # all of it (Opus frames are 20 ms)
    assert out["opusBytes"] < out["pcmBytes"] / 4
    page.close()
