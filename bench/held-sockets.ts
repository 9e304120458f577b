/**
 * The sockets a benchmark target or relay process holds: counted for `openStreams` and `idle`,
 * destroyed on close. A socket error destroys that socket. For a target a peer that resets is
 * part of the job (the endless source is stopped that way); a relay names itself, and the first
 * error of each kind goes to stderr, so that a relay that cannot connect shows as that and not
 * as a wrong figure. Also how the two bare relays join a pair.
 */
import type { Socket } from 'node:net';
import { waitUntil } from './wait.js';

export class HeldSockets {
  readonly #sockets = new Set<Socket>();
  readonly #reportAs: string | undefined;
  /** Error codes already written to stderr: a burst of resets prints one line. */
  readonly #reported = new Set<string>();

  /** With `reportAs`, socket errors are reported under that name (see above). */
  constructor(reportAs?: string) {
    this.#reportAs = reportAs;
  }

  get size(): number {
    return this.#sockets.size;
  }

  /** Counts `socket` as held until it closes. */
  track<S extends Socket>(socket: S): S {
    this.#sockets.add(socket);
    socket.once('close', () => this.#sockets.delete(socket));
    socket.on('error', (error: NodeJS.ErrnoException) => {
      this.#report(error);
      socket.destroy();
    });
    return socket;
  }

  /** Resolves once this process holds at least `count` sockets (`idle` waits for none). */
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

  #report(error: NodeJS.ErrnoException): void {
    const kind = error.code ?? error.message;
    if (this.#reportAs === undefined || this.#reported.has(kind)) return;
    this.#reported.add(kind);
    process.stderr.write(`${this.#reportAs}: socket error ${kind} (each kind shown once)\n`);
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
