/**
 * How much credit a receiver lets each of its session's streams have outstanding: the stream's
 * window. The wire format leaves this to the receiver (docs/protocol.md, "Flow control").
 *
 * Everything in flight on a tunnel waits in the same socket buffers, so the data one stream has
 * in flight is a queue every other stream's frames wait behind. Hence:
 * - A stream that has been the only one receiving DATA for LONE_STREAM_MS delays nobody, and gets
 *   WIDE_WINDOW: one transfer alone on a tunnel then moves 4 MiB per credit round trip.
 * - A stream counts as a transfer while it has received more than TRANSFER_BYTES within the
 *   current or the previous TRANSFER_EPOCH_MS; any other stream receiving DATA is interactive.
 *   Classing by rate, not by frame size, keeps an exchange with large replies interactive, and
 *   the threshold is low enough that a transfer reaches it even on SHARED_WINDOW over a credit
 *   round trip of 250 ms.
 * - While an interactive stream receives DATA beside it, a stream gets SHARED_WINDOW, small
 *   enough that the interactive stream waits behind about 64 KiB rather than a whole window. In
 *   the benchmark's fairness workload this more than halved the interactive round trip (p50
 *   1.7-2.0 -> 0.5-0.8 ms, p99 6-8 -> 3-5 ms); the bulk stream beside it dropped from about 220
 *   to 150-160 MB/s. An interactive stream itself gets SHARED_WINDOW in any company.
 * - Transfers with only transfers beside them share WIDE_WINDOW: each gets WIDE_WINDOW divided by
 *   the number of transfers, and no less than INITIAL_WINDOW. With SHARED_WINDOW each, two
 *   downloads at once carried about two thirds of what one carried alone.
 * Every stream starts with INITIAL_WINDOW of credit (the protocol's constant); the window only
 * decides how much credit is granted back. A wide stream that meets company gets no new credit
 * until it has consumed its excess. Credit once granted cannot be taken back, so a stream counts
 * as wide until it is back within INITIAL_WINDOW, has received FIN or has ended; at most
 * MAX_WIDE_STREAMS streams of a session count at once, which bounds what slow readers can make
 * a session buffer, and what a newcomer can find queued ahead of it.
 * Every step is O(1) per DATA frame and per grant: the number of transfers is counted per epoch,
 * not by looking at every stream.
 */
import { INITIAL_WINDOW } from './constants.js';

export const WIDE_WINDOW = 4 * 1024 * 1024;
export const SHARED_WINDOW = 64 * 1024;
/** How long no other stream may have received DATA before a stream's window widens. */
export const LONE_STREAM_MS = 100;
export const MAX_WIDE_STREAMS = 4;
/** A stream that receives more than TRANSFER_BYTES within TRANSFER_EPOCH_MS is a transfer. */
export const TRANSFER_BYTES = INITIAL_WINDOW;
export const TRANSFER_EPOCH_MS = 1000;

/**
 * The latest DATA of a class of streams: when each of the RECENT_STREAMS streams heard from last
 * received it. Enough to tell when any stream other than a given one last received DATA, and to
 * forget a stream without forgetting the others.
 */
class LatestData {
  static readonly RECENT_STREAMS = 4;
  /** Most recent first; one entry per stream. */
  #recent: { streamId: number; at: number }[] = [];

  note(streamId: number, now: number): void {
    const first = this.#recent[0];
    if (first?.streamId === streamId) {
      first.at = now;
      return;
    }
    this.forget(streamId);
    this.#recent.unshift({ streamId, at: now });
    if (this.#recent.length > LatestData.RECENT_STREAMS) this.#recent.pop();
  }

  /** When a stream other than `streamId` last received DATA. */
  othersAt(streamId: number): number {
    const other = this.#recent[0]?.streamId === streamId ? this.#recent[1] : this.#recent[0];
    return other?.at ?? Number.NEGATIVE_INFINITY;
  }

  /** What `streamId` received no longer counts; what the others received still does. */
  forget(streamId: number): void {
    const index = this.#recent.findIndex((entry) => entry.streamId === streamId);
    if (index >= 0) this.#recent.splice(index, 1);
  }
}

/** A stream's received bytes in the epoch it last received DATA and the one before. */
interface StreamRate {
  epoch: number;
  bytes: number;
  previousBytes: number;
}

export class ReceiveWindows {
  #anyData = new LatestData();
  #interactiveData = new LatestData();
  #rates = new Map<number, StreamRate>();
  /** Epochs count TRANSFER_EPOCH_MS from the first DATA. */
  #epochStart = Number.NEGATIVE_INFINITY;
  #epoch = 0;
  /** Streams that were transfers in the current epoch, and in the one before. */
  #transfers = 0;
  #previousTransfers = 0;
  #wide = new Set<number>();
  #now: () => number;

  constructor(now: () => number = () => performance.now()) {
    this.#now = now;
  }

  /** A DATA frame of `length` payload bytes arrived for `streamId`. */
  noteData(streamId: number, length: number): void {
    const now = this.#now();
    this.#anyData.note(streamId, now);
    this.#advanceEpoch(now);
    let rate = this.#rates.get(streamId);
    if (rate === undefined) {
      rate = { epoch: this.#epoch, bytes: 0, previousBytes: 0 };
      this.#rates.set(streamId, rate);
    } else if (rate.epoch !== this.#epoch) {
      rate.previousBytes = rate.epoch === this.#epoch - 1 ? rate.bytes : 0;
      rate.bytes = 0;
      rate.epoch = this.#epoch;
    }
    const wasTransfer = rate.bytes > TRANSFER_BYTES;
    rate.bytes += length;
    if (!wasTransfer && rate.bytes > TRANSFER_BYTES) {
      this.#transfers += 1;
      // Its first bytes were not an interactive stream's after all.
      this.#interactiveData.forget(streamId);
    }
    if (!this.#isTransfer(rate)) this.#interactiveData.note(streamId, now);
  }

  /**
   * The window `streamId` may have now, given `outstanding`: the bytes of credit it was granted
   * and has not consumed (held in its queue, in flight, or not yet used by the sender).
   */
  windowFor(streamId: number, outstanding: number): number {
    const window = this.#wanted(streamId, this.#now());
    if (
      window > INITIAL_WINDOW &&
      (this.#wide.has(streamId) || this.#wide.size < MAX_WIDE_STREAMS)
    ) {
      this.#wide.add(streamId);
      return window;
    }
    if (outstanding <= INITIAL_WINDOW) this.#wide.delete(streamId);
    return Math.min(window, INITIAL_WINDOW);
  }

  /**
   * The stream has ended, or will receive no more DATA (FIN): its credit no longer counts, and
   * it no longer keeps others from being alone. It may still count among the epoch's transfers,
   * which only makes the others' shares smaller until the epoch after next.
   */
  release(streamId: number): void {
    this.#wide.delete(streamId);
    this.#rates.delete(streamId);
    this.#anyData.forget(streamId);
    this.#interactiveData.forget(streamId);
  }

  /** Streams holding wide credit now. */
  get wideCount(): number {
    return this.#wide.size;
  }

  /** The window the policy above gives `streamId`, before the limit on wide streams. */
  #wanted(streamId: number, now: number): number {
    if (now - this.#anyData.othersAt(streamId) >= LONE_STREAM_MS) return WIDE_WINDOW;
    const interactiveCompany = now - this.#interactiveData.othersAt(streamId) < LONE_STREAM_MS;
    this.#advanceEpoch(now);
    const rate = this.#rates.get(streamId);
    if (interactiveCompany || rate === undefined || !this.#isTransfer(rate)) return SHARED_WINDOW;
    const transfers = Math.max(1, this.#transfers, this.#previousTransfers);
    return Math.max(INITIAL_WINDOW, Math.floor(WIDE_WINDOW / transfers));
  }

  #isTransfer(rate: StreamRate): boolean {
    if (rate.epoch === this.#epoch) {
      return rate.bytes > TRANSFER_BYTES || rate.previousBytes > TRANSFER_BYTES;
    }
    return rate.epoch === this.#epoch - 1 && rate.bytes > TRANSFER_BYTES;
  }

  #advanceEpoch(now: number): void {
    if (now - this.#epochStart < TRANSFER_EPOCH_MS) return;
    if (this.#epochStart === Number.NEGATIVE_INFINITY) {
      this.#epochStart = now;
      return;
    }
    const passed = Math.floor((now - this.#epochStart) / TRANSFER_EPOCH_MS);
    this.#epochStart += passed * TRANSFER_EPOCH_MS;
    this.#epoch += passed;
    this.#previousTransfers = passed === 1 ? this.#transfers : 0;
    this.#transfers = 0;
  }
}
