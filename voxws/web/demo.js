// The voxws demo page: everything it does goes through voxws.js, as another page would.
import { OPUS_RATES, VoxPlayer, VoxWS, utf16Offsets } from './voxws.js';

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const FORMAT_NAMES = {
  pcm_s16le: '16-bit PCM', pcm_f32le: '32-bit float', pcm_mulaw: 'μ-law 8-bit', wav: 'WAV', opus: 'Opus (compressed)',
};
const LLM_PIECE_MS = Number(params.get('llm_ms')) || 45; // pace of the "LLM" typing, per piece

// State the page shows, also read by the browser tests.
const demo = {
  connected: false,
  speaking: false,
  ready: null,
  summary: null,
  playback: null,
  error: null,
  llm: null, // { totalChars, charsAtFirstAudio }
  highlights: [], // every word highlighted, in order: { start, end, text, playedMs, wordMs, at }
  bandwidth: null, // { bytes, pcmBytes } of the last utterance
  voices: null, // GET /v1/voices answer, or null while the server has no voice routes
  recording: null, // { bytes, type, ms } of the last recording
  savedVoice: null, // the voice object the last upload created
};
window.voxDemo = demo;

const player = new VoxPlayer();
let client = null;
let connecting = null;
let current = null; // the utterance being spoken
let typing = null; // the LLM typing loop's stop flag

// --- token: ?token= (dropped from the address bar), else this tab's session storage ------------
let token = params.get('token') ?? sessionStorage.getItem('voxws.token') ?? '';
if (params.has('token')) {
  params.delete('token');
  const rest = params.toString();
  history.replaceState(null, '', location.pathname + (rest ? `?${rest}` : '') + location.hash);
}
$('token').value = token;
$('origin').textContent = location.origin;

// --- messages -------------------------------------------------------------------------------------
function banner(kind, text, code = '', action = null) {
  const b = $('banner');
  if (!kind) {
    b.hidden = true;
    return;
  }
  b.hidden = false;
  b.dataset.kind = kind;
  b.dataset.code = code;
  $('banner-text').textContent = text;
  const a = $('banner-action');
  a.hidden = !action;
  if (action) {
    a.textContent = action.label;
    a.onclick = action.run;
  }
}

function status(state, text) {
  $('status').dataset.state = state;
  $('status-text').textContent = text;
}

function log(text) {
  const li = document.createElement('li');
  const t = new Date().toISOString().slice(11, 23);
  li.innerHTML = `${t} <span></span>`;
  li.querySelector('span').textContent = text;
  const list = $('log');
  list.prepend(li);
  while (list.children.length > 60) list.lastChild.remove();
}

const reconnect = { label: 'Reconnect', run: () => connect().catch(() => {}) };

function explain(err) {
  // One clear sentence per failure a user can meet; the code stays on the banner for tests and support.
  const host = location.host;
  switch (err.code) {
    case 'unauthorized':
      $('connection').open = true;
      return ['error', $('token').value
        ? 'Authentication failed: the server refused this token. Check it under Connection and press Connect.'
        : 'Authentication required: this server needs a token. Enter it under Connection.'];
    case 'forbidden':
      return ['error', `The server does not accept connections from ${location.origin} (VOXWS_ALLOWED_ORIGINS).`];
    case 'unavailable':
      return ['warn', 'The server is not taking connections right now (starting, draining or full). Try again shortly.'];
    case 'unreachable':
      return ['error', `Cannot reach the server at ${host}. Is voxws running?`];
    case 'connection_lost':
    case 'closed':
      return ['warn', 'Lost the connection to the server. Press Speak to reconnect.'];
    case 'idle_timeout':
      return ['info', 'Disconnected after a while without use. Press Speak to reconnect.'];
    case 'slow_consumer':
      return ['warn', 'The page fell behind reading the audio, so the server closed the connection. Press Speak to reconnect.'];
    case 'busy': {
      const s = err.retryAfterMs ? ` Try again in ${Math.max(1, Math.round(err.retryAfterMs / 1000))} s.` : '';
      return ['warn', `The server is busy: every slot is taken and its queue is full.${s}`];
    }
    case 'empty_text':
      return ['warn', 'Nothing to speak: type some words first.'];
    case 'text_too_long':
      return ['warn', `The text is too long for this server (${demo.ready?.limits?.max_text_chars ?? '?'} characters at most).`];
    case 'too_many_contexts':
      return ['warn', 'Too many utterances at once on this connection. Wait for one to finish.'];
    case 'shutting_down':
      return ['warn', 'The server is restarting and takes no new speech. Reconnect in a moment.'];
    case 'rate_limited':
      return ['warn', 'Too many messages per second: slow down.'];
    case 'engine_error':
      return ['error', `The speech engine failed: ${err.message}`];
    default:
      return ['error', `${err.code}: ${err.message}`];
  }
}

function showError(err) {
  demo.error = { code: err.code, message: err.message };
  const [kind, text] = explain(err);
  const lost = ['connection_lost', 'closed', 'slow_consumer', 'idle_timeout', 'shutting_down'].includes(err.code);
  banner(kind, text, err.code, lost ? reconnect : null);
  log(`error ${err.code}: ${err.message}`);
}

// --- connection -----------------------------------------------------------------------------------
function fillChoices(ready) {
  const fmt = $('format');
  const rate = $('rate');
  const keepFmt = fmt.value;
  const keepRate = rate.value;
  // Only what this browser can play: Opus needs WebCodecs, MP3 is left to <audio> (HTTP API).
  const playable = ready.formats.filter((f) => VoxPlayer.canPlay(f));
  fmt.replaceChildren(...playable.map((f) => new Option(FORMAT_NAMES[f] ?? f, f)));
  fmt.value = playable.includes(keepFmt) ? keepFmt : playable[0];
  const khz = (r) => `${(r / 1000).toLocaleString('en', { maximumFractionDigits: 2 })} kHz`;
  rate.replaceChildren(
    new Option(`native (${khz(ready.sample_rate)})`, ''),
    ...ready.sample_rates.filter((r) => r !== ready.sample_rate).map((r) => new Option(khz(r), String(r))),
  );
  rate.value = [...rate.options].some((o) => o.value === keepRate) ? keepRate : '';
  $('text').maxLength = ready.limits?.max_text_chars ?? 100000;
  updateCount();
}

function connect() {
  if (connecting) return connecting;
  token = $('token').value.trim();
  if (token) sessionStorage.setItem('voxws.token', token);
  else sessionStorage.removeItem('voxws.token');
  client?.close();
  client = null;
  demo.connected = false;
  status('connecting', 'connecting…');
  connecting = VoxWS.connect(new URL('./v1/tts', location.href), { token: token || null })
    .then((c) => {
      client = c;
      demo.connected = true;
      demo.ready = c.ready;
      fillChoices(c.ready);
      loadVoices().catch((err) => log(`voices: ${err.message}`));
      const r = c.ready;
      status('connected', `${r.group} · ${r.engine}`);
      $('server-info').textContent = `${r.server} · ${r.engine} · ${r.model} · ${r.sample_rate} Hz`;
      log(`ready: ${r.server}, group ${r.group}, engine ${r.engine}`);
      if ($('banner').dataset.kind !== 'info') banner(null);
      c.addEventListener('close', (e) => {
        if (client !== c) return;
        demo.connected = false;
        status('disconnected', 'disconnected');
        log(`socket closed (${e.detail.code})`);
        if (!demo.speaking) showError(e.detail.error);
      });
      c.addEventListener('going_away', (e) => {
        banner('warn', 'The server is restarting: speech in progress finishes, new speech needs a reconnect.', 'going_away');
        log(`going_away: ${e.detail.reason}`);
      });
      c.addEventListener('error', (e) => {
        if (e.detail.code !== 'idle_timeout') showError(e.detail); // idle: the close handler says it calmly
      });
      return c;
    })
    .catch((err) => {
      status(err.code === 'unauthorized' ? 'error' : 'disconnected', err.code === 'unauthorized' ? 'not authorised' : 'disconnected');
      showError(err);
      throw err;
    })
    .finally(() => {
      connecting = null;
    });
  return connecting;
}

// --- speaking -------------------------------------------------------------------------------------
const fmtMs = (ms) => (ms == null ? '–' : `${Math.round(ms)}<small> ms</small>`);

function resetFigures() {
  for (const id of ['f-ttfb', 'f-audible', 'f-audio', 'f-underruns', 'f-chunks', 'f-bandwidth']) $(id).textContent = '–';
}

function setSpeaking(on) {
  demo.speaking = on;
  $('speak').disabled = on;
  $('stop').disabled = !on;
  $('speak').textContent = on ? 'Speaking…' : 'Speak';
}

async function speak() {
  if (demo.speaking) return;
  const text = $('text').value;
  if (!text.trim()) {
    banner('warn', 'Nothing to speak: type some text first.', 'empty_text');
    demo.error = { code: 'empty_text' };
    $('text').focus();
    return;
  }
  let rate = $('rate').value ? Number($('rate').value) : demo.ready?.sample_rate;
  // Opus has its own rates (48 kHz unless one of them was picked).
  if ($('format').value === 'opus' && !OPUS_RATES.includes(rate)) rate = 48000;
  player.resume(rate).catch(() => {}); // inside the click, so the browser lets audio start
  banner(null);
  demo.error = null;
  demo.summary = null;
  demo.playback = null;
  setSpeaking(true);
  resetFigures();
  try {
    const c = client?.connected ? client : await connect();
    const options = { format: $('format').value, timestamps: 'word' };
    if (rate !== demo.ready?.sample_rate) options.sampleRate = rate;
    if ($('voice').value) options.voice = $('voice').value;
    const llm = $('llm').checked;
    const u = llm ? c.open(options) : c.speak(text, options);
    current = u;
    window.voxLast = u; // for the browser tests
    resetWave(u.sampleRate);
    watch(u);
    follow(u, text);
    const playing = player.play(u);
    if (llm) typeLikeAnLlm(u, text);
    log(`${llm ? 'open' : 'speak'} ${u.context}: ${text.length} characters, ${options.format}, ${u.sampleRate} Hz`);
    try {
      demo.summary = await u.done;
      if (demo.summary.cancelled) banner('info', `Stopped after ${(demo.summary.audio_ms / 1000).toFixed(2)} s of audio.`, 'cancelled');
    } catch (err) {
      showError(err);
    }
    const stats = await playing;
    demo.playback = stats;
    showPlayback(stats);
  } catch (err) {
    if (!demo.error) showError(err);
  } finally {
    typing && (typing.stop = true);
    if (following) following.stop = true; // the last word stays marked until the text is clicked
    if (!demo.highlights.length) unfollow(); // nothing was heard: back to the editable box
    current = null;
    setSpeaking(false);
  }
}

function watch(u) {
  u.addEventListener('queued', (e) => {
    banner('info', `Waiting for a free engine slot (position ${e.detail.position} in the queue)…`, 'queued');
    log(`queued ${u.context} at ${e.detail.position}`);
  });
  u.addEventListener('start', (e) => {
    if ($('banner').dataset.code === 'queued') banner(null);
    log(`start ${u.context}: ${e.detail.format} ${e.detail.sample_rate} Hz`);
  });
  u.addEventListener('chunk', (e) => {
    if (!(e.detail instanceof Uint8Array)) addToWave(e.detail); // encoded bytes are not a waveform
    if (u.chunks === 1) {
      $('f-ttfb').innerHTML = fmtMs(u.ttfbMs);
      if (demo.llm) demo.llm.charsAtFirstAudio = u.charsWritten;
    }
    $('f-audio').innerHTML = `${(u.audioMs / 1000).toFixed(2)}<small> s</small>`;
    $('f-chunks').textContent = String(u.chunks);
  });
  u.addEventListener('done', (e) => {
    const d = e.detail;
    showBandwidth(u, d);
    log(`done ${u.context}: ${d.audio_ms} ms of audio, server TTFB ${d.ttfb_ms} ms, ${d.chunks} chunks`);
    $('f-audio').innerHTML = `${(d.audio_ms / 1000).toFixed(2)}<small> s</small>`;
  });
  u.addEventListener('cancelled', (e) => log(`cancelled ${u.context} after ${e.detail.audio_ms} ms of audio`));
}

// Bytes on the wire against what 16-bit PCM at the same rate would have taken.
function showBandwidth(u, d) {
  const pcmBytes = Math.round((d.audio_ms / 1000) * (u.sampleRate || 0) * 2);
  demo.bandwidth = { bytes: u.bytes, pcmBytes, format: u.format };
  const pct = pcmBytes ? Math.round((u.bytes / pcmBytes) * 100) : 0;
  $('f-bandwidth').innerHTML = `${(u.bytes / 1024).toFixed(0)}<small> kB · ${pct}%</small>`;
  $('f-bandwidth').title = `${pct}% of what 16-bit PCM at ${u.sampleRate} Hz takes`;
}

// --- the word being heard -------------------------------------------------------------------------
// The text box turns into a reading view while it plays: the word under the playhead is marked. Word
// offsets are the server's (code points into the text sent, which is the box's text); the playhead is
// the player's, so the mark moves with the sound, not with the (earlier) arrival of the words.
let following = null;

function follow(u, text) {
  const at = utf16Offsets(text);
  const run = { u, stop: false, last: null };
  following && (following.stop = true);
  following = run;
  demo.highlights = [];
  $('read-before').textContent = '';
  $('read-word').textContent = '';
  $('read-after').textContent = text;
  $('reading').hidden = false;
  $('text').hidden = true;
  const tick = () => {
    if (run.stop) return;
    const ms = player.currentTimeMs(u);
    // Words come before the audio they describe but the page may play a chunk before it reads them: fall back
    // to the segment only once the server has finished without sending any (an older server).
    const w = u.wordAt(ms) ?? (u.words.length || !u.summary ? null : segmentAsWord(u.segmentAt(ms)));
    if (w && w !== run.last && (!run.last || w.sourceStart >= run.last.sourceStart)) {
      run.last = w;
      const a = at[Math.min(w.sourceStart, at.length - 1)];
      const b = at[Math.min(w.sourceEnd, at.length - 1)];
      $('read-before').textContent = text.slice(0, a);
      $('read-word').textContent = text.slice(a, b);
      $('read-after').textContent = text.slice(b);
      demo.highlights.push({ start: w.sourceStart, end: w.sourceEnd, text: text.slice(a, b), playedMs: ms,
        wordMs: w.startMs, at: performance.now() });
    }
    setTimeout(tick, 10); // a timer, not requestAnimationFrame: short words survive a slow frame
  };
  tick();
}

// Without word timestamps (an older server, known once it is done), mark the whole segment.
function segmentAsWord(s) {
  return s && { sourceStart: s.source_start, sourceEnd: s.source_end, startMs: s.audio_start_ms };
}

function unfollow() {
  if (following) following.stop = true;
  following = null;
  $('reading').hidden = true;
  $('text').hidden = false;
}

function showPlayback(s) {
  if (s.firstAudibleMs != null) $('f-audible').innerHTML = fmtMs(s.firstAudibleMs);
  $('f-underruns').innerHTML = `${s.underruns}<small> · ${Math.round(s.underrunMs)} ms</small>`;
  log(`played ${(s.playedMs / 1000).toFixed(2)} s, ${s.underruns} underruns (${Math.round(s.underrunMs)} ms)${s.stopped ? ', stopped' : ''}`);
}

// Stream the text in word-sized pieces, as tokens come out of a language model.
async function typeLikeAnLlm(ctx, text) {
  const pieces = text.match(/\S+\s*|\s+/g) ?? [text];
  const flag = { stop: false };
  typing = flag;
  demo.llm = { totalChars: text.length, charsAtFirstAudio: null };
  const box = $('typed');
  box.hidden = false;
  box.classList.add('typing');
  let sent = '';
  $('typed-sent').textContent = '';
  $('typed-rest').textContent = text;
  try {
    for (const piece of pieces) {
      if (flag.stop || ctx.finished || ctx.state === 'cancelling') return;
      ctx.write(piece);
      sent += piece;
      $('typed-sent').textContent = sent;
      $('typed-rest').textContent = text.slice(sent.length);
      await new Promise((r) => setTimeout(r, LLM_PIECE_MS));
    }
    if (!flag.stop && !ctx.finished && ctx.state !== 'cancelling') ctx.end();
  } catch (err) {
    if (!ctx.finished) ctx.cancel();
    log(`typing stopped: ${err.message}`);
  } finally {
    box.classList.remove('typing');
  }
}

function stop() {
  if (typing) typing.stop = true;
  if (current && !current.finished) current.cancel();
  player.stop();
}

// --- waveform and level ---------------------------------------------------------------------------
// The canvas shows the utterance's envelope as it arrives (pale) and as it plays (solid); the bar
// beside it is the live output level from the player's AnalyserNode.
const canvas = $('wave');
const g = canvas.getContext('2d');
const BLOCK_S = 0.02;
const wave = { peaks: [], rate: 44100, pending: 0, pendingPeak: 0, played: 0, at: 0, playing: false };
let scratch = new Float32Array(2048);

function resetWave(rate) {
  Object.assign(wave, { peaks: [], rate: rate || 44100, pending: 0, pendingPeak: 0, played: 0, at: 0, playing: false });
}

function addToWave(chunk) {
  const scale = chunk instanceof Float32Array ? 1 : 1 / 32768;
  const block = Math.max(1, Math.round(wave.rate * BLOCK_S));
  for (let i = 0; i < chunk.length; i++) {
    const v = Math.abs(chunk[i] * scale);
    if (v > wave.pendingPeak) wave.pendingPeak = v;
    if (++wave.pending === block) {
      wave.peaks.push(wave.pendingPeak);
      wave.pending = 0;
      wave.pendingPeak = 0;
    }
  }
}

function draw() {
  const dpr = window.devicePixelRatio || 1;
  const w = Math.max(1, Math.round(canvas.clientWidth * dpr));
  const h = Math.max(1, Math.round(canvas.clientHeight * dpr));
  if (canvas.width !== w || canvas.height !== h) {
    canvas.width = w;
    canvas.height = h;
  }
  const a = player.analyser;
  let rms = 0;
  if (a) {
    if (scratch.length !== a.fftSize) scratch = new Float32Array(a.fftSize);
    a.getFloatTimeDomainData(scratch);
    let sum = 0;
    for (const v of scratch) sum += v * v;
    rms = Math.sqrt(sum / scratch.length);
  }
  const db = rms > 0 ? 20 * Math.log10(rms) : -100;
  $('level').style.height = `${Math.max(0, Math.min(100, ((db + 60) / 60) * 100))}%`;

  const style = getComputedStyle(document.documentElement);
  const color = style.getPropertyValue('--wave').trim() || '#4f46e5';
  const line = style.getPropertyValue('--line').trim() || '#e3e5ef';
  g.clearRect(0, 0, w, h);
  const mid = h / 2;
  const peaks = wave.peaks;
  const bar = 3 * dpr;
  const gap = 1 * dpr;
  const slots = Math.floor(w / (bar + gap));
  // Fit the whole utterance: one bar per block while it fits, then several blocks per bar.
  const per = Math.max(1, Math.ceil(peaks.length / slots));
  const playedSamples = wave.playing
    ? wave.played + ((performance.now() - wave.at) / 1000) * wave.rate
    : wave.played;
  const playedBlocks = playedSamples / (wave.rate * BLOCK_S);
  g.fillStyle = line;
  g.fillRect(0, mid - 0.5 * dpr, w, dpr);
  for (let s = 0; s * per < peaks.length; s++) {
    let p = 0;
    for (let k = s * per; k < Math.min(peaks.length, (s + 1) * per); k++) p = Math.max(p, peaks[k]);
    const half = Math.max(dpr, Math.min(1, p * 1.8) * (mid - 4 * dpr));
    g.globalAlpha = s * per < playedBlocks ? 1 : 0.3;
    g.fillStyle = color;
    g.fillRect(s * (bar + gap), mid - half, bar, half * 2);
  }
  g.globalAlpha = 1;
  requestAnimationFrame(draw);
}

// --- wiring ---------------------------------------------------------------------------------------
function updateCount() {
  const max = demo.ready?.limits?.max_text_chars;
  const n = $('text').value.length;
  $('count').textContent = max ? `${n.toLocaleString('en')} / ${max.toLocaleString('en')}` : `${n}`;
}

player.addEventListener('start', (e) => {
  $('f-audible').innerHTML = fmtMs(e.detail.firstAudibleMs);
  Object.assign(wave, { playing: true, at: performance.now() });
});
player.addEventListener('progress', (e) => {
  $('f-underruns').innerHTML = `${e.detail.underruns}<small> · ${Math.round(e.detail.underrunMs)} ms</small>`;
  Object.assign(wave, { played: e.detail.samplesPlayed, at: performance.now(), playing: e.detail.buffered > 0 });
});
player.addEventListener('ended', (e) => {
  Object.assign(wave, { played: e.detail.samplesPlayed, playing: false });
});

// --- voices ---------------------------------------------------------------------------------------
const authHeaders = () => (token ? { Authorization: `Bearer ${token}` } : {});

async function loadVoices(select) {
  const r = await fetch(new URL('./v1/voices', location.href), { headers: authHeaders(), cache: 'no-store' });
  const pick = $('voice');
  const def = demo.ready?.default_voice ?? null;
  if (r.status === 404) {
    // A server without voice routes: only its own voice.
    demo.voices = null;
    pick.replaceChildren(new Option(def ? `server default (${def})` : "model's own voice", ''));
    $('voices-note').textContent = '(this server has no voice routes)';
    $('rec-save').title = 'this server has no /v1/voices';
    return;
  }
  if (!r.ok) throw new Error(`GET /v1/voices: HTTP ${r.status}`);
  const body = await r.json();
  demo.voices = body;
  const keep = select ?? pick.value;
  const own = new Option("model's own voice", '');
  const options = [];
  if (def) {
    options.push(new Option(`server default (${body.voices.find((v) => v.id === def)?.name || def})`, ''));
    // The protocol names no way to ask for the model's own voice while a default is set.
    own.disabled = true;
    own.value = '__model__';
    own.title = 'not selectable while the server has a default voice';
  }
  options.push(own);
  for (const v of body.voices) options.push(new Option(`${v.name || v.id} · ${v.duration_s.toFixed(1)} s`, v.id));
  pick.replaceChildren(...options);
  pick.value = [...pick.options].some((o) => o.value === keep && !o.disabled) ? keep : '';
  $('voices-note').textContent = `(${body.voices.length} on the server)`;
  $('rec-save').title = '';
}

// --- recording a voice ----------------------------------------------------------------------------
const MAX_RECORD_MS = 30000;
let recorder = null;
let recorded = null; // Blob

async function toggleRecording() {
  if (recorder) {
    recorder.stop();
    return;
  }
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ audio: { channelCount: 1, echoCancellation: false } });
  } catch (err) {
    banner('error', `No microphone: ${err.message}`, 'microphone');
    return;
  }
  const type = ['audio/webm;codecs=opus', 'audio/ogg;codecs=opus', 'audio/webm'].find((t) => MediaRecorder.isTypeSupported(t));
  const rec = new MediaRecorder(stream, type ? { mimeType: type } : {});
  const parts = [];
  const t0 = performance.now();
  recorder = rec;
  $('record').dataset.recording = '1';
  $('rec-start').textContent = '■ Stop';
  const clock = setInterval(() => {
    const s = (performance.now() - t0) / 1000;
    $('rec-state').textContent = `recording… ${s.toFixed(1)} s`;
    if (s * 1000 >= MAX_RECORD_MS) rec.stop();
  }, 100);
  rec.ondataavailable = (e) => e.data.size && parts.push(e.data);
  rec.onstop = () => {
    clearInterval(clock);
    for (const t of stream.getTracks()) t.stop();
    recorder = null;
    const ms = performance.now() - t0;
    recorded = new Blob(parts, { type: rec.mimeType || 'audio/webm' });
    demo.recording = { bytes: recorded.size, type: recorded.type, ms };
    $('record').dataset.recording = '0';
    $('rec-start').textContent = '● Record again';
    $('rec-state').textContent = `${(ms / 1000).toFixed(1)} s recorded (${Math.round(recorded.size / 1024)} kB)`;
    $('rec-save').disabled = !recorded.size || demo.voices === null;
    log(`recorded ${(ms / 1000).toFixed(1)} s, ${recorded.type}, ${recorded.size} bytes`);
  };
  rec.start(250);
}

async function saveVoice() {
  if (!recorded) return;
  const text = $('rec-text').value.trim();
  if (!text) {
    banner('warn', 'Type the transcript of the recording first.', 'missing_text');
    return;
  }
  const form = new FormData();
  form.append('audio', recorded, recorded.type.includes('ogg') ? 'voice.ogg' : 'voice.webm');
  form.append('text', text);
  const name = $('rec-name').value.trim();
  if (name) form.append('name', name);
  $('rec-save').disabled = true;
  try {
    const r = await fetch(new URL('./v1/voices', location.href), { method: 'POST', body: form, headers: authHeaders() });
    const body = await r.json().catch(() => ({}));
    if (r.status !== 201) {
      const e = body.error ?? {};
      demo.error = { code: e.code ?? `http_${r.status}`, message: e.message ?? '' };
      banner('error', `The server did not take the recording: ${e.message ?? `HTTP ${r.status}`}`, e.code ?? '');
      return;
    }
    demo.savedVoice = body;
    await loadVoices(body.id);
    banner('info', `Saved the voice "${body.name || body.id}": Speak now uses it.`, 'voice_saved');
    log(`voice ${body.id} saved (${body.duration_s} s)`);
  } finally {
    $('rec-save').disabled = !recorded;
  }
}

$('rec-start').addEventListener('click', toggleRecording);
$('rec-save').addEventListener('click', saveVoice);
$('reading').addEventListener('click', () => {
  if (!demo.speaking) {
    unfollow();
    $('text').focus();
  }
});
$('speak').addEventListener('click', speak);
$('stop').addEventListener('click', stop);
$('text').addEventListener('input', updateCount);
$('llm').addEventListener('change', () => {
  if (!$('llm').checked) $('typed').hidden = true;
});
$('conn-form').addEventListener('submit', (e) => {
  e.preventDefault();
  connect().catch(() => {});
});
document.addEventListener('keydown', (e) => {
  if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) {
    e.preventDefault();
    speak();
  } else if (e.key === 'Escape') {
    stop();
  }
});

updateCount();
requestAnimationFrame(draw);
connect().catch(() => {}); // shown on the page by connect()
