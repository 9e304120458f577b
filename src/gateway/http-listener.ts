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
import { StreamKind } from '../tunnel/constants.js';
import type { FrontDoorOptions } from './front-door.js';
import { HttpProxy, httpProxyServerOptions } from './http-proxy.js';

export interface HttpProxyListenerOptions extends FrontDoorOptions {
  /** Certificate and key for an HTTPS proxy (users speak TLS to the proxy); absent: plain HTTP. */
  tls?: { cert: string; key: string } | undefined;
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
        // http.Server always keeps its sockets half-open; https.Server leaves TLS's default. splice
        // makes a CONNECT user's socket half-open too, but only once the stream is open: a FIN
        // that comes while the open is under way must not close the socket either.
        allowHalfOpen: true,
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
      authenticate: async (credentials, remote, left) => {
        if (credentials === null) return noAuthGroup ?? null;
        if (limiter.isBlocked(remote)) return null;
        // Counted as a failure until it succeeds, so parallel guesses are slowed down too.
        limiter.recordFailure(remote);
        await limiter.wait(remote, left);
        const check = await authority.checkGroup(credentials.username, credentials.password, false);
        if (check !== 'ok') return null;
        limiter.recordSuccess(remote);
        return credentials.username;
      },
      open: (group, target, left) =>
        registry.open(
          group,
          { kind: StreamKind.TCP, host: target.host, port: target.port },
          { timeoutMs: openTimeoutMs, cancellation: left },
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
