/**
 * Joins a user's (or target's) TCP socket to a tunnel stream, both ways, with backpressure and
 * half-close. A failure on one side is passed on as a failure, never as a clean end: a reset
 * stream resets the socket (TCP RST), a reset socket resets the stream.
 *
 * The relay is hand-rolled rather than two `pipe()` calls: an idle proxied connection lives for
 * hours, and each pipe() keeps nine closures and four once-wrappers per direction. Here a spliced
 * pair holds eight listeners; a 'drain' listener exists only while a writer is full.
 */
import type { Socket } from 'node:net';
import type { Duplex, Readable, Writable } from 'node:stream';
import { TLSSocket } from 'node:tls';
import type { BorrowingWritable, DirectReader } from './direct-read.js';

/** Which side failed first; the other side's error, if any, is the echo of it. */
export interface SpliceCut {
  by: 'socket' | 'stream';
  error: Error;
}

/**
 * Resolves once both the socket and the stream have closed, with the first failure (undefined
 * when neither side failed). Never rejects. A socket made with a DirectReader's `onread` is
 * read through that reader, into `stream.writeBorrowed`.
 */
export function splice(socket: Socket, stream: Duplex): Promise<SpliceCut | undefined>;
export function splice(
  socket: Socket,
  stream: Duplex & BorrowingWritable,
  reader: DirectReader,
): Promise<SpliceCut | undefined>;
export function splice(
  socket: Socket,
  stream: Duplex,
  reader?: DirectReader,
): Promise<SpliceCut | undefined> {
  return new Promise((resolve) => {
    // A FIN is passed on as the stream's FIN and nothing more, so the socket must stay half-open:
    // with Node's default, its FIN would also end its write side, and its 'close' would reset a
    // stream whose other direction is still busy (docs/protocol.md section 6).
    socket.allowHalfOpen = true;
    const bothWaysDone = () => stream.writableEnded && stream.readableEnded;
    let open = 2;
    let cut: SpliceCut | undefined;
    socket.on('error', (error) => {
      cut ??= { by: 'socket', error };
      if (!stream.destroyed) stream.destroy(error);
    });
    stream.on('error', (error) => {
      cut ??= { by: 'stream', error };
      resetSocket(socket);
    });
    // The overloads only take a reader together with a BorrowingWritable stream.
    if (reader) reader.relay(socket, stream as Duplex & BorrowingWritable);
    else relay(socket, stream);
    relay(stream, socket);
    const socketClosed = () => {
      // A socket that closed before both directions finished cut the stream short.
      if (!stream.destroyed && !bothWaysDone()) stream.destroy();
      if (--open === 0) resolve(cut);
    };
    const streamClosed = () => {
      if (!bothWaysDone()) resetSocket(socket);
      if (--open === 0) resolve(cut);
    };
    // A side that closed before the splice began emits no 'close' again.
    if (socket.closed) queueMicrotask(socketClosed);
    else socket.on('close', socketClosed);
    if (stream.closed) queueMicrotask(streamClosed);
    else stream.on('close', streamClosed);
  });
}

/**
 * Moves what `from` reads into `to` and ends `to` after the last byte, as `from.pipe(to)` does:
 * `from` pauses while `to` is above its high-water mark and resumes on its 'drain'. Errors and
 * closes are the caller's business.
 */
function relay(from: Readable, to: Writable): void {
  from.on('data', (chunk: Buffer) => {
    if (!to.write(chunk)) pauseUntilDrain(from, to);
  });
  from.on('end', () => {
    to.end();
  });
  // A reader that ended before the relay began (a FIN read during a handshake) ends `to` now.
  if (from.readableEnded) {
    to.end();
    return;
  }
  // Bytes already buffered (read past a handshake) flow first; a reader left paused is resumed.
  if (to.writableNeedDrain) pauseUntilDrain(from, to);
  else from.resume();
}

/** The drain listener is made per wait, not per relay: an idle relay holds none. */
function pauseUntilDrain(from: Readable, to: Writable): void {
  from.pause();
  to.once('drain', () => from.resume());
}

/**
 * Ends a socket with a TCP RST where that is possible, so the peer sees a failure, never a clean
 * end. Two cases cannot be reset and are destroyed plainly:
 * - a TLS socket (the HTTPS proxy's users): its handle is not TCP and Node refuses the reset; a
 *   TLS peer still sees the cut, as the close comes without close_notify;
 * - a socket whose shutdown (FIN) is in flight: libuv refuses the reset (EINVAL) and Node then
 *   never emits 'close'. That is the case once `end()` has flushed everything (nothing is left
 *   in `writableLength`); with bytes still queued the shutdown has not been issued yet, and a
 *   reset is what keeps the user from taking the cut reply for a complete one.
 */
export function resetSocket(socket: Socket): void {
  if (socket.destroyed) return;
  const shutdownInFlight =
    socket.writableEnded && !socket.writableFinished && socket.writableLength === 0;
  if (socket instanceof TLSSocket || shutdownInFlight) socket.destroy();
  else socket.resetAndDestroy();
}
