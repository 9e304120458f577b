/**
 * The sockets a benchmark target or relay process holds: counted for `openStreams` and `idle`,
 * destroyed on close. A peer that resets is part of the job (the endless source is stopped that
 * way), so a socket error only destroys that socket. Also how the two bare relays join a pair.
 */
import type { Socket } from 'node:net';
import { waitUntil } from './wait.js';

export class HeldSockets {
  readonly #sockets = new Set<Socket>();

  get size(): number {
    return this.#sockets.size;
  }

  /** Counts `socket` as held until it closes. */
  track<S extends Socket>(socket: S): S {
    this.#sockets.add(socket);
    socket.once('close', () => this.#sockets.delete(socket));
    socket.on('error', () => socket.destroy());
    return socket;
  }

  /** Resolves once this process holds at least `count` sockets (0: none at all, see `idle`). */
  holding(count: number, what: string): Promise<void> {
    return waitUntil(() => this.#sockets.size >= count, what);
  }

  /** Resolves once every held socket has closed. */
  idle(what: string): Promise<void> {
    return waitUntil(() => this.#sockets.size === 0, what);
  }

  destroyAll(): void {
    for (const socket of this.#sockets) socket.destroy();
  }
}

/**
 * Pipes two half-open sockets both ways: a FIN from one side ends the other's writing only (the
 * benchmark's download asks with a request and a FIN, then reads); an error destroys both.
 */
export function join(a: Socket, b: Socket): void {
  a.on('error', () => b.destroy());
  b.on('error', () => a.destroy());
  a.pipe(b);
  b.pipe(a);
}
