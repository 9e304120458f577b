/**
 * The frame transport: what a Session sees of the tunnel. The WebSocket implementation owns
 * the `ws` socket, its heartbeat timers and the frame decoder; the session never touches the
 * WebSocket itself, so it can also run over an in-memory pair in tests.
 */
import type WebSocket from 'ws';
import { PosternError } from '../errors.js';
import { type Frame, FrameDecoder } from './codec.js';
import { CloseCode } from './constants.js';

export interface TransportCloseInfo {
  code: number;
  reason: string;
  /** The first error that ended the transport, if it did not end by an orderly close. */
  error: Error | undefined;
}

export interface TransportHandlers {
  frame(frame: Frame): void;
  /** The send buffer fell below its low-water mark after `writable` had been false. */
  drain(): void;
  /** Called exactly once, when the transport has ended for any reason. */
  close(info: TransportCloseInfo): void;
}

export interface SendOptions {
  /**
   * A small frame others wait for (credit): it goes out when the current callback has run, not
   * at the end of the event loop's I/O phase.
   */
  urgent?: boolean;
  /**
   * Called once the transport no longer needs the frame's bytes (written, copied or dropped),
   * so that the caller may reuse the buffer.
   */
  written?: () => void;
}

export interface FrameTransport {
  /** Replaces the handlers (the handshake hands the transport over to the session). */
  setHandlers(handlers: TransportHandlers): void;
  /** Queues one encoded frame; a no-op (but for `written`) once the transport is closing. */
  send(frame: Buffer, options?: SendOptions): void;
  /** False while the bytes queued but not yet written exceed the high-water mark. */
  readonly writable: boolean;
  /** Orderly close with a WebSocket close code; idempotent. `error` is reported as the cause. */
  close(code: number, reason: string, error?: Error): void;
  /** Immediate teardown; idempotent. */
  destroy(error?: Error): void;
  readonly remoteAddress: string;
  /**
   * The shortest ping round trip measured so far, in milliseconds, or undefined before the first
   * pong: the tunnel's round trip with the least queueing in it.
   */
  readonly leastRoundTripMs: number | undefined;
}

export interface WebSocketTransportOptions {
  heartbeatIntervalMs: number;
  heartbeatTimeoutMs: number;
  /** Queued-byte level above which `writable` turns false. */
  highWaterMark?: number;
  remoteAddress: string;
}

const DEFAULT_HIGH_WATER_MARK = 512 * 1024;
/** How long an orderly close may wait for the peer's close frame before the socket is dropped. */
const CLOSE_GRACE_MS = 3_000;
/**
 * Frames smaller than this go out together in one WebSocket message (the frame stream ignores
 * message boundaries), so that the frames produced while the event loop handles one round of
 * I/O events (opens, answers, small DATA and FINs of many connections) cost one TLS record and
 * one write instead of one each: at the end of that round (setImmediate), which cut CPU per new
 * connection by about a tenth in the benchmark. Urgent frames (credit) wait only until the
 * current callback has run (a microtask): credit held until the end of the round, behind the
 * reads of a whole window, cut bulk throughput by a third.
 */
const BATCH_FRAME_LIMIT = 16 * 1024;
/** A batch this large goes out at once. */
const BATCH_FLUSH_BYTES = 64 * 1024;
const NO_OPTIONS: SendOptions = {};
const NONE_WRITTEN: readonly (() => void)[] = [];
/**
 * Gaps between the pings sent besides the heartbeat, the first as the transport starts: a round
 * trip at once, and more in the first seconds, since one measured while either process is busy
 * starting up (a reconnect storm, a TLS handshake, a password check) comes out too long, and the
 * receive windows scale with the shortest (receive-window.ts).
 */
const EARLY_PING_GAPS_MS: readonly number[] = [250, 750, 2_000];
/** ws caps close reasons at 123 bytes. */
const MAX_CLOSE_REASON = 120;

function closeReason(text: string): string {
  const buf = Buffer.from(text, 'utf8');
  return buf.length <= MAX_CLOSE_REASON ? text : buf.subarray(0, MAX_CLOSE_REASON).toString('utf8');
}

export class WebSocketTransport implements FrameTransport {
  readonly remoteAddress: string;
  #ws: WebSocket;
  #handlers: TransportHandlers;
  #decoder = new FrameDecoder();
  #queuedBytes = 0;
  #highWaterMark: number;
  #blocked = false;
  #batch: Buffer[] = [];
  #batchBytes = 0;
  #batchWritten: (() => void)[] = [];
  #flushAtRoundEnd = false;
  #flushAtCallbackEnd = false;
  #ending = false;
  #finished = false;
  #error: Error | undefined;
  #lastHeardAt = performance.now();
  /** When the ping now unanswered was sent. */
  #pingSentAt: number | undefined;
  #leastRoundTripMs: number | undefined;
  #heartbeatTimeoutMs: number;
  #pingTimer: NodeJS.Timeout;
  #earlyPingTimer: NodeJS.Timeout | undefined;
  #livenessTimer: NodeJS.Timeout;
  #closeTimer: NodeJS.Timeout | undefined;

  constructor(ws: WebSocket, options: WebSocketTransportOptions, handlers: TransportHandlers) {
    this.#ws = ws;
    this.#handlers = handlers;
    this.remoteAddress = options.remoteAddress;
    this.#highWaterMark = options.highWaterMark ?? DEFAULT_HIGH_WATER_MARK;
    this.#heartbeatTimeoutMs = options.heartbeatTimeoutMs;
    ws.binaryType = 'nodebuffer';
    ws.on('message', (data, isBinary) => this.#onMessage(data as Buffer, isBinary));
    ws.on('ping', () => this.#heard());
    ws.on('pong', () => this.#onPong());
    ws.on('error', (err) => this.#recordError(err));
    ws.on('close', (code, reason) => this.#finish(code, reason.toString('utf8')));
    this.#pingTimer = setInterval(() => this.#ping(), options.heartbeatIntervalMs);
    this.#livenessTimer = setTimeout(() => this.#checkLiveness(), this.#heartbeatTimeoutMs);
    this.#ping();
    this.#pingEarly(0);
  }

  get leastRoundTripMs(): number | undefined {
    return this.#leastRoundTripMs;
  }

  setHandlers(handlers: TransportHandlers): void {
    this.#handlers = handlers;
  }

  get writable(): boolean {
    return this.#queuedBytes < this.#highWaterMark;
  }

  send(frame: Buffer, options: SendOptions = NO_OPTIONS): void {
    const { written, urgent = false } = options;
    // After a close frame from either side the socket takes no more data messages.
    if (this.#ending || this.#ws.readyState !== this.#ws.OPEN) {
      written?.();
      return;
    }
    this.#queuedBytes += frame.length;
    if (!this.writable) this.#blocked = true;
    if (frame.length >= BATCH_FRAME_LIMIT) {
      this.#flushBatch();
      this.#write(frame, written ? [written] : NONE_WRITTEN);
      return;
    }
    this.#batch.push(frame);
    this.#batchBytes += frame.length;
    if (written) this.#batchWritten.push(written);
    if (this.#batchBytes >= BATCH_FLUSH_BYTES) {
      this.#flushBatch();
    } else if (urgent) {
      if (this.#flushAtCallbackEnd) return;
      this.#flushAtCallbackEnd = true;
      queueMicrotask(() => {
        this.#flushAtCallbackEnd = false;
        this.#flushBatch();
      });
    } else if (!this.#flushAtRoundEnd) {
      this.#flushAtRoundEnd = true;
      setImmediate(() => {
        this.#flushAtRoundEnd = false;
        this.#flushBatch();
      });
    }
  }

  #flushBatch(): void {
    if (this.#batch.length === 0) return;
    const written = this.#batchWritten;
    this.#batchWritten = [];
    if (this.#ws.readyState !== this.#ws.OPEN) {
      this.#queuedBytes -= this.#batchBytes;
      this.#batch = [];
      this.#batchBytes = 0;
      for (const callback of written) callback();
      return;
    }
    const message =
      this.#batch.length === 1 ? this.#batch[0]! : Buffer.concat(this.#batch, this.#batchBytes);
    this.#batch = [];
    this.#batchBytes = 0;
    this.#write(message, written);
  }

  #write(message: Buffer, written: readonly (() => void)[]): void {
    const length = message.length;
    this.#ws.send(message, { binary: true }, (err) => {
      this.#queuedBytes -= length;
      for (const callback of written) callback();
      // A failed write also ends the socket; ws reports that through 'close', where it is handled.
      if (err) this.#recordError(err);
      if (this.#blocked && this.#queuedBytes <= this.#highWaterMark / 2 && !this.#ending) {
        this.#blocked = false;
        this.#handlers.drain();
      }
    });
  }

  close(code: number, reason: string, error?: Error): void {
    if (error) this.#recordError(error);
    if (this.#ending) return;
    // Frames sent before the close (a GOAWAY, a last RESET) go out ahead of the close frame.
    this.#flushBatch();
    this.#ending = true;
    this.#stopTimers();
    this.#ws.close(code, closeReason(reason));
    // A peer that never answers the close frame must not hold the shutdown up.
    this.#closeTimer = setTimeout(() => this.#ws.terminate(), CLOSE_GRACE_MS);
  }

  destroy(error?: Error): void {
    if (error) this.#recordError(error);
    if (this.#finished) return;
    this.#ending = true;
    this.#stopTimers();
    this.#ws.terminate();
  }

  #onMessage(data: Buffer, isBinary: boolean): void {
    this.#heard();
    if (this.#ending) return;
    if (!isBinary) {
      this.#protocolError(new PosternError('POSTERN_ERR_PROTOCOL', 'text message on the tunnel'));
      return;
    }
    let frames: Frame[];
    try {
      frames = this.#decoder.push(data);
    } catch (err) {
      this.#protocolError(err as Error);
      return;
    }
    for (const frame of frames) {
      if (this.#ending) return;
      this.#handlers.frame(frame);
    }
  }

  #protocolError(error: Error): void {
    this.close(CloseCode.PROTOCOL_ERROR, error.message, error);
  }

  #heard(): void {
    this.#lastHeardAt = performance.now();
  }

  #ping(): void {
    if (this.#ws.readyState !== this.#ws.OPEN) return;
    // While a ping is unanswered the next one is timed from the first: a pong cannot be matched
    // to its ping, and the earlier time can only make the round trip look longer, never shorter.
    this.#pingSentAt ??= performance.now();
    this.#ws.ping();
  }

  #pingEarly(index: number): void {
    const gap = EARLY_PING_GAPS_MS[index];
    if (gap === undefined) return;
    this.#earlyPingTimer = setTimeout(() => {
      this.#ping();
      this.#pingEarly(index + 1);
    }, gap);
  }

  #onPong(): void {
    this.#heard();
    if (this.#pingSentAt === undefined) return;
    const roundTrip = this.#lastHeardAt - this.#pingSentAt;
    this.#pingSentAt = undefined;
    if (this.#leastRoundTripMs === undefined || roundTrip < this.#leastRoundTripMs) {
      this.#leastRoundTripMs = roundTrip;
    }
  }

  #checkLiveness(): void {
    const silentFor = performance.now() - this.#lastHeardAt;
    if (silentFor >= this.#heartbeatTimeoutMs) {
      this.destroy(
        new PosternError(
          'POSTERN_ERR_HEARTBEAT_TIMEOUT',
          `no frame or pong from the peer for ${Math.round(silentFor)} ms`,
        ),
      );
      return;
    }
    this.#livenessTimer = setTimeout(
      () => this.#checkLiveness(),
      this.#heartbeatTimeoutMs - silentFor,
    );
  }

  #recordError(error: Error): void {
    this.#error ??= error;
  }

  #stopTimers(): void {
    clearInterval(this.#pingTimer);
    clearTimeout(this.#earlyPingTimer);
    clearTimeout(this.#livenessTimer);
  }

  #finish(code: number, reason: string): void {
    if (this.#finished) return;
    this.#finished = true;
    this.#ending = true;
    this.#stopTimers();
    clearTimeout(this.#closeTimer);
    const error = this.#error;
    const heartbeat =
      error instanceof PosternError && error.code === 'POSTERN_ERR_HEARTBEAT_TIMEOUT';
    this.#handlers.close({ code: heartbeat ? CloseCode.HEARTBEAT_TIMEOUT : code, reason, error });
  }
}
