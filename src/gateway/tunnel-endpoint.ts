/**
 * The gateway's tunnel endpoint: HTTPS with a WebSocket upgrade on /tunnel. It authenticates
 * each client in the handshake and hands the authenticated transport to a Session.
 */
import { randomUUID } from 'node:crypto';
import { createServer, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import { WebSocketServer } from 'ws';
import { TUNNEL_PATH } from '../config/schema.js';
import { PosternError } from '../errors.js';
import type { Logger } from '../observability/logger.js';
import type { ServerCertificate } from '../tls/certificates.js';
import { tunnelServerTlsOptions } from '../tls/ciphers.js';
import { encodeFrame } from '../tunnel/codec.js';
import {
  CloseCode,
  FrameType,
  HEADER_SIZE,
  MAX_FRAME_PAYLOAD,
  PROTOCOL_VERSION,
} from '../tunnel/constants.js';
import { HandshakeChannel, HandshakeError, parseHello } from '../tunnel/handshake.js';
import { Session } from '../tunnel/session.js';
import { WebSocketTransport } from '../tunnel/transport.js';
import type { FailureLimiter, GroupAuthority } from './auth.js';
import type { SessionRegistry } from './registry.js';

export interface TunnelEndpointOptions {
  host: string;
  port: number;
  certificate: ServerCertificate;
  heartbeatIntervalMs: number;
  heartbeatTimeoutMs: number;
  handshakeTimeoutMs: number;
  drainTimeoutMs: number;
  authority: GroupAuthority;
  limiter: FailureLimiter;
  registry: SessionRegistry;
  logger: Logger;
}

export class TunnelEndpoint {
  #options: TunnelEndpointOptions;
  #server: Server;
  #wss: WebSocketServer;
  #log: Logger;
  #handshakes = new Set<WebSocketTransport>();
  #sessions = new Set<Session>();
  #shutdown = new AbortController();
  #sessionCounter = 0;

  constructor(options: TunnelEndpointOptions) {
    this.#options = options;
    this.#log = options.logger;
    this.#server = createServer({
      cert: options.certificate.cert,
      key: options.certificate.key,
      ...tunnelServerTlsOptions(),
      handshakeTimeout: options.handshakeTimeoutMs,
      // Node enforces headersTimeout only at this interval (30 s by default).
      connectionsCheckingInterval: Math.min(1_000, options.handshakeTimeoutMs),
    });
    this.#server.headersTimeout = options.handshakeTimeoutMs;
    this.#server.requestTimeout = options.handshakeTimeoutMs;
    this.#wss = new WebSocketServer({
      noServer: true,
      perMessageDeflate: false,
      maxPayload: MAX_FRAME_PAYLOAD + HEADER_SIZE,
    });
    this.#server.on('request', (req, res) => {
      const status = req.url === TUNNEL_PATH ? 426 : 404;
      res.writeHead(status, { 'content-type': 'text/plain', connection: 'close' });
      res.end(
        status === 426 ? 'Postern tunnel endpoint: WebSocket upgrade required\n' : 'not found\n',
      );
    });
    this.#server.on('upgrade', (req, socket, head) => {
      if (req.url !== TUNNEL_PATH) {
        socket.end('HTTP/1.1 404 Not Found\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
        return;
      }
      this.#wss.handleUpgrade(req, socket, head, (ws) => {
        const transport = new WebSocketTransport(
          ws,
          {
            heartbeatIntervalMs: options.heartbeatIntervalMs,
            heartbeatTimeoutMs: options.heartbeatTimeoutMs,
            remoteAddress: req.socket.remoteAddress ?? 'unknown',
          },
          { frame: () => undefined, drain: () => undefined, close: () => undefined },
        );
        void this.#handshake(transport);
      });
    });
    this.#server.on('tlsClientError', (err, socket) => {
      this.#log.debug({ err, remote: socket.remoteAddress }, 'tunnel TLS handshake failed');
    });
  }

  /** Listens; resolves with the bound address. */
  listen(): Promise<AddressInfo> {
    return new Promise((resolve, reject) => {
      this.#server.once('error', reject);
      this.#server.listen(this.#options.port, this.#options.host, () => {
        this.#server.off('error', reject);
        resolve(this.#server.address() as AddressInfo);
      });
    });
  }

  /** Stops accepting, drains every session (bounded by the drain timeout), closes the server. */
  async close(): Promise<void> {
    this.#shutdown.abort();
    const serverClosed = new Promise<void>((resolve) => this.#server.close(() => resolve()));
    for (const transport of this.#handshakes)
      transport.close(CloseCode.GOING_AWAY, 'gateway shutting down');
    await Promise.all(
      [...this.#sessions].map((session) =>
        session.close(this.#options.drainTimeoutMs, 'gateway shutting down'),
      ),
    );
    this.#server.closeAllConnections();
    await serverClosed;
  }

  async #handshake(transport: WebSocketTransport): Promise<void> {
    const { authority, limiter } = this.#options;
    const remote = transport.remoteAddress;
    this.#handshakes.add(transport);
    const channel = new HandshakeChannel(transport);
    try {
      if (limiter.isBlocked(remote)) {
        throw new HandshakeError(CloseCode.RATE_LIMITED, 'too many failed attempts; try later');
      }
      // Counted as a failure until it succeeds, so parallel guesses are slowed down too.
      limiter.recordFailure(remote);
      await limiter.wait(remote, this.#shutdown.signal);
      const hello = parseHello(await channel.next(this.#options.handshakeTimeoutMs));
      if (!authority.checkGatewayCredentials(hello.auth_username, hello.auth_password)) {
        throw new HandshakeError(CloseCode.UNAUTHORIZED, 'wrong gateway credentials');
      }
      const check = await authority.checkGroup(hello.group_id, hello.group_password, true);
      if (check !== 'ok') {
        throw new HandshakeError(
          CloseCode.GROUP_PASSWORD_MISMATCH,
          `group "${hello.group_id}" is bound to another password`,
        );
      }
      limiter.recordSuccess(remote);
      if (channel.closeInfo || this.#shutdown.signal.aborted) return;
      this.#startSession(transport, hello.client_id, hello.group_id, hello.replica);
    } catch (err) {
      const closeCode = err instanceof HandshakeError ? err.closeCode : CloseCode.HANDSHAKE_TIMEOUT;
      const message = err instanceof Error ? err.message : String(err);
      if (!channel.closeInfo) {
        this.#log.warn({ remote, err }, 'tunnel client refused');
        transport.close(closeCode, message);
      } else {
        this.#log.debug({ remote, err }, 'tunnel closed during handshake');
      }
    } finally {
      this.#handshakes.delete(transport);
    }
  }

  #startSession(
    transport: WebSocketTransport,
    clientId: string,
    groupId: string,
    replica: number,
  ): void {
    const { registry } = this.#options;
    const id = `${++this.#sessionCounter}`;
    const logger = this.#log.child({ session: id, client: clientId, group: groupId, replica });
    transport.send(
      encodeFrame({
        type: FrameType.HELLO_OK,
        streamId: 0,
        version: PROTOCOL_VERSION,
        info: {
          session_id: `${id}-${randomUUID()}`,
          heartbeat_interval_ms: this.#options.heartbeatIntervalMs,
          heartbeat_timeout_ms: this.#options.heartbeatTimeoutMs,
        },
      }),
    );
    const session = new Session(transport, { role: 'gateway', id, logger });
    this.#sessions.add(session);
    session.once('close', () => this.#sessions.delete(session));
    const replaced = registry.add({ session, clientId, groupId, replica });
    logger.info({ remote: transport.remoteAddress }, 'client connected');
    if (replaced) {
      logger.info(
        { replaced: replaced.session.id },
        'client reconnected; closing its previous session',
      );
      replaced.session.destroy(
        new PosternError(
          'POSTERN_ERR_SESSION_CLOSED',
          `replaced by session ${id} of the same client`,
        ),
      );
    }
  }
}
