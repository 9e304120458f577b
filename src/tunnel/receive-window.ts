/**
 * How much credit a receiver lets each of its session's streams have outstanding.
 *
 * Every stream starts with INITIAL_WINDOW, and that is what it keeps while other streams of the
 * session carry data: everything in flight on the tunnel waits in the same socket buffers, so a
 * small window is what keeps an interactive stream's reply from queuing behind a bulk one. A
 * stream that has been the only one receiving DATA for LONE_STREAM_MS has nobody to queue
 * behind it, and gets WIDE_WINDOW: one transfer alone on a tunnel is then bounded by a 4 MiB
 * window per credit round trip rather than 256 KiB (measured in docs/performance.md).
 *
 * As soon as another stream receives DATA, a wide stream gets no more credit until it is back
 * within INITIAL_WINDOW, so the other stream waits behind at most one wide window of data, once.
 * Credit once granted cannot be taken back, so a stream keeps its wide status until it has
 * consumed down to INITIAL_WINDOW or has ended; at most MAX_WIDE_STREAMS streams of a session
 * hold it at once, which bounds what slow readers can make a session buffer.
 */
import { INITIAL_WINDOW } from './constants.js';

export const WIDE_WINDOW = 4 * 1024 * 1024;
/** How long a stream must have been the only one receiving DATA before its window widens. */
export const LONE_STREAM_MS = 100;
export const MAX_WIDE_STREAMS = 4;

export class ReceiveWindows {
  #lastStreamId = 0;
  /** When the stream that received the last DATA started being the only one to receive any. */
  #aloneSince = 0;
  #wide = new Set<number>();
  #now: () => number;

  constructor(now: () => number = () => performance.now()) {
    this.#now = now;
  }

  /** DATA arrived for `streamId`. */
  noteData(streamId: number): void {
    if (streamId === this.#lastStreamId) return;
    this.#lastStreamId = streamId;
    this.#aloneSince = this.#now();
  }

  /**
   * The window `streamId` may have now, given `outstanding`: the bytes of credit it was granted
   * and has not consumed (held in its queue, in flight, or not yet used by the sender).
   */
  windowFor(streamId: number, outstanding: number): number {
    const alone =
      streamId === this.#lastStreamId && this.#now() - this.#aloneSince >= LONE_STREAM_MS;
    if (alone && (this.#wide.has(streamId) || this.#wide.size < MAX_WIDE_STREAMS)) {
      this.#wide.add(streamId);
      return WIDE_WINDOW;
    }
    if (outstanding <= INITIAL_WINDOW) this.#wide.delete(streamId);
    return INITIAL_WINDOW;
  }

  /** The stream has ended; its credit no longer counts. */
  release(streamId: number): void {
    this.#wide.delete(streamId);
  }

  /** Streams holding wide credit now. */
  get wideCount(): number {
    return this.#wide.size;
  }
}
