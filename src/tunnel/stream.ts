/**
 * One multiplexed stream: a Node Duplex with per-stream credit flow control.
 *
 * Receive side: DATA goes to a local queue and moves into the Readable's buffer only while the
 * reader wants more (`push()` returned true or `_read()` was called). Bytes that moved are
 * "consumed". The session says how large the stream's window is (see receive-window.ts); once
 * the credit it could grant reaches a quarter of that window, a WINDOW frame grants it (a
 * quarter rather than a half lets the sender keep more of its window in flight, at 13 bytes per
 * 64 KiB). The sender can therefore never have more than one window of bytes in our queue, and
 * a reader that stops reading stops its writer.
 *
 * Send side: `_write` cuts chunks into DATA frames of at most MAX_DATA_PAYLOAD, never exceeding
 * the peer's credit, and waits while the session's transport is above its high-water mark.
 */
import { Duplex } from 'node:stream';
import { PosternError } from '../errors.js';
import {
  INITIAL_WINDOW,
  MAX_DATA_PAYLOAD,
  Reason,
  reasonName,
  type StreamKind,
} from './constants.js';

export interface StreamTarget {
  kind: StreamKind;
  host: string;
  port: number;
}

/** What a stream needs from its session; the session owns the transport. */
export interface StreamHost {
  sendData(streamId: number, data: Buffer): void;
  sendWindow(streamId: number, increment: number): void;
  /** The window the stream may have, given the credit it was granted and has not consumed. */
  windowFor(streamId: number, outstanding: number): number;
  /** The peer sent FIN: the stream grants no more credit and holds no window. */
  receiveEnded(streamId: number): void;
  sendFin(streamId: number): void;
  sendReset(streamId: number, reason: Reason, message: string): void;
  /** True when data may be sent now; otherwise the stream is queued and resumed on drain. */
  reserveSend(stream: TunnelStream): boolean;
  /** A flow-control violation by the peer ends the whole session. */
  flowControlError(streamId: number, message: string): void;
  /** The stream has finished and must leave the session's table. */
  release(stream: TunnelStream): void;
}

/** The reset reason that describes an error to the peer. */
export function resetReasonFor(error: Error | null | undefined): Reason {
  if (!error) return Reason.CANCELLED;
  if (error instanceof PosternError && error.reason !== undefined) return error.reason;
  const code = (error as NodeJS.ErrnoException).code;
  if (code === 'ECONNRESET' || code === 'EPIPE') return Reason.CONNECTION_RESET;
  return Reason.INTERNAL_ERROR;
}

export class TunnelStream extends Duplex {
  readonly id: number;
  readonly target: StreamTarget;
  #host: StreamHost;
  // Receive side.
  #queue: Buffer[] = [];
  #wantsData = false;
  #remoteEnded = false;
  #endPushed = false;
  /** Credit the peer has left, as far as we know: granted and not yet used by DATA. */
  #peerCredit = INITIAL_WINDOW;
  /** Bytes received and not yet consumed. */
  #held = 0;
  // Send side.
  #sendCredit = INITIAL_WINDOW;
  #pending: { chunk: Buffer; offset: number; callback: (error?: Error | null) => void } | null =
    null;
  #finSent = false;
  /** Set when the stream ended by a RESET from the peer or with its session: no RESET goes back. */
  #silentClose = false;

  constructor(host: StreamHost, id: number, target: StreamTarget) {
    super({
      allowHalfOpen: true,
      readableHighWaterMark: 64 * 1024,
      writableHighWaterMark: 64 * 1024,
    });
    this.#host = host;
    this.id = id;
    this.target = target;
  }

  /** Bytes received from the peer and not yet handed to the reader. */
  get queuedBytes(): number {
    return this.#held;
  }

  // ---- called by the session -------------------------------------------------------------

  /** @internal DATA from the peer. */
  receiveData(data: Buffer): void {
    if (this.#remoteEnded) {
      this.#host.flowControlError(this.id, `DATA after FIN on stream ${this.id}`);
      return;
    }
    this.#peerCredit -= data.length;
    if (this.#peerCredit < 0) {
      this.#host.flowControlError(
        this.id,
        `stream ${this.id} received ${-this.#peerCredit} bytes beyond the credit it was given`,
      );
      return;
    }
    if (this.destroyed || data.length === 0) return;
    this.#held += data.length;
    this.#queue.push(data);
    this.#deliver();
  }

  /** @internal FIN from the peer. */
  receiveFin(): void {
    if (this.#remoteEnded) return;
    this.#remoteEnded = true;
    this.#host.receiveEnded(this.id);
    this.#deliver();
  }

  /** @internal WINDOW from the peer. */
  receiveWindow(increment: number): void {
    this.#sendCredit += increment;
    if (this.#sendCredit > 2 ** 32) {
      this.#host.flowControlError(this.id, `stream ${this.id} window grew past 2^32`);
      return;
    }
    this.resumeSending();
  }

  /** @internal RESET from the peer. */
  receiveReset(reason: Reason, message: string): void {
    this.#silentClose = true;
    const text = message ? `${reasonName(reason)}: ${message}` : reasonName(reason);
    this.destroy(
      new PosternError('POSTERN_ERR_STREAM_RESET', `stream ${this.id} reset by peer (${text})`, {
        reason,
      }),
    );
  }

  /** @internal The session ended: fail the stream without sending anything. */
  abortWithSession(error: Error): void {
    this.#silentClose = true;
    this.destroy(error);
  }

  /** @internal Send credit or transport space became available. */
  resumeSending(): void {
    const pending = this.#pending;
    if (!pending || this.destroyed) return;
    pending.offset = this.#sendWhileAllowed(pending.chunk, pending.offset);
    if (pending.offset < pending.chunk.length) return;
    this.#pending = null;
    pending.callback();
  }

  /**
   * `write()` for bytes the caller reuses as soon as this returns (a socket's shared read buffer,
   * see direct-read.ts). While nothing is queued, what send credit and the transport allow is
   * framed at once, which copies it; the rest is copied and queued as by `write()`.
   */
  writeBorrowed(data: Buffer): boolean {
    if (this.writableLength > 0 || this.#pending || this.destroyed || this.writableEnded) {
      return this.write(Buffer.from(data));
    }
    const offset = this.#sendWhileAllowed(data, 0);
    return offset === data.length || this.write(Buffer.from(data.subarray(offset)));
  }

  // ---- Duplex implementation -------------------------------------------------------------

  override _read(): void {
    this.#wantsData = true;
    this.#deliver();
  }

  override _write(
    chunk: Buffer,
    _encoding: BufferEncoding,
    callback: (error?: Error | null) => void,
  ): void {
    this.#pending = { chunk, offset: 0, callback };
    this.resumeSending();
  }

  override _final(callback: (error?: Error | null) => void): void {
    this.#finSent = true;
    this.#host.sendFin(this.id);
    callback();
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    const pending = this.#pending;
    this.#pending = null;
    this.#queue = [];
    this.#held = 0;
    const finishedCleanly = this.#finSent && this.#remoteEnded && !error;
    if (!finishedCleanly && !this.#silentClose) {
      this.#host.sendReset(
        this.id,
        resetReasonFor(error),
        error?.message ?? 'closed by the local side',
      );
    }
    this.#host.release(this);
    pending?.callback(error ?? new PosternError('POSTERN_ERR_STREAM_RESET', 'stream destroyed'));
    callback(error);
  }

  /**
   * Frames `chunk` from `offset` on while send credit and the transport allow (the frames copy
   * it); returns how far it got.
   */
  #sendWhileAllowed(chunk: Buffer, offset: number): number {
    while (offset < chunk.length && this.#sendCredit > 0 && this.#host.reserveSend(this)) {
      const size = Math.min(chunk.length - offset, this.#sendCredit, MAX_DATA_PAYLOAD);
      this.#host.sendData(this.id, chunk.subarray(offset, offset + size));
      offset += size;
      this.#sendCredit -= size;
    }
    return offset;
  }

  #deliver(): void {
    let consumed = false;
    while (this.#wantsData && this.#queue.length > 0) {
      const chunk = this.#queue.shift()!;
      this.#held -= chunk.length;
      consumed = true;
      this.#wantsData = this.push(chunk);
    }
    if (this.#remoteEnded && this.#queue.length === 0 && !this.#endPushed) {
      this.#endPushed = true;
      this.push(null);
    }
    // After FIN no DATA can come, so credit would be wasted.
    if (consumed && !this.destroyed && !this.#remoteEnded) this.#grantCredit();
  }

  #grantCredit(): void {
    const outstanding = this.#peerCredit + this.#held;
    const window = this.#host.windowFor(this.id, outstanding);
    const increment = window - outstanding;
    if (increment < window / 4) return;
    this.#peerCredit += increment;
    this.#host.sendWindow(this.id, increment);
  }
}
