/**
 * One of the client's tunnels to one gateway: dial, verify TLS, handshake, run the session,
 * and when it ends wait (exponential backoff with full jitter, capped) and dial again — for as
 * long as the client runs. The tunnel owns its WebSocket until the handshake hands it over to
 * the transport, which the Session then owns.
 */
import { EventEmitter } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';
import WebSocket from 'ws';
import { PosternError } from '../errors.js';
import type { Logger } from '../observability/logger.js';
import { type GatewayTrust, tlsOptionsFor, verifyPeer } from '../tls/verify.js';
import { encodeFrame } from '../tunnel/codec.js';
import {
  CloseCode,
  FrameType,
  HEADER_SIZE,
  MAX_FRAME_PAYLOAD,
  PROTOCOL_VERSION,
} from '../tunnel/constants.js';
import { HandshakeChannel, HandshakeError, parseWelcome } from '../tunnel/handshake.js';
import { type IncomingOpen, Session } from '../tunnel/session.js';
import { WebSocketTransport } from '../tunnel/transport.js';

export interface ClientTunnelOptions {
  url: string;
  replica: number;
  clientId: string;
  groupId: string;
  groupPassword: string;
  authUsername?: string | undefined;
  authPassword?: string | undefined;
  trust: GatewayTrust;
  heartbeatIntervalMs: number;
  heartbeatTimeoutMs: number;
  handshakeTimeoutMs: number;
  initialDelayMs: number;
  maxDelayMs: number;
  drainTimeoutMs: number;
  onOpen: (open: IncomingOpen) => void;
  logger: Logger;
}

/** Full jitter: a random delay between 0 and the capped exponential step. */
export function backoffDelay(attempt: number, initialMs: number, maxMs: number): number {
  const ceiling = Math.min(maxMs, initialMs * 2 ** Math.min(attempt, 30));
  return Math.random() * ceiling;
}

export class ClientTunnel extends EventEmitter {
  readonly url: string;
  #options: ClientTunnelOptions;
  #log: Logger;
  #stop = new AbortController();
  #session: Session | undefined;
  #connects = 0;
  #running: Promise<void>;

  constructor(options: ClientTunnelOptions) {
    super();
    this.url = options.url;
    this.#options = options;
    this.#log = options.logger;
    this.#running = this.#run();
  }

  /** Sessions this tunnel has established so far (1 + reconnects). */
  get connects(): number {
    return this.#connects;
  }

  /** The current session while it is open. */
  get session(): Session | undefined {
    return this.#session?.state === 'closed' ? undefined : this.#session;
  }

  /** Stops reconnecting and closes the session gracefully. Idempotent. */
  async close(): Promise<void> {
    this.#stop.abort();
    await this.#session?.close(this.#options.drainTimeoutMs, 'client shutting down');
    await this.#running;
  }

  async #run(): Promise<void> {
    let attempt = 0;
    while (!this.#stop.signal.aborted) {
      try {
        const session = await this.#connect();
        attempt = 0;
        this.#connects += 1;
        this.#session = session;
        this.emit('connected', session);
        if (this.#stop.signal.aborted)
          void session.close(this.#options.drainTimeoutMs, 'client shutting down');
        const info = await session.closed;
        this.emit('disconnected', info);
        if (this.#stop.signal.aborted) return;
        this.#log.warn(
          { code: info.code, reason: info.reason, err: info.error },
          'tunnel lost; reconnecting',
        );
      } catch (err) {
        if (this.#stop.signal.aborted) return;
        this.#log.warn({ err }, 'tunnel connect failed');
      }
      const delay = backoffDelay(attempt++, this.#options.initialDelayMs, this.#options.maxDelayMs);
      this.#log.debug({ delayMs: Math.round(delay), attempt }, 'reconnect scheduled');
      try {
        await sleep(delay, undefined, { signal: this.#stop.signal });
      } catch (err) {
        if (this.#stop.signal.aborted) return;
        throw err;
      }
    }
  }

  /** Dials, verifies the gateway's certificate, and completes the handshake. */
  async #connect(): Promise<Session> {
    const options = this.#options;
    const ws = await this.#openWebSocket();
    const transport = new WebSocketTransport(
      ws,
      {
        heartbeatIntervalMs: options.heartbeatIntervalMs,
        heartbeatTimeoutMs: options.heartbeatTimeoutMs,
        remoteAddress: this.url,
      },
      { frame: () => undefined, drain: () => undefined, close: () => undefined },
    );
    const channel = new HandshakeChannel(transport);
    const abortHandshake = () => transport.close(CloseCode.GOING_AWAY, 'client shutting down');
    this.#stop.signal.addEventListener('abort', abortHandshake, { once: true });
    try {
      transport.send(
        encodeFrame({
          type: FrameType.HELLO,
          streamId: 0,
          version: PROTOCOL_VERSION,
          info: {
            client_id: options.clientId,
            group_id: options.groupId,
            group_password: options.groupPassword,
            replica: options.replica,
            open_ports: [],
            ...(options.authUsername !== undefined && {
              auth_username: options.authUsername,
              auth_password: options.authPassword,
            }),
          },
        }),
      );
      const welcome = parseWelcome(await channel.next(options.handshakeTimeoutMs));
      if (channel.closeInfo)
        throw new PosternError('POSTERN_ERR_HANDSHAKE', 'tunnel closed during handshake');
      const logger = this.#log.child({ session: welcome.session_id });
      const session = new Session(transport, {
        role: 'client',
        id: welcome.session_id,
        logger,
        onOpen: options.onOpen,
      });
      logger.info('tunnel connected');
      return session;
    } catch (err) {
      if (!channel.closeInfo) {
        const code = err instanceof HandshakeError ? err.closeCode : CloseCode.HANDSHAKE_TIMEOUT;
        transport.close(code, err instanceof Error ? err.message : String(err));
      }
      throw err;
    } finally {
      this.#stop.signal.removeEventListener('abort', abortHandshake);
    }
  }

  /** Resolves with an open WebSocket whose peer certificate passed verification. */
  #openWebSocket(): Promise<WebSocket> {
    const { trust, handshakeTimeoutMs } = this.#options;
    const ws = new WebSocket(this.url, {
      perMessageDeflate: false,
      maxPayload: MAX_FRAME_PAYLOAD + HEADER_SIZE,
      handshakeTimeout: handshakeTimeoutMs,
      // RFC 6455 masking protects plaintext intermediaries from cache poisoning; inside TLS it
      // only costs a copy. An all-zero key makes ws skip it.
      generateMask: (mask: Buffer) => mask.fill(0),
      ...tlsOptionsFor(trust),
    });
    return new Promise((resolve, reject) => {
      let failure: Error | undefined;
      const onAbort = () => ws.terminate();
      this.#stop.signal.addEventListener('abort', onAbort, { once: true });
      const settle = () => this.#stop.signal.removeEventListener('abort', onAbort);
      ws.on('upgrade', (res) => {
        try {
          verifyPeer(trust, res.socket);
        } catch (err) {
          failure = err as Error;
          ws.terminate();
        }
      });
      const onError = (err: Error) => {
        failure ??= err;
      };
      const onClose = () => {
        settle();
        reject(
          failure ?? new PosternError('POSTERN_ERR_HANDSHAKE', 'WebSocket closed before it opened'),
        );
      };
      ws.on('error', onError);
      ws.once('close', onClose);
      ws.once('open', () => {
        settle();
        // The transport takes these events over from here.
        ws.off('error', onError);
        ws.off('close', onClose);
        resolve(ws);
      });
    });
  }
}
