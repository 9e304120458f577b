/**
 * The HTTP and HTTPS proxy front doors: a Node http (or https) server whose requests are
 * authenticated by group credentials and carried, by the group they select, through a client's
 * tunnel. The protocol lives in `http-proxy.ts`; this file owns the server and says who may use
 * it: only `allowedSources` when set, and without credentials the `noAuthGroup` when set (a
 * request that carries credentials is checked as usual and gets the group they select).
 */
import { createServer as createHttpServer, type Server as HttpServer } from 'node:http';
import { createServer as createHttpsServer, type Server as HttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import type { Logger } from '../observability/logger.js';
import { StreamKind } from '../tunnel/constants.js';
import type { FailureLimiter, GroupAuthority } from './auth.js';
import { HttpProxy, httpProxyServerOptions } from './http-proxy.js';
import type { SessionRegistry } from './registry.js';
import type { SourceGuard } from './source-filter.js';

export interface HttpProxyListenerOptions {
  host: string;
  port: number;
  /** Certificate and key for an HTTPS proxy (users speak TLS to the proxy); absent: plain HTTP. */
  tls?: { cert: string; key: string } | undefined;
  authority: GroupAuthority;
  limiter: FailureLimiter;
  registry: SessionRegistry;
  openTimeoutMs: number;
  /** Deadline for the TLS handshake and for each request head; not for bodies or tunnels. */
  handshakeTimeoutMs: number;
  /** Closes connections from sources outside `allowed_sources` as they are accepted. */
  guard?: SourceGuard | undefined;
  /** The group of requests without `Proxy-Authorization`; absent: such requests get 407. */
  noAuthGroup?: string | undefined;
  logger: Logger;
}

export class HttpProxyListener {
  #options: HttpProxyListenerOptions;
  #server: HttpServer | HttpsServer;
  #proxy: HttpProxy;
  #closing: Promise<void> | undefined;

  constructor(options: HttpProxyListenerOptions) {
    this.#options = options;
    const { authority, limiter, registry, openTimeoutMs, handshakeTimeoutMs, logger } = options;
    const { guard, noAuthGroup } = options;
    const serverOptions = httpProxyServerOptions(handshakeTimeoutMs);
    if (options.tls === undefined) {
      this.#server = createHttpServer(serverOptions);
    } else {
      const server = createHttpsServer({
        ...serverOptions,
        cert: options.tls.cert,
        key: options.tls.key,
        handshakeTimeout: handshakeTimeoutMs,
      });
      server.on('tlsClientError', (error, socket) => {
        logger.debug(
          { err: error, remote: socket.remoteAddress },
          'https proxy tls handshake failed',
        );
      });
      this.#server = server;
    }
    // Before the proxy attaches, so a refused connection never reaches TLS or the HTTP parser.
    guard?.install(this.#server);
    this.#proxy = new HttpProxy(this.#server, {
      logger,
      authenticate: async (credentials, remote, signal) => {
        if (credentials === null) return noAuthGroup ?? null;
        if (limiter.isBlocked(remote)) return null;
        await limiter.wait(remote, signal);
        const check = await authority.checkGroup(credentials.username, credentials.password, false);
        if (check === 'ok') {
          limiter.recordSuccess(remote);
          return credentials.username;
        }
        limiter.recordFailure(remote);
        return null;
      },
      open: (group, target, signal) =>
        registry.open(
          group,
          { kind: StreamKind.TCP, host: target.host, port: target.port },
          { timeoutMs: openTimeoutMs, signal },
        ),
    });
  }

  listen(): Promise<AddressInfo> {
    const server = this.#server;
    return new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.#options.port, this.#options.host, () => {
        server.off('error', reject);
        resolve(server.address() as AddressInfo);
      });
    });
  }

  /**
   * Stops accepting and ends keep-alive (idle connections now, busy ones after their response);
   * resolves when every connection has closed. CONNECT tunnels end with their streams, which the
   * gateway drains and resets. Idempotent.
   */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      const closed = new Promise<void>((resolve) => this.#server.close(() => resolve()));
      this.#proxy.drain();
      await closed;
      await this.#proxy.settled();
    })();
    return this.#closing;
  }
}
