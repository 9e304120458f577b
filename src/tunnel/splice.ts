/**
 * Joins a user's (or target's) TCP socket to a tunnel stream, both ways, with backpressure and
 * half-close. A failure on one side is passed on as a failure, never as a clean end: a reset
 * stream resets the socket (TCP RST), a reset socket resets the stream.
 */
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';

/** Resolves once both the socket and the stream have closed. Never rejects. */
export function splice(socket: Socket, stream: Duplex): Promise<void> {
  const bothWaysDone = () => stream.writableEnded && stream.readableEnded;
  socket.on('error', (err) => {
    if (!stream.destroyed) stream.destroy(err);
  });
  stream.on('error', () => {
    resetSocket(socket);
  });
  socket.pipe(stream);
  stream.pipe(socket);
  const socketClosed = new Promise<void>((resolve) => {
    socket.once('close', () => {
      // A socket that closed before both directions finished cut the stream short.
      if (!stream.destroyed && !bothWaysDone()) stream.destroy();
      resolve();
    });
  });
  const streamClosed = new Promise<void>((resolve) => {
    stream.once('close', () => {
      if (!bothWaysDone()) resetSocket(socket);
      resolve();
    });
  });
  return Promise.all([socketClosed, streamClosed]).then(() => undefined);
}

/**
 * Ends a socket with a TCP RST where the kernel allows it. libuv refuses to reset a socket whose
 * shutdown (FIN) is still in flight (EINVAL) and Node then never emits 'close' for it, so such a
 * socket is destroyed plainly: its FIN is on the way and the kernel answers any further data from
 * the peer with a RST.
 */
export function resetSocket(socket: Socket): void {
  if (socket.destroyed) return;
  if (socket.writableEnded && !socket.writableFinished) socket.destroy();
  else socket.resetAndDestroy();
}
