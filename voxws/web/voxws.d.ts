// Types for voxws.js, the browser client of the voxws.v1 text-to-speech protocol.

export declare const PROTOCOL: 'voxws.v1';
export declare const VERSION: string;

/** What the server offers (`ready.formats`). voxws.js plays all but mp3: wav as 16-bit PCM, opus through
 * WebCodecs (asked for as pcm_s16le where the browser cannot decode Opus). */
export type Format = 'pcm_s16le' | 'pcm_f32le' | 'pcm_mulaw' | 'wav' | 'mp3' | 'opus';
/** pcm_s16le, wav and pcm_mulaw arrive as Int16Array, pcm_f32le and opus as Float32Array. */
export type Chunk = Int16Array | Float32Array;

/** Server error codes (PROTOCOL.md) and the client's own connection codes. */
export type ErrorCode =
  | 'bad_message' | 'empty_text' | 'text_too_long' | 'unsupported_format' | 'unknown_voice'
  | 'context_exists' | 'unknown_context' | 'too_many_contexts' | 'busy' | 'rate_limited'
  | 'slow_consumer' | 'engine_error' | 'unauthorized' | 'message_too_big' | 'idle_timeout'
  | 'shutting_down'
  // client side
  | 'forbidden' | 'unavailable' | 'refused' | 'unreachable' | 'timeout' | 'connection_lost'
  | 'not_connected' | 'closed' | 'context_closed' | 'bad_audio' | 'bad_option';

export declare class VoxError extends Error {
  readonly code: ErrorCode | string;
  /** The context the error is about, or null. */
  readonly context: string | null;
  /** With `busy`: when to try again. */
  readonly retryAfterMs: number | null;
  /** WebSocket close code, for connection errors. */
  readonly closeCode: number | null;
}

/** The socket could not be opened (unauthorized, forbidden, unavailable, refused, unreachable, timeout)
 * or was lost (connection_lost, or the server's closing code such as slow_consumer). */
export declare class VoxConnectionError extends VoxError {}

export interface ReadyMessage {
  type: 'ready';
  protocol: 'voxws.v1';
  server: string;
  group: string;
  engine: string;
  model: string;
  sample_rate: number;
  formats: Format[];
  sample_rates: number[];
  limits: { max_text_chars: number; max_contexts: number; max_message_bytes: number; idle_timeout_s: number };
}

export interface SpeakOptions {
  format?: Format;
  /** Output rate; default: the model's native rate (`client.ready.sample_rate`); opus: 8000, 12000,
   * 16000, 24000 or 48000. */
  sampleRate?: number;
  /** Bits per second, for opus and mp3; default: the server's choice for speech. */
  bitrate?: number;
  voice?: string;
  cfgValue?: number;
  temperature?: number;
  seed?: number;
  /** Your own context id (1-64 of [A-Za-z0-9_.:-]); default: generated. */
  context?: string;
}

export interface Summary {
  context: string;
  /** Audio the server sent, in ms. */
  audio_ms: number;
  cancelled: boolean;
  /** Server-measured time to first byte (absent when cancelled). */
  ttfb_ms?: number | null;
  chunks?: number;
  text_chars?: number;
  segments?: number;
  /** Client-measured time from send to the first audio frame. */
  client_ttfb_ms: number | null;
}

export interface ConnectOptions {
  /** Sent as the `bearer.<token>` subprotocol (or `?token=` if it has characters a subprotocol cannot hold). */
  token?: string | null;
  /** How long to wait for the server's `ready` (default 10000). */
  timeoutMs?: number;
}

export type UtteranceState = 'pending' | 'queued' | 'streaming' | 'cancelling' | 'done' | 'cancelled' | 'error';

/** One context. Iterate it for chunks (once); leaving the loop early cancels it. */
export declare class Utterance extends EventTarget implements AsyncIterable<Chunk> {
  readonly client: VoxWS;
  readonly context: string;
  readonly state: UtteranceState;
  /** The format on the wire: `requestedFormat`, or pcm_s16le where opus cannot be decoded here. */
  readonly format: Format;
  readonly requestedFormat: Format;
  readonly sampleRate: number | null;
  /** performance.now() when the request was sent. */
  readonly sentAt: number;
  readonly firstAudioAt: number | null;
  readonly ttfbMs: number | null;
  readonly chunks: number;
  readonly samples: number;
  /** Bytes received (compressed for opus): `bytes * 8 / (audioMs / 1000)` is the bitrate. */
  readonly bytes: number;
  readonly audioMs: number;
  readonly finished: boolean;
  readonly summary: Summary | null;
  readonly error: VoxError | null;
  /** Resolves with the summary when done or cancelled; rejects with a VoxError. */
  readonly done: Promise<Summary>;
  cancel(): void;
  [Symbol.asyncIterator](): AsyncIterator<Chunk>;
  addEventListener(type: 'queued', l: (e: CustomEvent<{ position: number }>) => void): void;
  addEventListener(type: 'start', l: (e: CustomEvent<{ format: Format; sample_rate: number }>) => void): void;
  addEventListener(type: 'chunk', l: (e: CustomEvent<Chunk>) => void): void;
  addEventListener(type: 'done' | 'cancelled', l: (e: CustomEvent<Summary>) => void): void;
  addEventListener(type: 'error', l: (e: CustomEvent<VoxError>) => void): void;
  addEventListener(type: string, l: EventListenerOrEventListenerObject | null, o?: boolean | AddEventListenerOptions): void;
}

/** Incremental input: write text as it comes (e.g. LLM tokens), the server speaks at sentence ends. */
export declare class TextContext extends Utterance {
  readonly charsWritten: number;
  write(text: string): void;
  /** Speak what is buffered now; the context stays open. */
  flush(): void;
  /** No more text; `done` follows the last audio. */
  end(): void;
}

export declare class VoxWS extends EventTarget {
  /** Open a socket to `ws(s)://host/v1/tts` (http URLs, bare origins and relative paths work too) and wait
   * for `ready`. Rejects with VoxConnectionError: `unauthorized` for a wrong or missing token. */
  static connect(url?: string | URL, options?: ConnectOptions): Promise<VoxWS>;
  readonly url: URL;
  readonly ready: ReadyMessage;
  /** Whether this browser decodes Opus (WebCodecs); without it, `format: 'opus'` asks for pcm_s16le. */
  readonly canDecodeOpus: boolean;
  readonly connected: boolean;
  readonly goingAway: { reason: string; deadline_ms: number } | null;
  speak(text: string, options?: SpeakOptions): Utterance;
  open(options?: SpeakOptions): TextContext;
  cancelAll(): void;
  /** Round-trip time in ms. */
  ping(): Promise<number>;
  close(code?: number, reason?: string): void;
  addEventListener(type: 'close', l: (e: CustomEvent<{ code: number; reason: string; error: VoxError }>) => void): void;
  addEventListener(type: 'going_away', l: (e: CustomEvent<{ reason: string; deadline_ms: number }>) => void): void;
  addEventListener(type: 'error', l: (e: CustomEvent<VoxError>) => void): void;
  addEventListener(type: 'message', l: (e: CustomEvent<Record<string, unknown>>) => void): void;
  addEventListener(type: string, l: EventListenerOrEventListenerObject | null, o?: boolean | AddEventListenerOptions): void;
}
export default VoxWS;

export interface PlaybackStats {
  id: number;
  context: string;
  sampleRate: number;
  /** ms from the request being sent to its first sample reaching the output. */
  firstAudibleMs: number | null;
  samplesPlayed: number;
  playedMs: number;
  /** Times the buffer ran dry mid-stream, and the silence that caused. */
  underruns: number;
  underrunMs: number;
  buffered: number;
  stopped: boolean;
  error: VoxError | null;
}

export interface PlayerOptions {
  /** Audio buffered before playback starts, and again after an underrun (default 60). */
  jitterMs?: number;
  /** URL serving WORKLET_SOURCE, where a Content-Security-Policy forbids the default blob: URL. */
  workletUrl?: string | null;
}

/** Gapless playback through an AudioWorklet. */
export declare class VoxPlayer extends EventTarget {
  constructor(options?: PlayerOptions);
  readonly context: AudioContext | null;
  readonly node: AudioWorkletNode | null;
  /** After the player, before the speakers: draw a waveform or a level from it. */
  readonly analyser: AnalyserNode | null;
  /** Stats of the last finished playback. */
  readonly stats: PlaybackStats | null;
  /** Create/resume the AudioContext (call from a click); a new rate replaces the context. */
  resume(sampleRate?: number): Promise<void>;
  /** Play as chunks arrive; resolves when the last sample was played or playback stopped. */
  play(utterance: Utterance): Promise<PlaybackStats>;
  /** Stop playback (all, or one utterance); does not cancel synthesis. */
  stop(utterance?: Utterance): void;
  addEventListener(type: 'start', l: (e: CustomEvent<{ id: number; firstAudibleMs: number }>) => void): void;
  addEventListener(type: 'progress' | 'ended', l: (e: CustomEvent<PlaybackStats>) => void): void;
  addEventListener(type: string, l: EventListenerOrEventListenerObject | null, o?: boolean | AddEventListenerOptions): void;
}

/** The player's AudioWorklet module source (serve it yourself and pass `workletUrl` under a strict CSP). */
export declare const WORKLET_SOURCE: string;
export declare function decodePcm(buffer: ArrayBuffer, format: Format): Chunk;
export declare function toFloat32(chunk: Chunk): Float32Array;
export declare function endpointUrl(url?: string | URL): URL;
/** Whether WebCodecs' AudioDecoder can decode Opus here (cached). */
export declare function canDecodeOpus(): Promise<boolean>;

export interface OggPacket {
  data: Uint8Array;
  /** Granule position of the page this packet ends on. */
  granule: number;
  eos: boolean;
  bos: boolean;
}

/** Ogg pages (RFC 3533) to packets, from bytes arriving in any pieces. */
export declare class OggReader {
  push(bytes: ArrayBuffer | Uint8Array): OggPacket[];
}

/** An Ogg Opus stream decoded as it arrives (WebCodecs), pre-skip and end trim applied. */
export declare class OggOpusDecoder {
  constructor(options: { onSamples: (samples: Float32Array, sampleRate: number) => void; onError?: (e: unknown) => void });
  readonly bytes: number;
  push(buffer: ArrayBuffer): void;
  /** Resolves when everything pushed so far has been delivered to onSamples. */
  flush(): Promise<void>;
  close(): void;
}
