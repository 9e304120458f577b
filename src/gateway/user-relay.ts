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
  return splice(socket, stream).then((cut) => {
    const bytes = { fromUser: socket.bytesRead, toUser: socket.bytesWritten };
    if (stream.readableEnded && stream.writableFinished && cut === undefined) {
      log.debug(bytes, messages.closed);
      return;
    }
    // No error on either side yet incomplete: the stream was reset without one.
    const cutBy = cut?.by === 'socket' ? 'user' : 'tunnel';
    log.info({ ...bytes, cutBy, err: cut?.error }, messages.reset);
  });
}
