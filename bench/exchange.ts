/**
 * Fixed-size request/response exchanges with the echo target: send `size` bytes, wait until
 * the same number has come back. Used for round-trip latency and for the one request each new
 * connection makes.
 */
import type { Socket } from 'node:net';

export const MESSAGE_SIZE = 64;
const MESSAGE = Buffer.alloc(MESSAGE_SIZE, 0x61);

/** One connection to an echo server, measuring each round trip in milliseconds. */
export class Echoer {
  readonly #socket: Socket;
  #awaiting = 0;
  #wake: (() => void) | null = null;
  #failure: Error | null = null;

  constructor(socket: Socket) {
    this.#socket = socket;
    socket.on('data', (chunk: Buffer) => {
      this.#awaiting -= chunk.length;
      if (this.#awaiting <= 0) this.#resume();
    });
    socket.on('error', (error) => this.#fail(error));
    socket.on('close', () => this.#fail(new Error('echo connection closed')));
  }

  /** Sends one message and resolves with the milliseconds until all of it came back. */
  async roundTrip(): Promise<number> {
    if (this.#failure) throw this.#failure;
    const started = performance.now();
    this.#awaiting = MESSAGE_SIZE;
    const echoed = new Promise<void>((resolve) => {
      this.#wake = resolve;
    });
    this.#socket.write(MESSAGE);
    await echoed;
    if (this.#failure) throw this.#failure;
    return performance.now() - started;
  }

  /** Ends the connection and waits until it has closed. */
  async close(): Promise<void> {
    if (this.#socket.destroyed) return;
    const closed = new Promise<void>((resolve) => this.#socket.once('close', () => resolve()));
    this.#socket.end();
    await closed;
  }

  #fail(error: Error): void {
    this.#failure ??= error;
    this.#resume();
  }

  #resume(): void {
    const wake = this.#wake;
    this.#wake = null;
    wake?.();
  }
}
