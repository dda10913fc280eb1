// voxws.js: browser client for the voxws.v1 text-to-speech protocol (see PROTOCOL.md).
// One ES module, no dependencies, no build step: `import { VoxWS, VoxPlayer } from '/voxws.js'`.
//
//   const client = await VoxWS.connect('wss://host/v1/tts', { token });
//   const player = new VoxPlayer();
//   button.onclick = () => player.play(client.speak('Hello there.'));
//
// Types: voxws.d.ts beside this file.

export const PROTOCOL = 'voxws.v1';
export const VERSION = '0.1.0';

// Copies of the server's definitions (voxws/protocol.py ERROR_CODES, voxws/config.py FORMATS and
// SAMPLE_RATES); tests/test_browser_client.py checks them against the Python ones.
/** Server error code -> the WebSocket close code that follows it (null: the socket stays open). */
export const ERROR_CODES = Object.freeze({
  bad_message: null, empty_text: null, text_too_long: null, unsupported_format: null, unknown_voice: null,
  bad_option: null, context_exists: null, unknown_context: null, too_many_contexts: null, busy: null,
  rate_limited: null, slow_consumer: 1008, engine_error: null, unauthorized: 1008, message_too_big: 1009,
  idle_timeout: 1000, shutting_down: null,
});
/** Every audio format of the protocol; a server offers a subset (`ready.formats`). */
export const FORMATS = Object.freeze(['pcm_s16le', 'pcm_f32le', 'pcm_mulaw', 'wav', 'mp3', 'opus']);
export const SAMPLE_RATES = Object.freeze([8000, 16000, 22050, 24000, 44100, 48000]);
/** Rates an Ogg Opus stream may have. */
export const OPUS_RATES = Object.freeze([8000, 12000, 16000, 24000, 48000]);

// Characters RFC 6455 allows in a subprotocol name; other tokens travel as ?token= instead.
const SUBPROTOCOL_RE = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
// Server codes after which the server closes the socket (PROTOCOL.md, "Error codes").
const CLOSING_CODES = new Set(Object.keys(ERROR_CODES).filter((c) => ERROR_CODES[c] !== null));
// Codes that reject one message of an incremental context the server keeps open; the client ends the
// utterance anyway (and cancels it on the server) so that both sides agree it is over.
const MESSAGE_CODES = new Set(['text_too_long', 'bad_message', 'context_exists']);
const now = () => performance.now();

/** An error from the protocol (`code` is the server's code) or from the connection. */
export class VoxError extends Error {
  constructor(code, message, extra = {}) {
    super(message);
    this.name = 'VoxError';
    this.code = code;
    this.context = extra.context ?? null;
    this.retryAfterMs = extra.retry_after_ms ?? extra.retryAfterMs ?? null;
    this.closeCode = extra.closeCode ?? null;
  }
}

/** The socket could not be opened, or was lost: codes unauthorized, forbidden, unavailable,
 * refused, unreachable, timeout, connection_lost, not_connected, closed. */
export class VoxConnectionError extends VoxError {
  constructor(code, message, extra = {}) {
    super(code, message, extra);
    this.name = 'VoxConnectionError';
  }
}

// ---------------------------------------------------------------------------------------------
// PCM decoding

const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

const MULAW = (() => {
  // G.711 mu-law expansion to 16-bit linear.
  const t = new Int16Array(256);
  for (let i = 0; i < 256; i++) {
    const u = ~i & 0xff;
    let s = ((u & 0x0f) << 3) + 0x84;
    s <<= (u & 0x70) >> 4;
    t[i] = u & 0x80 ? 0x84 - s : s - 0x84;
  }
  return t;
})();

/** Turn one binary frame into samples: Int16Array (pcm_s16le, pcm_mulaw) or Float32Array (pcm_f32le). */
export function decodePcm(buffer, format) {
  const bytes = new Uint8Array(buffer);
  if (format === 'pcm_mulaw') {
    const out = new Int16Array(bytes.length);
    for (let i = 0; i < bytes.length; i++) out[i] = MULAW[bytes[i]];
    return out;
  }
  const f32 = format === 'pcm_f32le';
  const size = f32 ? 4 : 2;
  const n = Math.floor(bytes.length / size);
  if (LITTLE_ENDIAN) {
    // Copy so that every chunk owns an aligned buffer the caller may transfer.
    const own = bytes.slice(0, n * size).buffer;
    return f32 ? new Float32Array(own) : new Int16Array(own);
  }
  const view = new DataView(buffer);
  const out = f32 ? new Float32Array(n) : new Int16Array(n);
  for (let i = 0; i < n; i++) out[i] = f32 ? view.getFloat32(i * 4, true) : view.getInt16(i * 2, true);
  return out;
}

/** The bytes of a WAV stream after its header (null while the header is incomplete). */
function wavData(bytes) {
  if (bytes.length < 12 || String.fromCharCode(...bytes.subarray(0, 4)) !== 'RIFF') return bytes;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  for (let o = 12; o + 8 <= bytes.length; ) {
    const id = String.fromCharCode(...bytes.subarray(o, o + 4));
    if (id === 'data') return bytes.subarray(o + 8);
    o += 8 + view.getUint32(o + 4, true) + (view.getUint32(o + 4, true) & 1);
  }
  return null;
}

/** Whether a format arrives as encoded bytes (Uint8Array chunks) rather than samples. */
export const isEncoded = (format) => format === 'mp3' || format === 'opus';

/** Protocol offsets count Unicode code points; JS strings count UTF-16 units. `utf16Offsets(text)[cp]` is
 * the string index of code point `cp` (the array has one entry more than the text has code points). */
export function utf16Offsets(text) {
  const out = [0];
  let o = 0;
  for (const ch of text) out.push((o += ch.length));
  return out;
}

/** `source[start:end]` in code points, as the server's offsets mean it. */
export function sourceSlice(text, start, end) {
  const at = utf16Offsets(text);
  return text.slice(at[Math.min(start, at.length - 1)], at[Math.min(end, at.length - 1)]);
}

/** Samples as float32 in [-1, 1) (a new array the caller owns). */
export function toFloat32(chunk) {
  if (chunk instanceof Float32Array) return chunk.slice();
  const out = new Float32Array(chunk.length);
  for (let i = 0; i < chunk.length; i++) out[i] = chunk[i] / 32768;
  return out;
}

// ---------------------------------------------------------------------------------------------
// Utterances

/** One context: an async iterator of audio chunks with start/chunk/done/cancelled/error events. */
export class Utterance extends EventTarget {
  constructor(client, context, options) {
    super();
    this.client = client;
    this.context = context;
    this.options = options;
    this.state = 'pending'; // pending | queued | streaming | cancelling | done | cancelled | error
    this.format = options.format ?? 'pcm_s16le';
    this.sampleRate = options.sampleRate ?? client.ready?.sample_rate ?? null;
    this.sentAt = now();
    this.firstAudioAt = null;
    this.chunks = 0;
    this.samples = 0;
    this.bytes = 0; // binary bytes received: the bandwidth this format costs
    this.summary = null;
    this.error = null;
    this.source = typeof options.text === 'string' ? options.text : ''; // what offsets point into
    this.segments = []; // `segment` messages, in order
    this.words = []; // {word, startMs, endMs, sourceStart, sourceEnd, estimated}, in order
    this.voice = undefined; // from `done`: the voice id used, or null
    this.sourceEnd = null; // from `cancelled`: where in `source` the audio sent stops
    this._flushes = new Map(); // flush_id -> {resolve, reject}
    this._headerSeen = false;
    this._queue = [];
    this._waiters = [];
    this._ended = false;
    this._errorDelivered = false;
    this.done = new Promise((resolve, reject) => {
      this._resolve = resolve;
      this._reject = reject;
    });
    this.done.catch(() => {}); // iterating alone must not leave an unhandled rejection behind
  }

  /** Client-side time to first byte (ms from send to the first audio frame), or null. */
  get ttfbMs() {
    return this.firstAudioAt === null ? null : this.firstAudioAt - this.sentAt;
  }

  /** Audio received so far, in ms (encoded formats: known from the summary only). */
  get audioMs() {
    if (isEncoded(this.format)) return this.summary?.audio_ms ?? 0;
    return this.sampleRate ? (this.samples / this.sampleRate) * 1000 : 0;
  }

  /** The word (see `words`) being heard at `ms` from the start of this utterance's audio, or null. */
  wordAt(ms) {
    let lo = 0;
    let hi = this.words.length - 1;
    let found = null;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      if (this.words[mid].startMs <= ms) {
        found = this.words[mid];
        lo = mid + 1;
      } else hi = mid - 1;
    }
    return found;
  }

  /** The segment being heard at `ms`, or null. */
  segmentAt(ms) {
    let found = null;
    for (const s of this.segments) if (s.audio_start_ms <= ms) found = s;
    return found;
  }

  get finished() {
    return this.state === 'done' || this.state === 'cancelled' || this.state === 'error';
  }

  /** Stop now: no more chunks are delivered; `done` resolves with `{cancelled: true}` once the
   * server acknowledges (or with the normal summary if it had already finished). */
  cancel() {
    if (this.finished || this.state === 'cancelling') return;
    this.state = 'cancelling';
    this._endIteration();
    try {
      this.client._send({ type: 'cancel', context: this.context });
    } catch (e) {
      this._fail(e);
    }
  }

  [Symbol.asyncIterator]() {
    return {
      next: () => {
        if (this._queue.length) return Promise.resolve({ value: this._queue.shift(), done: false });
        if (this._ended) {
          if (this.error && !this._errorDelivered) {
            this._errorDelivered = true;
            return Promise.reject(this.error);
          }
          return Promise.resolve({ value: undefined, done: true });
        }
        return new Promise((resolve, reject) => this._waiters.push({ resolve, reject }));
      },
      // Leaving a for-await loop early cancels the utterance, as with ReadableStream.
      return: () => {
        this.cancel();
        return Promise.resolve({ value: undefined, done: true });
      },
      [Symbol.asyncIterator]() {
        return this;
      },
    };
  }

  _emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  _endIteration() {
    this._ended = true;
    if (this.state === 'cancelling') this._queue.length = 0; // cancel means: nothing more, at once
    for (const w of this._waiters.splice(0)) {
      if (this.error && !this._errorDelivered) {
        this._errorDelivered = true;
        w.reject(this.error);
      } else {
        w.resolve({ value: undefined, done: true });
      }
    }
  }

  _onQueued(msg) {
    if (this.state === 'pending') this.state = 'queued';
    this._emit('queued', msg);
  }

  _onStart(msg) {
    if (this.state === 'pending' || this.state === 'queued') this.state = 'streaming';
    this.format = msg.format ?? this.format;
    this.sampleRate = msg.sample_rate ?? this.sampleRate;
    this._emit('start', msg);
  }

  _onAudio(buffer) {
    if (this.state === 'cancelling' || this.finished) return;
    this.bytes += buffer.byteLength;
    let chunk;
    if (isEncoded(this.format)) {
      chunk = new Uint8Array(buffer.slice(0));
    } else if (this.format === 'wav') {
      const data = this._headerSeen ? new Uint8Array(buffer) : wavData(new Uint8Array(buffer));
      if (data === null) return; // header only: no samples yet
      this._headerSeen = true;
      if (!data.length) return;
      chunk = decodePcm(data.slice().buffer, 'pcm_s16le');
    } else {
      chunk = decodePcm(buffer, this.format);
    }
    if (this.firstAudioAt === null) this.firstAudioAt = now();
    this.chunks += 1;
    if (!isEncoded(this.format)) this.samples += chunk.length;
    this._emit('chunk', chunk);
    const w = this._waiters.shift();
    if (w) w.resolve({ value: chunk, done: false });
    else this._queue.push(chunk);
  }

  _onSegment(msg) {
    this.segments.push(msg);
    this.options.onSegment?.(msg, this);
    this._emit('segment', msg);
  }

  _onWords(msg) {
    const added = msg.words.map((word, i) => ({
      word,
      startMs: msg.start_ms[i],
      endMs: msg.end_ms[i],
      sourceStart: msg.source_start[i],
      sourceEnd: msg.source_end[i],
      estimated: !!msg.estimated,
    }));
    this.words.push(...added);
    this.options.onWords?.(added, this);
    this._emit('words', { ...msg, list: added });
  }

  _onFlushed(msg) {
    const key = String(msg.flush_id);
    const f = this._flushes.get(key);
    this._flushes.delete(key);
    f?.resolve(msg);
    this._emit('flushed', msg);
  }

  // Flushes still waiting when the context ends: done means all audio was sent, anything else did not.
  _settleFlushes(error) {
    for (const f of this._flushes.values()) (error ? f.reject(error) : f.resolve({ type: 'flushed', context: this.context }));
    this._flushes.clear();
  }

  _onDone(msg) {
    if (this.finished) return;
    this.state = 'done';
    this.voice = msg.voice ?? null;
    this._settleFlushes(null);
    this.summary = { ...msg, cancelled: false, client_ttfb_ms: this.ttfbMs };
    this._endIteration();
    this._emit('done', this.summary);
    this._resolve(this.summary);
  }

  _onCancelled(msg) {
    if (this.finished) return;
    this.state = 'cancelled';
    this.sourceEnd = msg.source_end ?? null;
    this._settleFlushes(new VoxError('cancelled', `context ${this.context} was cancelled`, { context: this.context }));
    this.summary = { ...msg, cancelled: true, client_ttfb_ms: this.ttfbMs };
    this._endIteration();
    this._emit('cancelled', this.summary);
    this._resolve(this.summary);
  }

  _fail(error) {
    if (this.finished) return;
    this.state = 'error';
    this.error = error;
    this._settleFlushes(error);
    this._endIteration();
    this._emit('error', error);
    this._reject(error);
  }
}

/** Incremental input (`client.open()`): write text as it arrives (e.g. from an LLM), then end(). */
export class TextContext extends Utterance {
  constructor(client, context, options) {
    super(client, context, options);
    this._opened = false;
    this._closed = false;
    this._flushSeq = 0;
    this.charsWritten = 0;
  }

  _check(what) {
    if (this._closed) throw new VoxError('context_closed', `${what}() after end() on context ${this.context}`);
    if (this.finished || this.state === 'cancelling') {
      throw this.error ?? new VoxError('context_closed', `${what}() on finished context ${this.context}`);
    }
  }

  /** Append text; the server starts speaking at sentence ends (or after a short delay). */
  write(text) {
    this._check('write');
    if (typeof text !== 'string') throw new TypeError('write(text): text must be a string');
    if (text === '') return;
    const msg = { type: 'text', context: this.context, text };
    if (!this._opened) {
      Object.assign(msg, wireOptions(this.options)); // options ride on the first `text`
      this._opened = true;
      this.sentAt = now();
    }
    this.client._send(msg);
    this.charsWritten += text.length;
    this.source += text;
  }

  /** Speak whatever is buffered now; the context stays open. Resolves with the server's `flushed` once
   * all audio of the text written before it was sent (flushId: yours, or a generated number). */
  flush(flushId) {
    this._check('flush');
    if (!this._opened) return Promise.resolve({ type: 'flushed', context: this.context, flush_id: flushId ?? null });
    const id = flushId ?? ++this._flushSeq;
    const p = new Promise((resolve, reject) => this._flushes.set(String(id), { resolve, reject }));
    p.catch(() => {}); // a flush nobody awaits must not report an unhandled rejection
    this.client._send({ type: 'flush', context: this.context, flush_id: id });
    return p;
  }

  /** No more text: the server speaks the rest and finishes with `done`. */
  end() {
    this._check('end');
    this._closed = true;
    if (!this._opened) {
      // The server only knows a context once its first text arrives.
      this.client._forget(this);
      this._fail(new VoxError('empty_text', 'end() before any text was written', { context: this.context }));
      return;
    }
    this.client._send({ type: 'end', context: this.context });
  }
}

function wireOptions(o) {
  const out = {};
  if (o.format !== undefined) out.format = o.format;
  if (o.sampleRate !== undefined) out.sample_rate = Number(o.sampleRate);
  if (o.voice !== undefined && o.voice !== null) out.voice = o.voice;
  if (o.bitrate !== undefined) out.bitrate = o.bitrate;
  if (o.normalize !== undefined) out.normalize = !!o.normalize;
  if (o.language !== undefined) out.language = o.language;
  if (o.timestamps !== undefined) out.timestamps = o.timestamps;
  if (o.cfgValue !== undefined) out.cfg_value = o.cfgValue;
  if (o.temperature !== undefined) out.temperature = o.temperature;
  if (o.seed !== undefined) out.seed = o.seed;
  return out;
}

// ---------------------------------------------------------------------------------------------
// The connection

/** `ws(s)://…/v1/tts` from a ws/http URL, a bare origin or a relative path (default ./v1/tts). */
export function endpointUrl(url) {
  const u = new URL(url ?? './v1/tts', globalThis.location?.href);
  if (u.protocol === 'http:') u.protocol = 'ws:';
  else if (u.protocol === 'https:') u.protocol = 'wss:';
  if (u.pathname === '/' || u.pathname === '') u.pathname = '/v1/tts';
  return u;
}

/** One WebSocket to a voxws server. Events: close, going_away, error (errors without a context), message. */
export class VoxWS extends EventTarget {
  /** Open a socket and wait for the server's `ready`. Rejects with VoxConnectionError. */
  static async connect(url, options = {}) {
    const client = new VoxWS(url, options);
    await client._open();
    return client;
  }

  constructor(url, { token = null, timeoutMs = 10000 } = {}) {
    super();
    this.url = endpointUrl(url);
    this.token = token || null;
    this.timeoutMs = timeoutMs;
    this.ready = null; // the server's `ready` message
    this.goingAway = null;
    this.closed = false;
    this.ws = null;
    this._contexts = new Map();
    this._streaming = null; // the context whose `start` came last: binary frames are its audio
    this._pings = [];
    this._seq = 0;
    this._prefix = Math.random().toString(36).slice(2, 8);
    this._lastSocketError = null;
    this._dropped = new Set(); // contexts the client ended on an error and cancelled on the server
  }

  _open() {
    const target = new URL(this.url);
    const protocols = [PROTOCOL];
    if (this.token) {
      // Browsers cannot set headers; the token rides in the subprotocol list when its characters allow.
      if (SUBPROTOCOL_RE.test(this.token)) protocols.push(`bearer.${this.token}`);
      else target.searchParams.set('token', this.token);
    }
    return new Promise((resolve, reject) => {
      let opened = false;
      let settled = false;
      const settle = (err) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        if (err) reject(err);
        else resolve();
      };
      const timer = setTimeout(() => {
        settle(new VoxConnectionError('timeout', `no answer from ${this.url.host} within ${this.timeoutMs} ms`));
        this.close();
      }, this.timeoutMs);
      let ws;
      try {
        ws = new WebSocket(target, protocols);
      } catch (e) {
        settle(new VoxConnectionError('refused', `cannot open ${this.url}: ${e.message}`));
        return;
      }
      ws.binaryType = 'arraybuffer';
      this.ws = ws;
      ws.onopen = () => {
        opened = true;
      };
      ws.onmessage = (ev) => {
        this._onMessage(ev);
        if (this.ready) settle(null);
      };
      ws.onclose = async (ev) => {
        if (!settled) {
          const err = opened
            ? this._lostError(ev)
            : await diagnoseHandshake(target, this.token, ev.code);
          settle(err);
        }
        this._onClose(ev);
      };
    });
  }

  /** Speak a whole text in a new context. Options: format, sampleRate, voice, cfgValue, temperature, seed,
   * context (an id of your own; default: generated). */
  speak(text, options = {}) {
    if (typeof text !== 'string') throw new TypeError('speak(text): text must be a string');
    const u = new Utterance(this, this._contextId(options), { ...options, text });
    this._send({ type: 'speak', context: u.context, text, ...wireOptions(options) });
    this._contexts.set(u.context, u);
    return u;
  }

  /** Open a context for incremental text: ctx.write(), ctx.flush(), ctx.end(). */
  open(options = {}) {
    this._assertOpen();
    const ctx = new TextContext(this, this._contextId(options), options);
    this._contexts.set(ctx.context, ctx);
    return ctx;
  }

  /** Cancel every open context of this socket. */
  cancelAll() {
    for (const u of this._contexts.values()) u.cancel();
  }

  /** Round trip to the server; resolves with the time it took, in ms. */
  ping() {
    const t0 = now();
    this._send({ type: 'ping' });
    return new Promise((resolve, reject) => this._pings.push({ resolve: () => resolve(now() - t0), reject }));
  }

  /** Close the socket; pending utterances reject with code `closed`. */
  close(code = 1000, reason = 'client closed') {
    if (this.ws && this.ws.readyState <= 1) this.ws.close(code, reason);
    this._failAll(new VoxConnectionError('closed', 'the client closed the connection', { closeCode: code }));
    this.closed = true;
  }

  get connected() {
    return !!this.ws && this.ws.readyState === 1 && !this.closed;
  }

  _contextId(options) {
    if (options.context === undefined) {
      this._seq += 1;
      return `${this._prefix}-${this._seq}`;
    }
    if (this._contexts.has(options.context)) {
      throw new VoxError('context_exists', `context ${options.context} is still open on this socket`);
    }
    return options.context;
  }

  _assertOpen() {
    if (!this.connected) throw new VoxConnectionError('not_connected', 'the connection is closed: connect again');
  }

  _send(msg) {
    this._assertOpen();
    this.ws.send(JSON.stringify(msg));
  }

  _forget(u) {
    if (this._contexts.get(u.context) === u) this._contexts.delete(u.context);
    if (this._streaming === u) this._streaming = null;
  }

  _onMessage(ev) {
    if (typeof ev.data !== 'string') {
      this._streaming?._onAudio(ev.data);
      return;
    }
    let msg;
    try {
      msg = JSON.parse(ev.data);
    } catch {
      return; // the server only sends JSON text frames; ignore anything else
    }
    this.dispatchEvent(new CustomEvent('message', { detail: msg }));
    const u = msg.context != null ? this._contexts.get(msg.context) : undefined;
    switch (msg.type) {
      case 'ready':
        this.ready = msg;
        break;
      case 'queued':
        u?._onQueued(msg);
        break;
      case 'start':
        this._streaming = u ?? null;
        u?._onStart(msg);
        break;
      case 'segment':
        u?._onSegment(msg);
        break;
      case 'words':
        u?._onWords(msg);
        break;
      case 'flushed':
        u?._onFlushed(msg);
        break;
      case 'done':
        if (u) {
          this._forget(u);
          u._onDone(msg);
        }
        break;
      case 'cancelled':
        if (u) {
          this._forget(u);
          u._onCancelled(msg);
        }
        this._dropped.delete(msg.context);
        break;
      case 'error': {
        const err = new VoxError(msg.code ?? 'error', msg.message ?? msg.code ?? 'error', msg);
        if (CLOSING_CODES.has(msg.code) || msg.code === 'engine_error' || msg.code === 'shutting_down') {
          this._lastSocketError = err;
        }
        if (u) {
          this._forget(u);
          if (u instanceof TextContext && u._opened && MESSAGE_CODES.has(msg.code) && this.connected) {
            this._dropped.add(u.context);
            this.ws.send(JSON.stringify({ type: 'cancel', context: u.context }));
          }
          u._fail(err);
        } else if (this._dropped.has(msg.context) && msg.code === 'unknown_context') {
          this._dropped.delete(msg.context); // the cancel above found nothing left to cancel: fine
        } else {
          this.dispatchEvent(new CustomEvent('error', { detail: err }));
        }
        break;
      }
      case 'going_away':
        this.goingAway = msg;
        this.dispatchEvent(new CustomEvent('going_away', { detail: msg }));
        break;
      case 'pong':
        this._pings.shift()?.resolve();
        break;
      default:
        break;
    }
  }

  _lostError(ev) {
    const last = this._lastSocketError;
    if (last && last.code !== 'shutting_down') {
      return new VoxConnectionError(last.code, last.message, { closeCode: ev.code });
    }
    const why = this.goingAway ? 'the server is shutting down' : ev.reason || 'the connection dropped';
    return new VoxConnectionError('connection_lost', `connection lost (close code ${ev.code}): ${why}`, {
      closeCode: ev.code,
    });
  }

  _onClose(ev) {
    const wasClosed = this.closed;
    this.closed = true;
    const err = this._lostError(ev);
    this._failAll(err);
    if (this.ready && !wasClosed) {
      this.dispatchEvent(new CustomEvent('close', { detail: { code: ev.code, reason: ev.reason, error: err } }));
    }
  }

  _failAll(err) {
    for (const u of [...this._contexts.values()]) u._fail(err);
    this._contexts.clear();
    this._streaming = null;
    for (const p of this._pings.splice(0)) p.reject(err);
  }
}

/** Why a handshake failed. A browser only sees close code 1006, so ask the same URL over plain HTTP:
 * the server answers 401/403/503 the same way it refused the upgrade. */
async function diagnoseHandshake(wsTarget, token, closeCode) {
  const http = new URL(wsTarget);
  http.protocol = http.protocol === 'wss:' ? 'https:' : 'http:';
  http.searchParams.delete('token');
  const extra = { closeCode };
  const headers = token ? { Authorization: `Bearer ${token}` } : {};
  let status = null;
  const signal = globalThis.AbortSignal?.timeout?.(5000);
  try {
    status = (await fetch(http, { headers, cache: 'no-store', signal })).status;
  } catch {
    // Cross-origin without CORS, or nothing listening: an opaque probe tells those two apart.
    try {
      await fetch(new URL('/healthz', http), { mode: 'no-cors', cache: 'no-store', signal });
      return new VoxConnectionError(
        'refused',
        `${http.host} refused the WebSocket handshake: check the token, the allowed origins and the server's connection limit`,
        extra,
      );
    } catch {
      return new VoxConnectionError('unreachable', `cannot reach ${http.host}: is voxws running?`, extra);
    }
  }
  if (status === 401) {
    const msg = token
      ? 'authentication failed: the server refused the token (HTTP 401); check the token'
      : 'authentication required: this server needs a token (HTTP 401)';
    return new VoxConnectionError('unauthorized', msg, extra);
  }
  if (status === 403) {
    return new VoxConnectionError(
      'forbidden',
      `the server refused this page's origin ${globalThis.location?.origin ?? ''} (HTTP 403): add it to VOXWS_ALLOWED_ORIGINS`,
      extra,
    );
  }
  if (status === 503 || status === 429) {
    return new VoxConnectionError(
      'unavailable',
      `the server is not taking connections now (HTTP ${status}): it is starting, draining or full`,
      extra,
    );
  }
  return new VoxConnectionError('refused', `the WebSocket handshake failed (HTTP ${status} over plain HTTP)`, extra);
}

// ---------------------------------------------------------------------------------------------
// Playback

// The AudioWorklet processor: a queue of streams played back to back, each with a small jitter
// buffer at its start and after an underrun. Inlined (Blob URL) so that voxws.js is one file.
export const WORKLET_SOURCE = `
class VoxPlayerProcessor extends AudioWorkletProcessor {
  constructor(options) {
    super();
    this.jitter = options.processorOptions.jitterSamples;
    this.streams = [];
    this.tick = 0;
    this.port.onmessage = (e) => this.onMessage(e.data);
  }
  find(id) { return this.streams.find((s) => s.id === id); }
  onMessage(m) {
    if (m.type === 'begin') {
      this.streams.push({ id: m.id, chunks: [], offset: 0, buffered: 0, inputEnded: false, playing: false,
        started: false, played: 0, underruns: 0, underrunSamples: 0 });
    } else if (m.type === 'data') {
      const s = this.find(m.id);
      if (s && m.samples.length) { s.chunks.push(m.samples); s.buffered += m.samples.length; }
    } else if (m.type === 'end') {
      const s = this.find(m.id);
      if (s) s.inputEnded = true;
    } else if (m.type === 'stop') {
      const keep = [];
      for (const s of this.streams) {
        if (m.id === undefined || s.id === m.id) this.report('ended', s, true);
        else keep.push(s);
      }
      this.streams = keep;
    } else if (m.type === 'jitter') {
      this.jitter = m.jitterSamples;
    }
  }
  report(type, s, stopped = false) {
    this.port.postMessage({ type, id: s.id, played: s.played, underruns: s.underruns,
      underrunSamples: s.underrunSamples, buffered: s.buffered, stopped, frame: currentFrame });
  }
  process(inputs, outputs) {
    const out = outputs[0][0];
    const n = out.length;
    let i = 0;
    while (i < n && this.streams.length) {
      const s = this.streams[0];
      if (!s.playing) {
        if (s.buffered >= this.jitter || (s.inputEnded && s.buffered > 0)) {
          s.playing = true;
          if (!s.started) {
            s.started = true;
            this.port.postMessage({ type: 'started', id: s.id, frame: currentFrame + i });
          }
        } else if (s.inputEnded) {
          this.streams.shift();
          this.report('ended', s);
          continue;
        } else {
          if (s.started) s.underrunSamples += n - i; // silence inside a stream is an underrun
          break;
        }
      }
      while (i < n && s.buffered > 0) {
        const c = s.chunks[0];
        const k = Math.min(n - i, c.length - s.offset);
        out.set(c.subarray(s.offset, s.offset + k), i);
        i += k; s.offset += k; s.buffered -= k; s.played += k;
        if (s.offset === c.length) { s.chunks.shift(); s.offset = 0; }
      }
      if (s.buffered === 0) {
        if (s.inputEnded) { this.streams.shift(); this.report('ended', s); }
        else if (i < n) { s.playing = false; s.underruns += 1; s.underrunSamples += n - i; break; }
        else { s.playing = false; s.underruns += 1; }
      }
    }
    out.fill(0, i);
    this.tick += n;
    if (this.tick >= sampleRate / 20 && this.streams.length) { this.tick = 0; this.report('progress', this.streams[0]); }
    return true;
  }
}
registerProcessor('voxws-player', VoxPlayerProcessor);
`;

/** Gapless playback of utterances through an AudioWorklet, one AudioContext at the stream's rate.
 * Events: start ({id, firstAudibleMs}), progress, ended (PlaybackStats). */
export class VoxPlayer extends EventTarget {
  constructor({ jitterMs = 60, workletUrl = null } = {}) {
    super();
    this.jitterMs = jitterMs;
    this.workletUrl = workletUrl;
    this.context = null; // AudioContext
    this.node = null; // AudioWorkletNode
    this.analyser = null; // AnalyserNode after the player: draw waveforms or levels from it
    this.stats = null; // PlaybackStats of the last finished utterance
    this._ready = null;
    this._plays = new Map();
    this._endedAt = new WeakMap(); // utterance -> ms played, once its playback ended
    this._seq = 0;
  }

  /** Create or resume the AudioContext. Call it from a user gesture (click) so that the browser lets the
   * audio start; play() calls it too. Changing the rate replaces the context (and stops what plays). */
  resume(sampleRate) {
    const ctx = this._prepare(sampleRate);
    return this._ready.then(() => ctx.resume());
  }

  // The context at this rate with its worklet loading; resumed, but not waiting for the browser to allow it.
  _prepare(sampleRate) {
    const rate = sampleRate ? Number(sampleRate) : undefined;
    if (this.context && rate && this.context.sampleRate !== rate) this._teardown();
    if (!this.context) {
      const ctx = new AudioContext(rate ? { sampleRate: rate, latencyHint: 'interactive' } : {});
      this.context = ctx;
      ctx.resume().catch(() => {}); // inside the gesture; awaited below
      this._ready = this._build(ctx);
    } else if (this.context.state === 'suspended') {
      this.context.resume().catch(() => {});
    }
    return this.context;
  }

  async _build(ctx) {
    let url = this.workletUrl;
    let blobUrl = null;
    if (!url) {
      blobUrl = URL.createObjectURL(new Blob([WORKLET_SOURCE], { type: 'application/javascript' }));
      url = blobUrl;
    }
    try {
      await ctx.audioWorklet.addModule(url);
    } finally {
      if (blobUrl) URL.revokeObjectURL(blobUrl);
    }
    if (this.context !== ctx) return;
    const node = new AudioWorkletNode(ctx, 'voxws-player', {
      numberOfInputs: 0,
      outputChannelCount: [1],
      processorOptions: { jitterSamples: Math.round((this.jitterMs / 1000) * ctx.sampleRate) },
    });
    const analyser = ctx.createAnalyser();
    analyser.fftSize = 2048;
    node.connect(analyser);
    analyser.connect(ctx.destination);
    node.port.onmessage = (e) => this._onWorklet(e.data);
    this.node = node;
    this.analyser = analyser;
  }

  _teardown() {
    this._stopAll();
    this.context?.close().catch(() => {});
    this.context = null;
    this.node = null;
    this.analyser = null;
    this._ready = null;
  }

  /** Whether this browser can play a format: the PCM family and wav always, opus with WebCodecs. */
  static canPlay(format) {
    if (format === 'opus') return typeof globalThis.AudioDecoder === 'function';
    return format !== 'mp3' && FORMATS.includes(format);
  }

  /** Play an utterance as its chunks arrive; resolves with its PlaybackStats when the last sample was
   * played (or playback was stopped). Utterances played in a row follow each other without a gap.
   * Never rejects and never stays pending on a failure: the stats carry the error. */
  play(utterance) {
    const id = ++this._seq;
    return new Promise((resolve) => {
      const entry = { id, utterance, resolve, ctx: null, rate: 0, firstAudibleMs: null, played: 0, buffered: 0, at: 0 };
      this._run(entry).catch((e) => {
        entry.error ??= e;
        if (this.node && this.context === entry.ctx) this.node.port.postMessage({ type: 'stop', id });
        this._finish(entry, { played: entry.played, underruns: 0, underrunSamples: 0, stopped: true });
      });
    });
  }

  async _run(entry) {
    const { id, utterance } = entry;
    // Audio queues in the worklet even while the browser holds the context suspended (no gesture yet):
    // it starts on the next resume() instead of play() hanging.
    const ctx = this._prepare(utterance.sampleRate); // may replace the context: registered after
    Object.assign(entry, { ctx, rate: ctx.sampleRate });
    this._plays.set(id, entry);
    try {
      await this._ready;
    } catch (e) {
      entry.error = e;
    }
    if (!this._plays.has(id) || this.context !== ctx || !this.node) {
      this._finish(entry, { played: 0, underruns: 0, underrunSamples: 0, stopped: true });
      return;
    }
    const port = this.node.port;
    port.postMessage({ type: 'begin', id });
    const resamplers = new Map(); // source rate -> Resampler: its state carries across chunks
    const send = (samples, rate) => {
      if (!this._plays.has(id) || !samples.length) return; // playback stopped: drain without cancelling synthesis
      if (rate && rate !== ctx.sampleRate) {
        if (!resamplers.has(rate)) resamplers.set(rate, new Resampler(rate, ctx.sampleRate));
        samples = resamplers.get(rate).push(samples);
      }
      port.postMessage({ type: 'data', id, samples }, [samples.buffer]);
    };
    let opus = null;
    try {
      for await (const chunk of utterance) {
        if (!this._plays.has(id)) continue;
        if (utterance.format === 'opus') {
          opus ??= new OggOpusDecoder((samples, rate) => send(samples, rate));
          opus.push(chunk);
        } else if (isEncoded(utterance.format)) {
          throw new VoxError('unsupported_format', `VoxPlayer cannot play ${utterance.format}: ask for pcm_s16le or opus`);
        } else {
          send(toFloat32(chunk), utterance.sampleRate);
        }
      }
      await opus?.flush();
      for (const r of resamplers.values()) {
        const tail = r.flush();
        if (tail.length) port.postMessage({ type: 'data', id, samples: tail }, [tail.buffer]);
      }
    } catch (e) {
      entry.error = e; // play what arrived; the stats carry the error
    } finally {
      opus?.close();
    }
    if (utterance.state === 'cancelled' || utterance.state === 'cancelling') this.stop(utterance);
    else port.postMessage({ type: 'end', id });
  }

  /** How far playback of an utterance has got, in ms of its audio (what the listener hears now);
   * 0 before it starts, its full length after it ended. */
  currentTimeMs(utterance) {
    const entry = [...this._plays.values()].find((e) => e.utterance === utterance);
    if (!entry) return this._endedAt.get(utterance) ?? 0;
    if (!entry.rate || !entry.at) return 0;
    // Extrapolate from the worklet's last report (every 50 ms), but never past what it holds, nor by more than
    // 100 ms: if the audio thread stalls, the playhead waits instead of running ahead and back.
    const elapsed = Math.min((performance.now() - entry.at) / 1000, 0.1);
    const ahead = Math.min(entry.buffered, elapsed * entry.rate);
    const latency = (this.context?.outputLatency || this.context?.baseLatency || 0) * entry.rate;
    return (Math.max(0, entry.played + Math.max(0, ahead) - latency) / entry.rate) * 1000;
  }

  /** Stop playback now: everything, or one utterance. Does not cancel synthesis (use utterance.cancel()). */
  stop(utterance) {
    if (!this.node) return this._stopAll();
    for (const entry of this._plays.values()) {
      if (!utterance || entry.utterance === utterance) this.node.port.postMessage({ type: 'stop', id: entry.id });
    }
  }

  _stopAll() {
    for (const entry of [...this._plays.values()]) {
      this._finish(entry, { played: 0, underruns: 0, underrunSamples: 0, stopped: true });
    }
  }

  _onWorklet(m) {
    const entry = this._plays.get(m.id);
    if (!entry) return;
    if (m.played !== undefined) Object.assign(entry, { played: m.played, buffered: m.buffered, at: performance.now() });
    if (m.type === 'started') {
      entry.at = performance.now();
      entry.firstAudibleMs = this._audibleAt(m.frame) - entry.utterance.sentAt;
      this.dispatchEvent(new CustomEvent('start', { detail: { id: m.id, firstAudibleMs: entry.firstAudibleMs } }));
    } else if (m.type === 'progress') {
      this.dispatchEvent(new CustomEvent('progress', { detail: this._stats(entry, m) }));
    } else if (m.type === 'ended') {
      this._finish(entry, m);
    }
  }

  // performance.now() at which the sample of a given context frame reaches the speakers.
  _audibleAt(frame) {
    const ctx = this.context;
    const t = performance.now();
    if (!ctx) return t;
    const ts = ctx.getOutputTimestamp?.();
    if (ts && ts.performanceTime > 0 && ts.contextTime > 0) {
      const at = ts.performanceTime + (frame / ctx.sampleRate - ts.contextTime) * 1000;
      if (at > t - 1000 && at < t + 5000) return at;
    }
    return t + (ctx.outputLatency || ctx.baseLatency || 0) * 1000;
  }

  _stats(entry, m) {
    const rate = entry.rate || 1;
    return {
      id: entry.id,
      context: entry.utterance.context,
      sampleRate: rate,
      firstAudibleMs: entry.firstAudibleMs,
      samplesPlayed: m.played,
      playedMs: (m.played / rate) * 1000,
      underruns: m.underruns,
      underrunMs: (m.underrunSamples / rate) * 1000,
      buffered: m.buffered ?? 0,
      stopped: !!m.stopped,
      error: entry.error ?? null,
    };
  }

  _finish(entry, m) {
    if (entry.settled) return;
    entry.settled = true;
    this._plays.delete(entry.id);
    const stats = this._stats(entry, m);
    this.stats = stats;
    this._endedAt.set(entry.utterance, stats.playedMs);
    this.dispatchEvent(new CustomEvent('ended', { detail: stats }));
    entry.resolve(stats);
  }
}

/** Streaming linear-interpolation resampler, used where a stream's rate differs from the AudioContext's.
 * It keeps its position and the last sample between chunks, so chunk seams neither click nor drift:
 * n input samples in any chunking give the same output as one call with all of them. */
export class Resampler {
  constructor(from, to) {
    this.step = from / to;
    this.pos = 0; // where the next output sample lies, in input samples from the next chunk's start (>= -1)
    this.prev = 0; // the previous chunk's last sample (index -1)
  }

  push(x) {
    const len = x.length;
    if (!len) return new Float32Array(0);
    const n = this.pos > len - 1 ? 0 : Math.floor((len - 1 - this.pos) / this.step) + 1;
    const out = new Float32Array(n);
    for (let i = 0; i < n; i++) {
      const p = this.pos + i * this.step;
      const j = Math.floor(p);
      const f = p - j;
      const a = j < 0 ? this.prev : x[j];
      const b = j + 1 < len ? x[j + 1] : x[len - 1];
      out[i] = a + (b - a) * f;
    }
    this.pos = this.pos + n * this.step - len;
    this.prev = x[len - 1];
    return out;
  }

  /** The end of the stream: the samples due before the last input sample's period ends (held at its value). */
  flush() {
    const n = Math.max(0, Math.ceil(-this.pos / this.step));
    this.pos += n * this.step;
    return new Float32Array(n).fill(this.prev);
  }
}

// ---------------------------------------------------------------------------------------------
// Ogg Opus

/** Splits an Ogg stream into packets as its bytes arrive (pages may be cut anywhere; packets may span pages). */
export class OggDemuxer {
  constructor() {
    this._buf = new Uint8Array(0);
    this._partial = []; // segments of a packet continued on the next page
  }

  /** Feed bytes; returns the packets completed by them (Uint8Array each). */
  push(bytes) {
    const buf = new Uint8Array(this._buf.length + bytes.length);
    buf.set(this._buf);
    buf.set(bytes, this._buf.length);
    const packets = [];
    let o = 0;
    while (buf.length - o >= 27) {
      if (buf[o] !== 0x4f || buf[o + 1] !== 0x67 || buf[o + 2] !== 0x67 || buf[o + 3] !== 0x53) {
        throw new VoxError('bad_audio', 'not an Ogg stream (no OggS page header)');
      }
      const nseg = buf[o + 26];
      if (buf.length - o < 27 + nseg) break;
      const lacing = buf.subarray(o + 27, o + 27 + nseg);
      const size = lacing.reduce((a, v) => a + v, 0);
      if (buf.length - o < 27 + nseg + size) break;
      let d = o + 27 + nseg;
      for (const v of lacing) {
        this._partial.push(buf.subarray(d, d + v));
        d += v;
        if (v < 255) packets.push(concat(this._partial.splice(0)));
      }
      o = d;
    }
    this._buf = buf.slice(o);
    return packets;
  }
}

function concat(parts) {
  const out = new Uint8Array(parts.reduce((a, p) => a + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

/** Samples (48 kHz units) in one Opus packet, from its TOC byte (RFC 6716, 3.1). */
export function opusPacketSamples(packet) {
  if (!packet.length) return 0;
  const config = packet[0] >> 3;
  const size = config < 12 ? [480, 960, 1920, 2880][config & 3] : config < 16 ? [480, 960][config & 1] : [120, 240, 480, 960][config & 3];
  const code = packet[0] & 3;
  const frames = code === 0 ? 1 : code === 3 ? (packet[1] ?? 0) & 0x3f : 2;
  return size * frames;
}

/** Decodes an Ogg Opus stream with WebCodecs as its bytes arrive: `onSamples(Float32Array, rate)` gets mono
 * audio in order. The header's pre-skip is dropped (the end is not trimmed to the last granule: at most one
 * 20 ms frame of encoder padding may follow the speech). */
export class OggOpusDecoder {
  constructor(onSamples) {
    if (typeof globalThis.AudioDecoder !== 'function') {
      throw new VoxError('unsupported_format', 'this browser has no WebCodecs AudioDecoder for Opus');
    }
    this.onSamples = onSamples;
    this.demuxer = new OggDemuxer();
    this.head = null; // {channels, preSkip, inputRate}
    this.packets = 0;
    this.error = null;
    this._t = 0; // microseconds at 48 kHz
    this._skip = 0;
    this.decoder = new AudioDecoder({
      output: (data) => this._output(data),
      error: (e) => {
        this.error = e;
      },
    });
  }

  push(bytes) {
    if (this.error) throw this.error;
    for (const packet of this.demuxer.push(bytes)) {
      this.packets += 1;
      if (this.packets === 1) {
        const tag = String.fromCharCode(...packet.subarray(0, 8));
        if (tag !== 'OpusHead') throw new VoxError('bad_audio', 'an Ogg stream that is not Opus');
        const v = new DataView(packet.buffer, packet.byteOffset, packet.byteLength);
        this.head = { channels: packet[9], preSkip: v.getUint16(10, true), inputRate: v.getUint32(12, true) };
        this._skip = this.head.preSkip;
        this.decoder.configure({ codec: 'opus', sampleRate: 48000, numberOfChannels: this.head.channels, description: packet });
        continue;
      }
      if (this.packets === 2) continue; // OpusTags
      const duration = (opusPacketSamples(packet) / 48000) * 1e6;
      this.decoder.decode(new EncodedAudioChunk({ type: 'key', timestamp: this._t, duration, data: packet }));
      this._t += duration;
    }
  }

  _output(data) {
    try {
      const n = data.numberOfFrames;
      const mono = new Float32Array(n);
      data.copyTo(mono, { planeIndex: 0, format: 'f32-planar' });
      // Pre-skip is counted at 48 kHz; scale it when the decoder gives another rate.
      const skip = Math.min(n, Math.round((this._skip * data.sampleRate) / 48000));
      this._skip -= Math.round((skip * 48000) / data.sampleRate);
      if (skip < n) this.onSamples(skip ? mono.subarray(skip).slice() : mono, data.sampleRate);
    } finally {
      data.close();
    }
  }

  /** Wait for every packet pushed so far to be decoded. */
  async flush() {
    if (this.decoder.state === 'configured') await this.decoder.flush();
    if (this.error) throw this.error;
  }

  close() {
    if (this.decoder.state !== 'closed') this.decoder.close();
  }
}

export default VoxWS;
