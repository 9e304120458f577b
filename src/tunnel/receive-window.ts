/**
 * How much credit a receiver lets each of its session's streams have outstanding: the stream's
 * window. The wire format leaves this to the receiver (docs/protocol.md, "Flow control").
 *
 * Everything in flight on a tunnel waits in the same socket buffers, so the data one stream has
 * in flight is a queue every other stream's frames wait behind. Hence:
 * - A stream that has been the only one receiving DATA for LONE_STREAM_MS delays nobody, and gets
 *   WIDE_WINDOW: one transfer alone on a tunnel then moves 4 MiB per credit round trip.
 * - While another stream receives DATA, a stream gets SHARED_WINDOW, small enough that an
 *   interactive stream next to a bulk one waits behind about 64 KiB rather than a whole window.
 *   In the benchmark's fairness workload this more than halved the interactive round trip (p50
 *   1.7-2.0 -> 0.5-0.8 ms, p99 6-8 -> 3-5 ms); the bulk stream beside it dropped from about
 *   220 to 150-160 MB/s (alone, it keeps the wide window).
 * Every stream starts with INITIAL_WINDOW of credit (the protocol's constant); the window only
 * decides how much credit is granted back. A wide stream that meets company gets no new credit
 * until it has consumed its excess. Credit once granted cannot be taken back, so a stream counts
 * as wide until it is back within INITIAL_WINDOW, has received FIN or has ended; at most
 * MAX_WIDE_STREAMS streams of a session count at once, which bounds what slow readers can make
 * a session buffer, and what a newcomer can find queued ahead of it.
 */
import { INITIAL_WINDOW } from './constants.js';

export const WIDE_WINDOW = 4 * 1024 * 1024;
export const SHARED_WINDOW = 64 * 1024;
/** How long no other stream may have received DATA before a stream's window widens. */
export const LONE_STREAM_MS = 100;
export const MAX_WIDE_STREAMS = 4;

export class ReceiveWindows {
  /** The stream that received the latest DATA, and when. */
  #lastStreamId = 0;
  #lastDataAt = Number.NEGATIVE_INFINITY;
  /** When any stream other than #lastStreamId last received DATA. */
  #othersLastDataAt = Number.NEGATIVE_INFINITY;
  #wide = new Set<number>();
  #now: () => number;

  constructor(now: () => number = () => performance.now()) {
    this.#now = now;
  }

  /** DATA arrived for `streamId`. */
  noteData(streamId: number): void {
    if (streamId !== this.#lastStreamId) {
      this.#othersLastDataAt = this.#lastDataAt;
      this.#lastStreamId = streamId;
    }
    this.#lastDataAt = this.#now();
  }

  /**
   * The window `streamId` may have now, given `outstanding`: the bytes of credit it was granted
   * and has not consumed (held in its queue, in flight, or not yet used by the sender).
   */
  windowFor(streamId: number, outstanding: number): number {
    const othersLastDataAt =
      streamId === this.#lastStreamId ? this.#othersLastDataAt : this.#lastDataAt;
    const alone = this.#now() - othersLastDataAt >= LONE_STREAM_MS;
    if (alone && (this.#wide.has(streamId) || this.#wide.size < MAX_WIDE_STREAMS)) {
      this.#wide.add(streamId);
      return WIDE_WINDOW;
    }
    if (outstanding <= INITIAL_WINDOW) this.#wide.delete(streamId);
    return alone ? INITIAL_WINDOW : SHARED_WINDOW;
  }

  /**
   * The stream has ended, or will receive no more DATA (FIN): its credit no longer counts, and
   * it no longer keeps others from being alone.
   */
  release(streamId: number): void {
    this.#wide.delete(streamId);
    if (streamId === this.#lastStreamId) {
      this.#lastStreamId = 0;
      this.#lastDataAt = Number.NEGATIVE_INFINITY;
    }
  }

  /** Streams holding wide credit now. */
  get wideCount(): number {
    return this.#wide.size;
  }
}
