// Types for voxws.js, the browser client of the voxws.v1 text-to-speech protocol.

export declare const PROTOCOL: 'voxws.v1';
export declare const VERSION: string;

export type Format = 'pcm_s16le' | 'pcm_f32le' | 'pcm_mulaw' | 'wav' | 'mp3' | 'opus';
/** pcm_s16le, pcm_mulaw and wav (header removed) arrive as Int16Array, pcm_f32le as Float32Array,
 * mp3 and opus as the encoded bytes (Uint8Array; VoxPlayer decodes opus). */
export type Chunk = Int16Array | Float32Array | Uint8Array;

/** Server error code -> the WebSocket close code that follows it (null: the socket stays open). */
export declare const ERROR_CODES: Readonly<Record<string, number | null>>;
/** Every audio format of the protocol; a server offers a subset in `ready.formats`. */
export declare const FORMATS: readonly Format[];
export declare const SAMPLE_RATES: readonly number[];
export declare const OPUS_RATES: readonly number[];

/** Server error codes (PROTOCOL.md) and the client's own connection codes. */
export type ErrorCode =
  | 'bad_message' | 'empty_text' | 'text_too_long' | 'unsupported_format' | 'unknown_voice'
  | 'context_exists' | 'unknown_context' | 'too_many_contexts' | 'busy' | 'rate_limited'
  | 'slow_consumer' | 'engine_error' | 'unauthorized' | 'message_too_big' | 'idle_timeout'
  | 'shutting_down' | 'bad_option'
  // client side
  | 'forbidden' | 'unavailable' | 'refused' | 'unreachable' | 'timeout' | 'connection_lost'
  | 'not_connected' | 'closed' | 'context_closed' | 'cancelled' | 'bad_audio';

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
  /** The voice used when a context names none; null: the model's own. */
  default_voice: string | null;
  limits: { max_text_chars: number; max_contexts: number; max_message_bytes: number; idle_timeout_s: number };
}

export interface SpeakOptions {
  format?: Format;
  /** Output rate; default: the model's native rate (`client.ready.sample_rate`). */
  sampleRate?: number;
  /** A registered voice id (GET /v1/voices); default: the server's default voice. */
  voice?: string | null;
  /** mp3 and opus only, bits per second. */
  bitrate?: number;
  /** Expand numbers, dates, money… into words before the model reads them (default true). */
  normalize?: boolean;
  language?: 'auto' | 'zh' | 'en';
  /** 'word': the server sends word timestamps (`utterance.words`, event `words`). */
  timestamps?: 'none' | 'word';
  /** Called with each `segment` message as it arrives. */
  onSegment?: (segment: SegmentMessage, u: Utterance) => void;
  /** Called with the words of each `words` message as it arrives. */
  onWords?: (words: Word[], u: Utterance) => void;
  cfgValue?: number;
  temperature?: number;
  seed?: number;
  /** Your own context id (1-64 of [A-Za-z0-9_.:-]); default: generated. */
  context?: string;
}

/** Offsets are Unicode code points into `utterance.source` (see `sourceSlice`). */
export interface SegmentMessage {
  type: 'segment';
  context: string;
  index: number;
  /** Exactly source[source_start:source_end]. */
  text: string;
  /** What the model was given (after normalization). */
  spoken: string;
  source_start: number;
  source_end: number;
  /** The context's audio before this segment's first frame: exact. */
  audio_start_ms: number;
}

export interface Word {
  word: string;
  /** ms from the start of the utterance's audio. */
  startMs: number;
  endMs: number;
  sourceStart: number;
  sourceEnd: number;
  /** True when the times inside the segment are estimated (segment boundaries are exact). */
  estimated: boolean;
}

export interface WordsMessage {
  type: 'words';
  context: string;
  words: string[];
  start_ms: number[];
  end_ms: number[];
  source_start: number[];
  source_end: number[];
  estimated: boolean;
  /** The same, one object per word (added by voxws.js). */
  list: Word[];
}

export interface FlushedMessage {
  type: 'flushed';
  context: string;
  flush_id: string | number | null;
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
  /** done: the voice id used, or null (the model's own). */
  voice?: string | null;
  /** cancelled: where in the source text the audio sent stops (code points). */
  source_end?: number;
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
  readonly format: Format;
  readonly sampleRate: number | null;
  /** performance.now() when the request was sent. */
  readonly sentAt: number;
  readonly firstAudioAt: number | null;
  readonly ttfbMs: number | null;
  readonly chunks: number;
  /** Samples received (PCM formats and wav). */
  readonly samples: number;
  /** Bytes received: the bandwidth the format costs. */
  readonly bytes: number;
  readonly audioMs: number;
  /** The text the offsets point into: the speak text, or everything written so far. */
  readonly source: string;
  /** `segment` messages so far, in order. */
  readonly segments: SegmentMessage[];
  /** Words so far, in order (with `timestamps: 'word'`). */
  readonly words: Word[];
  /** After `done`: the voice used (null: the model's own). */
  readonly voice: string | null | undefined;
  /** After `cancelled`: the source offset up to which the audio sent speaks. */
  readonly sourceEnd: number | null;
  /** The word being heard `ms` into the audio (pass `player.currentTimeMs(u)`), or null. */
  wordAt(ms: number): Word | null;
  segmentAt(ms: number): SegmentMessage | null;
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
  addEventListener(type: 'segment', l: (e: CustomEvent<SegmentMessage>) => void): void;
  addEventListener(type: 'words', l: (e: CustomEvent<WordsMessage>) => void): void;
  addEventListener(type: 'flushed', l: (e: CustomEvent<FlushedMessage>) => void): void;
  addEventListener(type: 'done' | 'cancelled', l: (e: CustomEvent<Summary>) => void): void;
  addEventListener(type: 'error', l: (e: CustomEvent<VoxError>) => void): void;
  addEventListener(type: string, l: EventListenerOrEventListenerObject | null, o?: boolean | AddEventListenerOptions): void;
}

/** Incremental input: write text as it comes (e.g. LLM tokens), the server speaks at sentence ends. */
export declare class TextContext extends Utterance {
  readonly charsWritten: number;
  write(text: string): void;
  /** Speak what is buffered now; the context stays open. Resolves with `flushed` once all audio of the text
   * written before it was sent (rejects if the context is cancelled or fails first). */
  flush(flushId?: string | number): Promise<FlushedMessage>;
  /** No more text; `done` follows the last audio. */
  end(): void;
}

export declare class VoxWS extends EventTarget {
  /** Open a socket to `ws(s)://host/v1/tts` (http URLs, bare origins and relative paths work too) and wait
   * for `ready`. Rejects with VoxConnectionError: `unauthorized` for a wrong or missing token. */
  static connect(url?: string | URL, options?: ConnectOptions): Promise<VoxWS>;
  readonly url: URL;
  readonly ready: ReadyMessage;
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
  /** Whether this browser can play a format (opus: with WebCodecs' AudioDecoder; never mp3). */
  static canPlay(format: Format): boolean;
  /** Play as chunks arrive; resolves when the last sample was played or playback stopped. Never rejects
   * and never stays pending on a failure: `stats.error` says what went wrong. */
  play(utterance: Utterance): Promise<PlaybackStats>;
  /** How far playback of an utterance has got, in ms of its audio (what is heard now). */
  currentTimeMs(utterance: Utterance): number;
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

/** String indices of each code point: `utf16Offsets(text)[cp]` (protocol offsets count code points). */
export declare function utf16Offsets(text: string): number[];
/** `text[start:end]` in code points, as the server's offsets mean it. */
export declare function sourceSlice(text: string, start: number, end: number): string;
export declare function isEncoded(format: Format): boolean;

/** Streaming linear resampler that keeps its state across chunks (no clicks at seams, no drift). */
export declare class Resampler {
  constructor(from: number, to: number);
  push(samples: Float32Array): Float32Array;
  /** The last few samples at the end of the stream. */
  flush(): Float32Array;
}

/** Splits an Ogg stream into packets as bytes arrive. */
export declare class OggDemuxer {
  push(bytes: Uint8Array): Uint8Array[];
}

/** Ogg Opus through WebCodecs' AudioDecoder; pre-skip removed. */
export declare class OggOpusDecoder {
  constructor(onSamples: (samples: Float32Array, sampleRate: number) => void);
  readonly head: { channels: number; preSkip: number; inputRate: number } | null;
  push(bytes: Uint8Array): void;
  flush(): Promise<void>;
  close(): void;
}
export declare function opusPacketSamples(packet: Uint8Array): number;
