/**
 * Reading a socket into the tunnel without a new buffer per read.
 *
 * Node normally allocates a fresh 64 KiB ArrayBuffer for every socket read and emits it as
 * 'data'. At bulk rates that costs about 10 µs a read: the allocation, the garbage collections
 * it drives as external memory, and the Readable machinery. That is about 6% of a core at
 * 400 MB/s. With `onread`, Node reads into a buffer it is given and calls back instead.
 *
 * Every DirectReader's socket reads into the same process-wide buffer. Reads run one at a time
 * on the event loop, and each read's bytes are passed on before the callback returns: copied
 * into DATA frames, or copied and queued. So the next read can reuse the buffer.
 *
 * Node takes `onread` only in `net.connect`, not for sockets a server accepts. So the client's
 * dialled targets read this way (the download direction); the gateway's users cannot.
 */
import type { Socket } from 'node:net';
import type { Writable } from 'node:stream';

/** What every DirectReader's socket reads into; 64 KiB, as Node's own reads. */
const SHARED_READ_BUFFER = Buffer.allocUnsafe(64 * 1024);

/** A writer that has copied or sent borrowed bytes by the time it returns. */
export interface BorrowingWritable extends Writable {
  /** As `write()`, but `data` is reused by the caller as soon as this returns. */
  writeBorrowed(data: Buffer): boolean;
}

export class DirectReader {
  /** Bytes read before `relay` began, copied; the socket stops reading meanwhile. */
  #early: Buffer[] | undefined;
  #socket: Socket | undefined;
  #to: BorrowingWritable | undefined;

  /** The `onread` option for `net.connect`. Returning false stops the socket reading. */
  onread(): { buffer: Buffer; callback: (length: number, buffer: Uint8Array) => boolean } {
    return {
      buffer: SHARED_READ_BUFFER,
      callback: (length, buffer) => this.#onRead((buffer as Buffer).subarray(0, length)),
    };
  }

  /**
   * Moves what `socket` reads into `to` and ends `to` after the last byte, as `pipe()` would: the
   * socket stops reading while `to` is above its high-water mark and resumes on 'drain'. Errors
   * and closes are the caller's business.
   */
  relay(socket: Socket, to: BorrowingWritable): void {
    this.#socket = socket;
    let room = true;
    for (const data of this.#early ?? []) room = to.write(data);
    this.#early = undefined;
    this.#to = to;
    // A socket that ended before the relay began (its FIN read with the early bytes) ends `to` now.
    if (socket.readableEnded) {
      to.end();
      return;
    }
    socket.on('end', () => to.end());
    if (room) socket.resume();
    else this.#resumeOnDrain();
  }

  #onRead(data: Buffer): boolean {
    if (!this.#to) {
      // Returning false stops the reads, so this is normally the only early buffer.
      this.#early ??= [];
      this.#early.push(Buffer.from(data));
      return false;
    }
    if (this.#to.writeBorrowed(data)) return true;
    this.#resumeOnDrain();
    return false;
  }

  /** The drain listener is made per wait: an idle relay holds none. */
  #resumeOnDrain(): void {
    const socket = this.#socket!;
    this.#to!.once('drain', () => socket.resume());
  }
}
