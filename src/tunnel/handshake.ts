/**
 * The versioned handshake that precedes the session: HELLO from the client, HELLO_OK from the
 * gateway (or a WebSocket close with a CloseCode). The payload shapes are checked here.
 */
import { z } from 'zod';
import { PosternError } from '../errors.js';
import type { Frame } from './codec.js';
import { CloseCode, FrameType, PROTOCOL_VERSION } from './constants.js';
import type { FrameTransport, TransportCloseInfo } from './transport.js';

export const helloSchema = z.object({
  client_id: z.string().min(1).max(128),
  group_id: z.string().min(1).max(128),
  group_password: z.string().max(1024),
  auth_username: z.string().max(1024).optional(),
  auth_password: z.string().max(1024).optional(),
  /** Which of the client's parallel tunnels this is; a reconnect replaces the same replica. */
  replica: z.number().int().min(0).max(1024).default(0),
  open_ports: z.array(z.unknown()).max(1024).default([]),
});
export type Hello = z.infer<typeof helloSchema>;

export const welcomeSchema = z.object({
  session_id: z.string().min(1),
  heartbeat_interval_ms: z.number().int().positive(),
  heartbeat_timeout_ms: z.number().int().positive(),
});
export type Welcome = z.infer<typeof welcomeSchema>;

/**
 * Holds a transport during the handshake: yields its frames one at a time and records
 * whether it closed. The transport is handed to a Session only while `closeInfo` is unset.
 */
export class HandshakeChannel {
  #transport: FrameTransport;
  #frames: Frame[] = [];
  #waiter: { resolve: (frame: Frame) => void; reject: (error: Error) => void } | null = null;
  #closeInfo: TransportCloseInfo | undefined;

  constructor(transport: FrameTransport) {
    this.#transport = transport;
    transport.setHandlers({
      frame: (frame) => this.#onFrame(frame),
      drain: () => undefined,
      close: (info) => this.#onClose(info),
    });
  }

  get closeInfo(): TransportCloseInfo | undefined {
    return this.#closeInfo;
  }

  /** The next frame, or a rejection when the transport closes or `timeoutMs` passes. */
  next(timeoutMs: number): Promise<Frame> {
    const queued = this.#frames.shift();
    if (queued) return Promise.resolve(queued);
    if (this.#closeInfo) return Promise.reject(closedError(this.#closeInfo));
    return new Promise<Frame>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#waiter = null;
        reject(new PosternError('POSTERN_ERR_HANDSHAKE', `no handshake within ${timeoutMs} ms`));
      }, timeoutMs);
      this.#waiter = {
        resolve: (frame) => {
          clearTimeout(timer);
          resolve(frame);
        },
        reject: (error) => {
          clearTimeout(timer);
          reject(error);
        },
      };
    });
  }

  #onFrame(frame: Frame): void {
    const waiter = this.#waiter;
    this.#waiter = null;
    if (waiter) waiter.resolve(frame);
    else if (this.#frames.length < 16) this.#frames.push(frame);
    else this.#transport.close(CloseCode.PROTOCOL_ERROR, 'frames before the handshake completed');
  }

  #onClose(info: TransportCloseInfo): void {
    this.#closeInfo = info;
    const waiter = this.#waiter;
    this.#waiter = null;
    waiter?.reject(closedError(info));
  }
}

function closedError(info: TransportCloseInfo): PosternError {
  const detail = info.reason ? `${info.code} ${info.reason}` : `${info.code}`;
  return new PosternError('POSTERN_ERR_HANDSHAKE', `tunnel closed during handshake (${detail})`, {
    cause: info.error,
  });
}

export class HandshakeError extends PosternError {
  readonly closeCode: CloseCode;
  constructor(closeCode: CloseCode, message: string) {
    super('POSTERN_ERR_HANDSHAKE', message);
    this.closeCode = closeCode;
  }
}

/** Parses the client's HELLO; throws POSTERN_ERR_HANDSHAKE with the close code to answer. */
export function parseHello(frame: Frame): Hello {
  if (frame.type !== FrameType.HELLO) {
    throw new HandshakeError(
      CloseCode.PROTOCOL_ERROR,
      `expected HELLO, got frame type ${frame.type}`,
    );
  }
  if (frame.version !== PROTOCOL_VERSION) {
    throw new HandshakeError(
      CloseCode.UNSUPPORTED_VERSION,
      `unsupported protocol version ${frame.version}; supported: ${PROTOCOL_VERSION}`,
    );
  }
  const parsed = helloSchema.safeParse(frame.info);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new HandshakeError(
      CloseCode.PROTOCOL_ERROR,
      `bad HELLO: ${issue?.path.join('.') || 'payload'}: ${issue?.message}`,
    );
  }
  return parsed.data;
}

/** Parses the gateway's HELLO_OK. */
export function parseWelcome(frame: Frame): Welcome {
  if (frame.type !== FrameType.HELLO_OK) {
    throw new HandshakeError(
      CloseCode.PROTOCOL_ERROR,
      `expected HELLO_OK, got frame type ${frame.type}`,
    );
  }
  if (frame.version !== PROTOCOL_VERSION) {
    throw new HandshakeError(
      CloseCode.UNSUPPORTED_VERSION,
      `gateway speaks protocol version ${frame.version}; this client speaks ${PROTOCOL_VERSION}`,
    );
  }
  const parsed = welcomeSchema.safeParse(frame.info);
  if (!parsed.success) throw new HandshakeError(CloseCode.PROTOCOL_ERROR, 'bad HELLO_OK payload');
  return parsed.data;
}
