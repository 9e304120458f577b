/**
 * A TCP relay for e2e tests: it forwards every connection it accepts to a target port, and can
 * be frozen to simulate a black-holed network path.
 */
import { once } from 'node:events';
import { type AddressInfo, connect, createServer, type Socket } from 'node:net';

export interface TcpRelay {
  /** The port to dial instead of the target's. */
  readonly port: number;
  /** `performance.now()` when bytes were last passed on towards the target; 0 before any. */
  readonly lastForwardedToTargetAt: number;
  /**
   * Stops every byte, both ways, on every connection, now and later: the relay stops reading
   * its sockets and passes on neither data nor ends nor errors. Nothing is closed, so each
   * peer sees a silent connection, as behind a network that drops every packet.
   */
  freeze(): void;
  /** Destroys every relayed socket and stops listening. */
  close(): Promise<void>;
}

/** Starts a relay on 127.0.0.1 port 0 that forwards to `targetHost:targetPort`. */
export async function startRelay(targetPort: number, targetHost = '127.0.0.1'): Promise<TcpRelay> {
  const sockets = new Set<Socket>();
  let frozen = false;
  let lastForwardedToTargetAt = 0;

  const track = (socket: Socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
    if (frozen) socket.pause();
  };

  /** Copies `from` into `to` with backpressure; an end or error is passed on unless frozen. */
  const forward = (from: Socket, to: Socket, onForward: () => void) => {
    from.on('data', (chunk: Buffer) => {
      onForward();
      if (!to.write(chunk)) from.pause();
    });
    to.on('drain', () => {
      if (!frozen) from.resume();
    });
    from.once('end', () => {
      if (!frozen) to.end();
    });
    from.on('error', (err) => {
      if (!frozen) to.destroy(err);
    });
    from.once('close', () => {
      if (!frozen) to.destroy();
    });
  };

  const server = createServer({ allowHalfOpen: true }, (inbound) => {
    const outbound = connect({ port: targetPort, host: targetHost, allowHalfOpen: true });
    track(inbound);
    track(outbound);
    forward(inbound, outbound, () => {
      lastForwardedToTargetAt = performance.now();
    });
    forward(outbound, inbound, () => undefined);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');

  return {
    port: (server.address() as AddressInfo).port,
    get lastForwardedToTargetAt() {
      return lastForwardedToTargetAt;
    },
    freeze() {
      frozen = true;
      for (const socket of sockets) socket.pause();
    },
    async close() {
      server.close();
      for (const socket of sockets) socket.destroy();
      await once(server, 'close');
    },
  };
}
