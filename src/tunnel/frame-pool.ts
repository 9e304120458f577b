/**
 * Reused buffers for large outgoing DATA frames.
 *
 * Every ArrayBuffer Node allocates counts as external memory in V8, and each 64 MiB of it
 * forces a garbage collection. At bulk rates a fresh 64 KiB buffer per encoded frame meant a
 * full (mark-compact) collection about every 100 ms in gateway and client, a fifth of their
 * CPU time and the longest pauses an interactive stream sees. A frame's buffer comes back here
 * once the transport has written its bytes; the free list is bounded, so a burst leaves at
 * most `maxFree` buffers behind.
 */
import { HEADER_SIZE, MAX_DATA_PAYLOAD } from './constants.js';

export class FrameBufferPool {
  readonly bufferSize: number;
  #maxFree: number;
  #free: Buffer[] = [];

  constructor(bufferSize: number, maxFree: number) {
    this.bufferSize = bufferSize;
    this.#maxFree = maxFree;
  }

  /** Buffers waiting to be reused. */
  get freeCount(): number {
    return this.#free.length;
  }

  /** A buffer of `bufferSize` bytes with unspecified contents. */
  take(): Buffer {
    return this.#free.pop() ?? Buffer.allocUnsafeSlow(this.bufferSize);
  }

  /** Hands a buffer from `take()` back. Its holder must not touch it afterwards. */
  give(buffer: Buffer): void {
    if (buffer.length !== this.bufferSize) {
      throw new RangeError(`pool holds ${this.bufferSize}-byte buffers, got ${buffer.length}`);
    }
    if (this.#free.length < this.#maxFree) this.#free.push(buffer);
  }
}

/**
 * DATA frames at least this large use pooled buffers. Smaller ones come from Node's shared
 * 8 KiB slab (Buffer.allocUnsafe below 4 KiB), which allocates no ArrayBuffer of its own.
 */
export const POOLED_FRAME_MIN = 4 * 1024;

/** One pool per process, shared by every session: 32 buffers are 2 MiB at most. */
export const dataFramePool = new FrameBufferPool(HEADER_SIZE + MAX_DATA_PAYLOAD, 32);
