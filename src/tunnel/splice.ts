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
    if (!socket.destroyed) socket.resetAndDestroy();
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
      if (!socket.destroyed && !bothWaysDone()) socket.resetAndDestroy();
      resolve();
    });
  });
  return Promise.all([socketClosed, streamClosed]).then(() => undefined);
}
