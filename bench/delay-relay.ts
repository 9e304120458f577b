/**
 * A TCP relay on 127.0.0.1 that holds every chunk for a fixed time before passing it on, in
 * each direction: a long network path on loopback, with a round trip of twice the delay and
 * no bandwidth limit. Each direction holds at most `maxHeldBytes` (received, not yet passed on
 * or not yet taken by the kernel) before it stops reading, as a path's buffers fill; an end
 * travels behind the data before it, and an error on either side destroys both.
 */
import { once } from 'node:events';
import { type AddressInfo, connect, createServer, type Socket } from 'node:net';

export interface DelayRelay {
  /** The port to dial instead of the target's. */
  readonly port: number;
  /** Destroys every relayed socket and stops listening. */
  close(): Promise<void>;
}

const DEFAULT_MAX_HELD_BYTES = 64 * 1024 * 1024;

/** Passes `from`'s bytes and end on to `to`, each `delayMs` after it arrived. */
function forwardDelayed(from: Socket, to: Socket, delayMs: number, maxHeldBytes: number): void {
  /** In arrival order; a null chunk is the end. */
  const held: { chunk: Buffer | null; due: number }[] = [];
  let heldBytes = 0;
  let timer: NodeJS.Timeout | undefined;
  const full = () => heldBytes + to.writableLength >= maxHeldBytes;
  const hold = (chunk: Buffer | null) => {
    held.push({ chunk, due: performance.now() + delayMs });
    timer ??= setTimeout(release, delayMs);
  };
  const release = () => {
    timer = undefined;
    const now = performance.now();
    while (held.length > 0 && held[0]!.due <= now) {
      const { chunk } = held.shift()!;
      if (chunk === null) {
        to.end();
      } else {
        heldBytes -= chunk.length;
        to.write(chunk);
      }
    }
    if (held.length > 0) timer = setTimeout(release, held[0]!.due - now);
    if (!full()) from.resume();
  };
  from.on('data', (chunk: Buffer) => {
    heldBytes += chunk.length;
    hold(chunk);
    if (full()) from.pause();
  });
  from.once('end', () => hold(null));
  to.on('drain', () => {
    if (!full()) from.resume();
  });
  // Once the far side is gone nothing held can be passed on.
  to.once('close', () => {
    clearTimeout(timer);
    held.length = 0;
  });
}

/** Starts a relay that forwards every connection to 127.0.0.1:`targetPort`, `delayMs` each way. */
export async function startDelayRelay(
  targetPort: number,
  delayMs: number,
  maxHeldBytes = DEFAULT_MAX_HELD_BYTES,
): Promise<DelayRelay> {
  const sockets = new Set<Socket>();
  const track = (socket: Socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
  };
  const server = createServer({ allowHalfOpen: true, noDelay: true }, (user) => {
    const target = connect({
      host: '127.0.0.1',
      port: targetPort,
      allowHalfOpen: true,
      noDelay: true,
    });
    track(user);
    track(target);
    // An orderly end travels with the data; a failure ends both sides at once.
    user.on('error', () => target.destroy());
    target.on('error', () => user.destroy());
    forwardDelayed(user, target, delayMs, maxHeldBytes);
    forwardDelayed(target, user, delayMs, maxHeldBytes);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  // After listening, a failed accept (EMFILE) is reported; the relay goes on.
  server.on('error', (error) => process.stderr.write(`delay relay: ${error.message}\n`));
  return {
    port: (server.address() as AddressInfo).port,
    async close() {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
