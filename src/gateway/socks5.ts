/**
 * The SOCKS5 front door's protocol (RFC 1928, with RFC 1929 username/password): reads a user's
 * greeting, authentication and request, asks the gateway to open a tunnel stream, answers with
 * the reply code that says what happened, then splices the user's socket and the stream.
 *
 * Choices the RFCs leave open:
 * - A client that offers both username/password and no-auth gets username/password, because its
 *   credentials choose the group.
 * - A domain name that is empty or holds a byte outside printable ASCII (0x21-0x7E) is answered
 *   with 0x01 (general failure): the address type is supported, the request is malformed, and
 *   RFC 1928 has no closer code.
 * - A user's FIN before the reply is a half-close, not a departure: the connect goes on and the
 *   FIN is passed on after any early data (HAProxy's default, without `abortonclose`). Only a
 *   socket that is gone (closed by error or reset) aborts a pending connect.
 * - The handshake deadline covers greeting, authentication and request; it stops when the request
 *   has been read. The dial has its own deadline; an established connection has none.
 */
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { PosternError, type PosternErrorCode } from '../errors.js';
import { deferredChild, type Log } from '../observability/logger.js';
import { Cancellation, type CancelSignal } from '../tunnel/cancellation.js';
import { Reason, reasonName } from '../tunnel/constants.js';
import { relayUser } from './user-relay.js';

/** Where a CONNECT request wants to go, as the user wrote it. */
export interface Socks5Target {
  host: string;
  port: number;
  addressType: 'ipv4' | 'ipv6' | 'domain';
}

/** What the SOCKS5 protocol needs from the gateway. */
export interface Socks5Handlers {
  /** Returns the group id for valid credentials, or null. */
  authenticate(username: string, password: string): Promise<string | null>;
  /** When set, the no-auth method (0x00) is offered and selects this group. */
  noAuthGroup?: string;
  /**
   * Opens the tunnel stream for CONNECT. Rejects with a PosternError whose `reason` says why;
   * resolves to a Duplex already connected to the target. `cancellation` is cancelled when the
   * user leaves.
   */
  connect(group: string, target: Socks5Target, cancellation: CancelSignal): Promise<Duplex>;
  /** Deadline for greeting, authentication and request; not a read deadline after CONNECT. */
  handshakeTimeoutMs: number;
  logger: Log;
}

const SOCKS_VERSION = 0x05;
const SOCKS5_RELAY = { closed: 'socks5 connection closed', reset: 'socks5 relay reset' };
const AUTH_VERSION = 0x01;
const Method = { NO_AUTH: 0x00, USERNAME_PASSWORD: 0x02, NO_ACCEPTABLE: 0xff } as const;
const Command = { CONNECT: 0x01 } as const;
const AddressType = { IPV4: 0x01, DOMAIN: 0x03, IPV6: 0x04 } as const;
const AuthStatus = { SUCCESS: 0x00, FAILURE: 0x01 } as const;

/** REP values of RFC 1928 section 6. */
export const Socks5Reply = {
  SUCCEEDED: 0x00,
  GENERAL_FAILURE: 0x01,
  NOT_ALLOWED: 0x02,
  NETWORK_UNREACHABLE: 0x03,
  HOST_UNREACHABLE: 0x04,
  CONNECTION_REFUSED: 0x05,
  TTL_EXPIRED: 0x06,
  COMMAND_NOT_SUPPORTED: 0x07,
  ADDRESS_TYPE_NOT_SUPPORTED: 0x08,
} as const;

/** The REP code that tells a SOCKS5 user why the tunnel could not open the connection. */
export function socks5ReplyFor(reason: Reason | undefined): number {
  switch (reason) {
    case Reason.FORBIDDEN:
      return Socks5Reply.NOT_ALLOWED;
    case Reason.NETWORK_UNREACHABLE:
      return Socks5Reply.NETWORK_UNREACHABLE;
    case Reason.HOST_UNREACHABLE:
    case Reason.DNS_FAILURE:
      return Socks5Reply.HOST_UNREACHABLE;
    case Reason.CONNECTION_REFUSED:
      return Socks5Reply.CONNECTION_REFUSED;
    case Reason.DIAL_TIMEOUT:
      return Socks5Reply.TTL_EXPIRED;
    case Reason.UNSUPPORTED:
      return Socks5Reply.COMMAND_NOT_SUPPORTED;
    default:
      return Socks5Reply.GENERAL_FAILURE;
  }
}

/**
 * Serves one SOCKS5 connection. Owns `socket` from now on. Resolves when the socket (and the
 * tunnel stream, if one was opened) has closed; never rejects: every failure is answered with
 * the right reply, logged once, and the socket closed once.
 */
export function serveSocks5(socket: Socket, handlers: Socks5Handlers): Promise<void> {
  return new Socks5Connection(socket, handlers).serve();
}

type LogLevel = 'debug' | 'info' | 'error';

/** Why a handshake ended early: the event to log, and the last reply owed to the user, if any. */
class HandshakeEnded extends PosternError {
  readonly lastWords: Buffer | null;
  readonly level: LogLevel;
  readonly context: Record<string, unknown>;

  constructor(
    code: PosternErrorCode,
    event: string,
    options: {
      lastWords?: Buffer;
      level?: LogLevel;
      context?: Record<string, unknown>;
      cause?: unknown;
    } = {},
  ) {
    super(code, event, { cause: options.cause });
    this.lastWords = options.lastWords ?? null;
    this.level = options.level ?? 'info';
    this.context = options.context ?? {};
  }
}

function commandReply(rep: number): Buffer {
  // BND.ADDR 0.0.0.0 and BND.PORT 0: the bound address is the tunnel's business, not the user's.
  return Buffer.from([SOCKS_VERSION, rep, 0x00, AddressType.IPV4, 0, 0, 0, 0, 0, 0]);
}

function refusal(event: string, rep: number, context: Record<string, unknown>): HandshakeEnded {
  return new HandshakeEnded('POSTERN_ERR_PROTOCOL', event, {
    lastWords: commandReply(rep),
    context,
  });
}

function protocolViolation(event: string, context: Record<string, unknown>): HandshakeEnded {
  return new HandshakeEnded('POSTERN_ERR_PROTOCOL', event, { context });
}

class Socks5Connection {
  readonly #socket: Socket;
  readonly #handlers: Socks5Handlers;
  readonly #log: Log;
  /** Resumes the one pending `#read`, if any, after the socket has news. */
  #wakeReader: (() => void) | null = null;
  #deadlinePassed = false;
  #socketError: Error | undefined;

  constructor(socket: Socket, handlers: Socks5Handlers) {
    this.#socket = socket;
    this.#handlers = handlers;
    this.#log = handlers.logger;
    // The user's FIN must not end the direction that still carries the target's reply.
    socket.allowHalfOpen = true;
    // Kept for the one log line that describes how the connection ended.
    socket.on('error', (error) => {
      this.#socketError ??= error;
    });
  }

  /**
   * A promise chain rather than an async function: an idle relay lasts for hours, and a
   * suspended async function would keep its frame (and all it refers to) for as long.
   */
  serve(): Promise<void> {
    return this.#handshakeWithDeadline()
      .then((request) => (request === null ? undefined : this.#connect(request)))
      .then(() => whenClosed(this.#socket));
  }

  async #handshakeWithDeadline(): Promise<{ group: string; target: Socks5Target } | null> {
    const socket = this.#socket;
    const wake = () => {
      const resume = this.#wakeReader;
      this.#wakeReader = null;
      resume?.();
    };
    socket.on('readable', wake);
    socket.on('end', wake);
    socket.on('close', wake);
    const deadline = setTimeout(() => {
      this.#deadlinePassed = true;
      this.#close(null);
    }, this.#handlers.handshakeTimeoutMs);
    try {
      const group = await this.#negotiate();
      const target = await this.#readRequest();
      return { group, target };
    } catch (error) {
      this.#endHandshake(error);
      return null;
    } finally {
      clearTimeout(deadline);
      socket.off('readable', wake);
      socket.off('end', wake);
      socket.off('close', wake);
    }
  }

  #endHandshake(error: unknown): void {
    if (error instanceof HandshakeEnded) {
      const { level, context, cause } = error;
      this.#log[level](
        { code: error.code, ...context, ...(cause ? { err: cause } : {}) },
        error.message,
      );
      this.#close(error.lastWords);
      return;
    }
    // Not a protocol outcome but a defect in this module: report it loudly, keep the promise.
    this.#log.error({ err: error }, 'socks5 handshake crashed');
    this.#close(null);
  }

  /** Method selection and, if chosen, username/password. Returns the group. */
  async #negotiate(): Promise<string> {
    const [version, methodCount] = await this.#read(2);
    if (version !== SOCKS_VERSION) throw protocolViolation('socks5 bad version', { version });
    const methods = [...(await this.#read(methodCount))];
    if (methods.includes(Method.USERNAME_PASSWORD)) {
      this.#socket.write(Buffer.from([SOCKS_VERSION, Method.USERNAME_PASSWORD]));
      return this.#authenticate();
    }
    const { noAuthGroup } = this.#handlers;
    if (noAuthGroup !== undefined && methods.includes(Method.NO_AUTH)) {
      this.#socket.write(Buffer.from([SOCKS_VERSION, Method.NO_AUTH]));
      return noAuthGroup;
    }
    throw new HandshakeEnded('POSTERN_ERR_AUTH', 'socks5 no acceptable method', {
      lastWords: Buffer.from([SOCKS_VERSION, Method.NO_ACCEPTABLE]),
      context: { methods },
    });
  }

  async #authenticate(): Promise<string> {
    const [version, usernameLength] = await this.#read(2);
    if (version !== AUTH_VERSION) throw protocolViolation('socks5 bad auth version', { version });
    const username = (await this.#read(usernameLength)).toString('utf8');
    const [passwordLength] = await this.#read(1);
    const password = (await this.#read(passwordLength)).toString('utf8');
    const failed = Buffer.from([AUTH_VERSION, AuthStatus.FAILURE]);
    let group: string | null;
    try {
      group = await this.#handlers.authenticate(username, password);
    } catch (error) {
      // A check cut short by the deadline or by the user leaving is that, not a failing check.
      this.#throwIfGone();
      throw new HandshakeEnded('POSTERN_ERR_AUTH', 'socks5 authentication error', {
        lastWords: failed,
        level: 'error',
        context: { username },
        cause: error,
      });
    }
    this.#throwIfGone();
    if (group === null) {
      throw new HandshakeEnded('POSTERN_ERR_AUTH', 'socks5 authentication failed', {
        lastWords: failed,
        context: { username },
      });
    }
    this.#socket.write(Buffer.from([AUTH_VERSION, AuthStatus.SUCCESS]));
    return group;
  }

  async #readRequest(): Promise<Socks5Target> {
    const [version, command, , addressType] = await this.#read(4);
    if (version !== SOCKS_VERSION) throw protocolViolation('socks5 bad version', { version });
    const target = await this.#readAddress(addressType);
    if (command !== Command.CONNECT) {
      throw refusal('socks5 command not supported', Socks5Reply.COMMAND_NOT_SUPPORTED, {
        command,
        target: formatTarget(target),
      });
    }
    return target;
  }

  async #readAddress(addressType: number): Promise<Socks5Target> {
    switch (addressType) {
      case AddressType.IPV4: {
        const bytes = await this.#read(6);
        const host = [...bytes.subarray(0, 4)].join('.');
        return { host, port: bytes.readUInt16BE(4), addressType: 'ipv4' };
      }
      case AddressType.IPV6: {
        const bytes = await this.#read(18);
        const host = formatIPv6(bytes.subarray(0, 16));
        return { host, port: bytes.readUInt16BE(16), addressType: 'ipv6' };
      }
      case AddressType.DOMAIN: {
        const [length] = await this.#read(1);
        const bytes = await this.#read(length + 2);
        const name = bytes.subarray(0, length);
        if (name.length === 0 || !name.every(isPrintableAscii)) {
          throw refusal('socks5 bad domain name', Socks5Reply.GENERAL_FAILURE, {
            name: name.toString('hex'),
          });
        }
        return {
          host: name.toString('ascii'),
          port: bytes.readUInt16BE(length),
          addressType: 'domain',
        };
      }
      default:
        throw refusal('socks5 address type not supported', Socks5Reply.ADDRESS_TYPE_NOT_SUPPORTED, {
          addressType,
        });
    }
  }

  /**
   * Exactly `length` bytes of the handshake. Bytes beyond what the handshake needs stay in the
   * socket's buffer (bounded by its high-water mark), so early data reaches the stream in order.
   */
  async #read(length: number): Promise<Buffer> {
    if (length === 0) return Buffer.alloc(0);
    for (;;) {
      this.#throwIfGone();
      const chunk = this.#socket.read(length) as Buffer | null;
      if (chunk !== null && chunk.length === length) return chunk;
      // A short chunk is the rest of a stream that has ended.
      if (chunk !== null || this.#socket.readableEnded) throw this.#userLeft();
      await new Promise<void>((resolve) => {
        this.#wakeReader = resolve;
      });
    }
  }

  #throwIfGone(): void {
    if (this.#socket.destroyed) throw this.#userLeft();
  }

  #userLeft(): HandshakeEnded {
    if (this.#deadlinePassed) {
      return new HandshakeEnded('POSTERN_ERR_HANDSHAKE', 'socks5 handshake timeout', {
        context: { timeoutMs: this.#handlers.handshakeTimeoutMs },
      });
    }
    return new HandshakeEnded('POSTERN_ERR_HANDSHAKE', 'socks5 user left during handshake', {
      level: 'debug',
      context: this.#socketError ? { err: this.#socketError } : {},
    });
  }

  /** Opens the stream and answers; resolves with the relay, if there is one, not after it. */
  async #connect({ group, target }: { group: string; target: Socks5Target }): Promise<void> {
    const log = deferredChild(this.#log, { group, target: formatTarget(target) });
    // The abort in #open listens for 'close', which a socket already destroyed may not emit again.
    if (this.#socket.destroyed) {
      log.debug('socks5 user left before connect');
      return;
    }
    let stream: Duplex;
    try {
      stream = await this.#open(group, target);
    } catch (error) {
      this.#refuseConnect(log, error);
      return;
    }
    if (this.#socket.destroyed) {
      log.debug({ err: this.#socketError }, 'socks5 user left before connect finished');
      stream.destroy();
      await whenClosed(stream);
      return;
    }
    if (stream.destroyed) {
      const reason = reasonOf(stream.errored);
      const reply = socks5ReplyFor(reason);
      log.info(
        { reason: reasonLabel(reason), reply, err: stream.errored },
        'socks5 stream closed before reply',
      );
      this.#close(commandReply(reply));
      await whenClosed(stream);
      return;
    }
    this.#socket.write(commandReply(Socks5Reply.SUCCEEDED));
    log.debug('socks5 connected');
    return relayUser(this.#socket, stream, log, SOCKS5_RELAY);
  }

  /** connect(), cancelled if the user leaves while it runs. */
  async #open(group: string, target: Socks5Target): Promise<Duplex> {
    const cancellation = new Cancellation();
    const abortOnClose = () => {
      cancellation.cancel(
        new PosternError('POSTERN_ERR_OPEN_FAILED', 'the SOCKS5 user disconnected', {
          reason: Reason.CANCELLED,
        }),
      );
    };
    this.#socket.once('close', abortOnClose);
    try {
      return await this.#handlers.connect(group, target, cancellation);
    } finally {
      this.#socket.off('close', abortOnClose);
    }
  }

  #refuseConnect(log: Log, error: unknown): void {
    if (this.#socket.destroyed) {
      log.debug({ err: error }, 'socks5 connect cancelled: user left');
      return;
    }
    if (!(error instanceof PosternError)) {
      log.error({ err: error }, 'socks5 connect failed unexpectedly');
      this.#close(commandReply(Socks5Reply.GENERAL_FAILURE));
      return;
    }
    const reply = socks5ReplyFor(error.reason);
    log.info(
      { reason: reasonLabel(error.reason), reply, code: error.code, detail: error.message },
      'socks5 connect refused',
    );
    this.#close(commandReply(reply));
  }

  /** The one way this connection closes its socket, after its last words if it has any. */
  #close(lastWords: Buffer | null): void {
    const socket = this.#socket;
    if (socket.destroyed || socket.writableEnded) return;
    if (lastWords === null) {
      socket.destroy();
      return;
    }
    // Destroy rather than wait for the user's FIN: a hostile user could hold the socket forever.
    socket.end(lastWords, () => socket.destroy());
  }
}

function whenClosed(stream: Duplex): Promise<void> {
  if (stream.closed) return Promise.resolve();
  return new Promise((resolve) => stream.once('close', () => resolve()));
}

function reasonOf(error: unknown): Reason | undefined {
  return error instanceof PosternError ? error.reason : undefined;
}

function reasonLabel(reason: Reason | undefined): string {
  return reason === undefined ? 'none' : reasonName(reason);
}

function isPrintableAscii(byte: number): boolean {
  return byte >= 0x21 && byte <= 0x7e;
}

function formatTarget(target: Socks5Target): string {
  return target.addressType === 'ipv6'
    ? `[${target.host}]:${target.port}`
    : `${target.host}:${target.port}`;
}

/** RFC 5952 text: lower-case hex, the longest run (first on a tie) of 2+ zero groups as `::`. */
function formatIPv6(bytes: Buffer): string {
  const groups = Array.from({ length: 8 }, (_, index) => bytes.readUInt16BE(index * 2));
  let runStart = -1;
  let runLength = 1;
  for (let start = 0; start < 8; ) {
    let end = start;
    while (end < 8 && groups[end] === 0) end++;
    if (end - start > runLength) {
      runStart = start;
      runLength = end - start;
    }
    start = Math.max(end, start + 1);
  }
  const hex = groups.map((group) => group.toString(16));
  if (runStart === -1) return hex.join(':');
  return `${hex.slice(0, runStart).join(':')}::${hex.slice(runStart + runLength).join(':')}`;
}
