/**
 * A Session owns one frame transport (in production, one WebSocket) and multiplexes streams
 * over it. It is the only object that sends frames; streams ask it to.
 *
 * States: OPEN → DRAINING (GOAWAY sent: no new streams either way) → CLOSED.
 * 'close' is emitted once, from #onTransportClose, whatever ended the session.
 */
import { EventEmitter } from 'node:events';
import { PosternError } from '../errors.js';
import type { Logger } from '../observability/logger.js';
import { Cancellation, type CancelSignal } from './cancellation.js';
import { encodeDataInto, encodeFrame, type Frame } from './codec.js';
import { CloseCode, FrameType, HEADER_SIZE, Reason, reasonName } from './constants.js';
import { dataFramePool, POOLED_FRAME_MIN } from './frame-pool.js';
import { ReceiveWindows } from './receive-window.js';
import { type StreamHost, type StreamTarget, TunnelStream } from './stream.js';
import type { FrameTransport, SendOptions, TransportCloseInfo } from './transport.js';

export type SessionRole = 'gateway' | 'client';
export type SessionState = 'open' | 'draining' | 'closed';
export type SessionCloseInfo = TransportCloseInfo;

/** Credit: the peer's sender may be waiting for it. */
const URGENT: SendOptions = { urgent: true };

/** See #onOpenAnswer: the error is read from `stream.errored` by the opener. */
const keepInErrored = () => undefined;

/** A stream the peer asked to open; answer with accept() or reject(). */
export interface IncomingOpen {
  readonly streamId: number;
  readonly target: StreamTarget;
  /** Cancelled when the opener cancels or the session ends before an answer. */
  readonly cancellation: CancelSignal;
  /** Sends OPEN_OK and returns the stream. Throws once `cancellation` is cancelled. */
  accept(): TunnelStream;
  /** Sends OPEN_ERROR; a no-op once `cancellation` is cancelled. */
  reject(reason: Reason, message: string): void;
}

export interface SessionOptions {
  role: SessionRole;
  id: string;
  logger: Logger;
  /** Called for each stream the peer opens. Without it, every open is refused. */
  onOpen?: (open: IncomingOpen) => void;
}

interface OutgoingOpen {
  target: StreamTarget;
  resolve: (stream: TunnelStream) => void;
  reject: (error: Error) => void;
  cleanup: () => void;
}

export interface OpenStreamOptions {
  /** Deadline for the peer's answer. */
  timeoutMs: number;
  /** Cancelling it before the answer sends RESET (CANCELLED) and rejects the open. */
  cancellation?: CancelSignal;
}

export class Session extends EventEmitter implements StreamHost {
  readonly id: string;
  readonly role: SessionRole;
  readonly closed: Promise<SessionCloseInfo>;
  #transport: FrameTransport;
  #log: Logger;
  #onOpen: ((open: IncomingOpen) => void) | undefined;
  #state: SessionState = 'open';
  #peerGoingAway = false;
  #streams = new Map<number, TunnelStream>();
  #outgoing = new Map<number, OutgoingOpen>();
  #incoming = new Map<number, Cancellation>();
  #nextLocalId: number;
  #highestPeerId = 0;
  #receiveWindows: ReceiveWindows;
  #sendWaiters: TunnelStream[] = [];
  #resumingWaiters = false;
  #drainTimer: NodeJS.Timeout | undefined;
  #resolveClosed!: (info: SessionCloseInfo) => void;

  constructor(transport: FrameTransport, options: SessionOptions) {
    super();
    this.id = options.id;
    this.role = options.role;
    this.#transport = transport;
    this.#receiveWindows = new ReceiveWindows(undefined, () => transport.leastRoundTripMs);
    this.#log = options.logger;
    this.#onOpen = options.onOpen;
    // The gateway opens odd stream ids, the client even ones.
    this.#nextLocalId = options.role === 'gateway' ? 1 : 2;
    this.closed = new Promise((resolve) => {
      this.#resolveClosed = resolve;
    });
    transport.setHandlers({
      frame: (frame) => this.#onFrame(frame),
      drain: () => this.#onDrain(),
      close: (info) => this.#onTransportClose(info),
    });
  }

  get state(): SessionState {
    return this.#state;
  }

  /** True while new streams may be opened on this session. */
  get acceptingStreams(): boolean {
    return this.#state === 'open' && !this.#peerGoingAway;
  }

  /** Streams open or being opened, in both directions. */
  get openStreamCount(): number {
    return this.#streams.size + this.#outgoing.size + this.#incoming.size;
  }

  get remoteAddress(): string {
    return this.#transport.remoteAddress;
  }

  /** Opens a stream to `target` through the peer. Rejects with a PosternError carrying a reason. */
  openStream(target: StreamTarget, options: OpenStreamOptions): Promise<TunnelStream> {
    if (!this.acceptingStreams) {
      return Promise.reject(
        new PosternError(
          'POSTERN_ERR_SESSION_CLOSED',
          `session ${this.id} is ${this.#describeState()}`,
          {
            reason: Reason.GOING_AWAY,
          },
        ),
      );
    }
    if (options.cancellation?.cancelled) {
      return Promise.reject(
        new PosternError('POSTERN_ERR_OPEN_FAILED', 'open cancelled', { reason: Reason.CANCELLED }),
      );
    }
    const streamId = this.#nextLocalId;
    this.#nextLocalId += 2;
    return new Promise<TunnelStream>((resolve, reject) => {
      const cancel = (reason: Reason, message: string) => {
        if (!this.#outgoing.has(streamId)) return;
        this.#settleOutgoing(streamId);
        this.sendReset(streamId, Reason.CANCELLED, message);
        reject(new PosternError('POSTERN_ERR_OPEN_FAILED', message, { reason }));
      };
      const timer = setTimeout(
        () =>
          cancel(
            Reason.DIAL_TIMEOUT,
            `no answer from the client within ${options.timeoutMs} ms for ${target.host}:${target.port}`,
          ),
        options.timeoutMs,
      );
      const stopListening = options.cancellation?.onCancel(() =>
        cancel(Reason.CANCELLED, 'open cancelled'),
      );
      this.#outgoing.set(streamId, {
        target,
        resolve,
        reject,
        cleanup: () => {
          clearTimeout(timer);
          stopListening?.();
        },
      });
      this.#send({ type: FrameType.OPEN, streamId, ...target });
    });
  }

  /** Sends GOAWAY: no new streams in either direction; existing ones continue. Idempotent. */
  goAway(message = 'going away'): void {
    if (this.#state !== 'open') return;
    this.#state = 'draining';
    this.#send({ type: FrameType.GOAWAY, streamId: 0, reason: Reason.NORMAL, message });
    this.#log.debug({ message }, 'session draining');
  }

  /**
   * Graceful close: GOAWAY, wait for streams to finish (at most `drainTimeoutMs`), reset what
   * is left, close the WebSocket once. Idempotent; every caller gets the same `closed` promise.
   */
  close(drainTimeoutMs: number, message = 'going away'): Promise<SessionCloseInfo> {
    if (this.#state === 'closed' || this.#drainTimer) return this.closed;
    this.goAway(message);
    if (this.openStreamCount === 0) {
      this.#transport.close(CloseCode.NORMAL, message);
      return this.closed;
    }
    this.#drainTimer = setTimeout(() => this.#endDrain(message), drainTimeoutMs);
    return this.closed;
  }

  /** Immediate close: every stream fails, the transport is torn down. Idempotent. */
  destroy(error?: Error): void {
    if (this.#state === 'closed') return;
    this.#transport.destroy(error);
  }

  // ---- StreamHost -------------------------------------------------------------------------

  sendData(streamId: number, data: Buffer): void {
    if (HEADER_SIZE + data.length < POOLED_FRAME_MIN) {
      this.#send({ type: FrameType.DATA, streamId, data });
      return;
    }
    if (this.#state === 'closed') return;
    const buffer = dataFramePool.take();
    this.#transport.send(encodeDataInto(buffer, streamId, data), {
      written: () => dataFramePool.give(buffer),
    });
  }

  sendWindow(streamId: number, increment: number): void {
    this.#send({ type: FrameType.WINDOW, streamId, increment }, URGENT);
  }

  sendFin(streamId: number): void {
    this.#send({ type: FrameType.FIN, streamId });
  }

  sendReset(streamId: number, reason: Reason, message: string): void {
    this.#send({ type: FrameType.RESET, streamId, reason, message: message.slice(0, 200) });
  }

  windowFor(streamId: number, outstanding: number): number {
    return this.#receiveWindows.windowFor(streamId, outstanding);
  }

  receiveEnded(streamId: number): void {
    this.#receiveWindows.release(streamId);
  }

  reserveSend(stream: TunnelStream): boolean {
    // Streams already waiting go first, except while #onDrain is handing out turns.
    const myTurn = this.#resumingWaiters || this.#sendWaiters.length === 0;
    if (this.#transport.writable && myTurn) return true;
    if (!this.#sendWaiters.includes(stream)) this.#sendWaiters.push(stream);
    return false;
  }

  flowControlError(_streamId: number, message: string): void {
    this.#protocolError(
      new PosternError('POSTERN_ERR_FLOW_CONTROL', message),
      Reason.FLOW_CONTROL_ERROR,
    );
  }

  release(stream: TunnelStream): void {
    if (this.#streams.get(stream.id) !== stream) return;
    this.#streams.delete(stream.id);
    this.#receiveWindows.release(stream.id);
    const waiter = this.#sendWaiters.indexOf(stream);
    if (waiter >= 0) this.#sendWaiters.splice(waiter, 1);
    this.emit('stream-released', stream);
    this.#maybeFinishDrain();
  }

  // ---- frames from the peer ---------------------------------------------------------------

  #onFrame(frame: Frame): void {
    switch (frame.type) {
      case FrameType.OPEN:
        this.#onOpenFrame(frame.streamId, { kind: frame.kind, host: frame.host, port: frame.port });
        return;
      case FrameType.OPEN_OK:
        this.#onOpenAnswer(frame.streamId, undefined);
        return;
      case FrameType.OPEN_ERROR:
        this.#onOpenAnswer(frame.streamId, frame);
        return;
      case FrameType.DATA:
      case FrameType.WINDOW:
      case FrameType.FIN:
      case FrameType.RESET:
        this.#onStreamFrame(frame);
        return;
      case FrameType.GOAWAY:
        this.#peerGoingAway = true;
        this.#log.info(
          { reason: reasonName(frame.reason), message: frame.message },
          'peer going away',
        );
        this.emit('goaway', frame.reason, frame.message);
        return;
      case FrameType.HELLO:
      case FrameType.HELLO_OK:
        this.#protocolError(
          new PosternError('POSTERN_ERR_PROTOCOL', 'handshake frame after handshake'),
        );
        return;
    }
  }

  #isPeerId(streamId: number): boolean {
    return (streamId % 2 === 1) === (this.role === 'client');
  }

  #onOpenFrame(streamId: number, target: StreamTarget): void {
    if (!this.#isPeerId(streamId) || streamId <= this.#highestPeerId) {
      this.#protocolError(
        new PosternError('POSTERN_ERR_PROTOCOL', `OPEN with invalid stream id ${streamId}`),
      );
      return;
    }
    this.#highestPeerId = streamId;
    const onOpen = this.#onOpen;
    if (this.#state !== 'open' || !onOpen) {
      const reason = onOpen ? Reason.GOING_AWAY : Reason.UNSUPPORTED;
      this.#send({
        type: FrameType.OPEN_ERROR,
        streamId,
        reason,
        message: 'not accepting streams',
      });
      return;
    }
    const cancellation = new Cancellation();
    this.#incoming.set(streamId, cancellation);
    const answered = () => {
      if (this.#incoming.get(streamId) !== cancellation || cancellation.cancelled) return false;
      this.#incoming.delete(streamId);
      return true;
    };
    onOpen({
      streamId,
      target,
      cancellation,
      accept: () => {
        if (!answered()) {
          throw new PosternError('POSTERN_ERR_STREAM_RESET', `stream ${streamId} was cancelled`, {
            reason: Reason.CANCELLED,
          });
        }
        const stream = new TunnelStream(this, streamId, target);
        this.#streams.set(streamId, stream);
        this.#send({ type: FrameType.OPEN_OK, streamId });
        return stream;
      },
      reject: (reason, message) => {
        if (!answered()) return;
        this.#send({
          type: FrameType.OPEN_ERROR,
          streamId,
          reason,
          message: message.slice(0, 200),
        });
        this.#maybeFinishDrain();
      },
    });
  }

  #onOpenAnswer(streamId: number, error: { reason: Reason; message: string } | undefined): void {
    const open = this.#outgoing.get(streamId);
    if (!open) {
      this.#checkStale(streamId, error ? 'OPEN_ERROR' : 'OPEN_OK');
      return;
    }
    this.#settleOutgoing(streamId);
    if (error) {
      const detail = error.message || reasonName(error.reason);
      open.reject(
        new PosternError(
          'POSTERN_ERR_OPEN_FAILED',
          `${open.target.host}:${open.target.port}: ${detail}`,
          {
            reason: error.reason,
          },
        ),
      );
      this.#maybeFinishDrain();
      return;
    }
    const stream = new TunnelStream(this, streamId, open.target);
    this.#streams.set(streamId, stream);
    // The opener listens only after its await; a RESET read together with this OPEN_OK emits
    // 'error' before that. The error stays in `stream.errored`, and every opener checks
    // `stream.destroyed` before it uses the stream.
    stream.once('error', keepInErrored);
    open.resolve(stream);
  }

  #onStreamFrame(frame: Extract<Frame, { type: 6 | 7 | 8 | 9 }>): void {
    const stream = this.#streams.get(frame.streamId);
    if (!stream) {
      const incoming = this.#incoming.get(frame.streamId);
      if (incoming && frame.type === FrameType.RESET) {
        this.#incoming.delete(frame.streamId);
        incoming.cancel(new PosternError('POSTERN_ERR_STREAM_RESET', 'open cancelled by the peer'));
        this.#maybeFinishDrain();
        return;
      }
      const outgoing = this.#outgoing.get(frame.streamId);
      if (outgoing && frame.type === FrameType.RESET) {
        this.#onOpenAnswer(frame.streamId, frame);
        return;
      }
      if (incoming || outgoing) {
        this.#protocolError(
          new PosternError(
            'POSTERN_ERR_PROTOCOL',
            `frame on stream ${frame.streamId} before OPEN_OK`,
          ),
        );
        return;
      }
      this.#checkStale(frame.streamId, `frame type ${frame.type}`);
      return;
    }
    switch (frame.type) {
      case FrameType.DATA:
        this.#receiveWindows.noteData(frame.streamId, frame.data.length);
        stream.receiveData(frame.data);
        return;
      case FrameType.WINDOW:
        stream.receiveWindow(frame.increment);
        return;
      case FrameType.FIN:
        stream.receiveFin();
        return;
      case FrameType.RESET:
        stream.receiveReset(frame.reason, frame.message);
        return;
    }
  }

  /** A frame for a stream we do not hold: fine if the stream existed (in flight), fatal if never. */
  #checkStale(streamId: number, what: string): void {
    const existed = this.#isPeerId(streamId)
      ? streamId <= this.#highestPeerId
      : streamId < this.#nextLocalId;
    if (!existed) {
      this.#protocolError(
        new PosternError('POSTERN_ERR_PROTOCOL', `${what} for unknown stream ${streamId}`),
      );
    }
  }

  #settleOutgoing(streamId: number): void {
    const open = this.#outgoing.get(streamId);
    if (!open) return;
    this.#outgoing.delete(streamId);
    open.cleanup();
  }

  #onDrain(): void {
    this.#resumingWaiters = true;
    // Each waiter gets one turn; a stream that blocks again re-queues itself at the back.
    for (let turns = this.#sendWaiters.length; turns > 0 && this.#transport.writable; turns--) {
      const stream = this.#sendWaiters.shift()!;
      stream.resumeSending();
    }
    this.#resumingWaiters = false;
  }

  #protocolError(error: PosternError, reason: Reason = Reason.PROTOCOL_ERROR): void {
    if (this.#state === 'closed') return;
    this.#log.warn({ err: error }, 'protocol error from peer; closing session');
    this.#send({
      type: FrameType.GOAWAY,
      streamId: 0,
      reason,
      message: error.message.slice(0, 200),
    });
    this.#transport.close(CloseCode.PROTOCOL_ERROR, error.message, error);
  }

  #send(frame: Frame, options?: SendOptions): void {
    if (this.#state === 'closed') return;
    this.#transport.send(encodeFrame(frame), options);
  }

  #maybeFinishDrain(): void {
    if (this.#drainTimer && this.openStreamCount === 0) this.#endDrain('drained');
  }

  #endDrain(message: string): void {
    clearTimeout(this.#drainTimer);
    const error = new PosternError(
      'POSTERN_ERR_SESSION_CLOSED',
      `session ${this.id} closed: ${message}`,
      {
        reason: Reason.GOING_AWAY,
      },
    );
    for (const stream of [...this.#streams.values()]) stream.destroy(error);
    this.#transport.close(CloseCode.NORMAL, message);
  }

  #describeState(): string {
    return this.#peerGoingAway && this.#state === 'open' ? 'going away' : this.#state;
  }

  #onTransportClose(info: TransportCloseInfo): void {
    if (this.#state === 'closed') return;
    this.#state = 'closed';
    clearTimeout(this.#drainTimer);
    const error = new PosternError(
      'POSTERN_ERR_SESSION_CLOSED',
      `session ${this.id} closed (${info.error?.message ?? `${info.code} ${info.reason}`.trim()})`,
      { reason: Reason.SESSION_CLOSED, cause: info.error },
    );
    for (const [streamId] of [...this.#outgoing]) {
      const open = this.#outgoing.get(streamId)!;
      this.#settleOutgoing(streamId);
      open.reject(error);
    }
    for (const cancellation of this.#incoming.values()) cancellation.cancel(error);
    this.#incoming.clear();
    for (const stream of [...this.#streams.values()]) stream.abortWithSession(error);
    this.#sendWaiters = [];
    this.#log.info({ code: info.code, reason: info.reason, err: info.error }, 'session closed');
    this.emit('close', info);
    this.#resolveClosed(info);
  }
}
