/**
 * The relay of a front door's user: splice() the user's socket to the tunnel stream, then log
 * how it ended, in one line: at debug when both directions finished cleanly, at info with who
 * cut it (the side whose error came first) when they did not.
 */
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { Log } from '../observability/logger.js';
import { splice } from '../tunnel/splice.js';

export interface RelayMessages {
  closed: string;
  reset: string;
}

/** Resolves when the relay has ended and its line is logged. Never rejects. */
export function relayUser(
  socket: Socket,
  stream: Duplex,
  log: Log,
  messages: RelayMessages,
): Promise<void> {
  // Whichever side fails first cut the relay; the other side's error is the echo of it.
  let cut: { by: 'user' | 'tunnel'; error: Error } | undefined;
  stream.on('error', (error) => {
    cut ??= { by: 'tunnel', error };
  });
  socket.on('error', (error) => {
    cut ??= { by: 'user', error };
  });
  return splice(socket, stream).then(() => {
    const bytes = { fromUser: socket.bytesRead, toUser: socket.bytesWritten };
    if (stream.readableEnded && stream.writableFinished && cut === undefined) {
      log.debug(bytes, messages.closed);
    } else {
      // No error on either side yet incomplete: the stream was reset without one.
      log.info({ ...bytes, cutBy: cut?.by ?? 'tunnel', err: cut?.error }, messages.reset);
    }
  });
}
