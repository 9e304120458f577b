/**
 * The SOCKS5 front door: a TCP listener whose connections speak SOCKS5 and are routed, by the
 * group their credentials select, through a client's tunnel. With `allowedSources`, only those
 * sources are served; with `noAuthGroup`, a user who offers no credentials is routed to that
 * group, and one who offers credentials is checked as usual and gets the group they select.
 */
import { type AddressInfo, createServer, type Server, type Socket } from 'node:net';
import { deferredChild } from '../observability/logger.js';
import { StreamKind } from '../tunnel/constants.js';
import type { FrontDoorOptions } from './front-door.js';
import { serveSocks5 } from './socks5.js';

export type Socks5ListenerOptions = FrontDoorOptions;

export class Socks5Listener {
  #options: Socks5ListenerOptions;
  #server: Server;
  #connections = new Set<Promise<void>>();
  #connectionCounter = 0;

  constructor(options: Socks5ListenerOptions) {
    this.#options = options;
    this.#server = createServer({ allowHalfOpen: true, noDelay: true }, (socket) =>
      this.#serve(socket),
    );
  }

  listen(): Promise<AddressInfo> {
    return new Promise((resolve, reject) => {
      this.#server.once('error', reject);
      this.#server.listen(this.#options.port, this.#options.host, () => {
        this.#server.off('error', reject);
        resolve(this.#server.address() as AddressInfo);
      });
    });
  }

  /** Stops accepting; resolves when every connection it served has finished. */
  async close(): Promise<void> {
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
    await Promise.all(this.#connections);
  }

  #serve(socket: Socket): void {
    const { authority, limiter, registry, openTimeoutMs, handshakeTimeoutMs, guard, noAuthGroup } =
      this.#options;
    if (guard !== undefined && !guard.admit(socket)) return;
    const remote = socket.remoteAddress ?? 'unknown';
    const logger = deferredChild(this.#options.logger, { conn: ++this.#connectionCounter, remote });
    const done = serveSocks5(socket, {
      handshakeTimeoutMs,
      logger,
      ...(noAuthGroup === undefined ? {} : { noAuthGroup }),
      authenticate: async (username, password) => {
        if (limiter.isBlocked(remote)) return null;
        // Counted as a failure until it succeeds, so parallel guesses are slowed down too.
        limiter.recordFailure(remote);
        await limiter.wait(remote, handshakeTimeoutMs);
        const check = await authority.checkGroup(username, password, false);
        if (check !== 'ok') return null;
        limiter.recordSuccess(remote);
        return username;
      },
      connect: (group, target, cancellation) =>
        registry.open(
          group,
          { kind: StreamKind.TCP, host: target.host, port: target.port },
          { timeoutMs: openTimeoutMs, cancellation },
        ),
    });
    this.#connections.add(done);
    void done.then(() => this.#connections.delete(done));
  }
}
