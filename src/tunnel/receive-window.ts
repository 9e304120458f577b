/**
 * How much credit a receiver lets each of its session's streams have outstanding: the stream's
 * window. The wire format leaves this to the receiver (docs/protocol.md, "Flow control").
 *
 * Everything in flight on a tunnel waits in the same socket buffers, so the data one stream has
 * in flight is a queue every other stream's frames wait behind. Hence:
 * - A stream that has been the only one receiving DATA for LONE_STREAM_MS delays nobody, and gets
 *   WIDE_WINDOW: one transfer alone on a tunnel then moves 4 MiB per credit round trip.
 * - Time is cut into epochs of TRANSFER_EPOCH_MS. A stream's DATA is interactive while the stream
 *   has received at most TRANSFER_BYTES in the current epoch; a stream that has received more in
 *   the current or the previous epoch is a transfer. Classing by rate, not by frame size, keeps
 *   an exchange with large replies interactive; classing each epoch afresh makes an exchange's
 *   DATA interactive again from the first epoch after a burst (a page, a `cat` in a shell), while
 *   a transfer's first TRANSFER_BYTES of each epoch stop counting as interactive once it has
 *   moved more.
 * - A stream that is not a transfer gets SHARED_WINDOW in any company: it moves little and
 *   needs no more.
 * - While another stream receives interactive DATA, the transfers share the shared window, each
 *   getting it divided by their number and no less than SHARED_WINDOW: small enough that the
 *   interactive stream waits behind little data rather than whole windows (in the benchmark's
 *   fairness workload, p99 under bulk 1.4-5 ms with 64 KiB against 6-8 ms with 256 KiB). The
 *   shared window is SHARED_BYTES_PER_MS for each millisecond of the tunnel's least ping round
 *   trip, within SHARED_WINDOW and MAX_SHARED_WINDOW. On a short round trip it is SHARED_WINDOW,
 *   and a transfer held to it still moves 64 KiB per millisecond. Over a long one, 64 KiB per
 *   round trip would hold a download beside an open shell to about 1.3 MB/s at 50 ms; the
 *   shared window grows with the round trip instead (1 MiB from 32 ms up: about 20 MB/s at 50
 *   ms for one transfer), on the assumption that the path carries about 32 MB/s, so that what
 *   it lets into flight is mostly on the way rather than queued ahead of the interactive
 *   stream. On a slower path up to MAX_SHARED_WINDOW (SHARED_WINDOW per transfer with more
 *   than 16) can queue ahead of it. One transfer held to the shared window moves more than
 *   TRANSFER_BYTES an epoch, and so stays a transfer, at round trips up to about four seconds;
 *   transfers so many that each gets SHARED_WINDOW, at round trips up to about 240 ms. A new
 *   stream must first receive more than TRANSFER_BYTES within one epoch, which over round
 *   trips above about 250 ms often fails (docs/protocol.md, "Which window").
 * - Transfers with only transfers beside them share WIDE_WINDOW: each gets WIDE_WINDOW divided by
 *   the number of streams counted as transfers in the current or the previous epoch (each once,
 *   and no longer once it has ended), and no less than INITIAL_WINDOW. With 64 KiB each, two
 *   downloads at once carried about two thirds of what one carried alone.
 * Every stream starts with INITIAL_WINDOW of credit (the protocol's constant); the window only
 * decides how much credit is granted back. A wide stream that meets company gets no new credit
 * until it has consumed its excess. Credit once granted cannot be taken back, so a stream counts
 * as wide from a grant above INITIAL_WINDOW until a grant finds it back within INITIAL_WINDOW,
 * it has received FIN or it has ended; at most MAX_WIDE_STREAMS streams of a session count at
 * once, which bounds what slow readers can make a session buffer, and what a newcomer can find
 * queued ahead of it.
 * Every step is O(1) per DATA frame and per grant: transfers are counted per epoch, not by
 * looking at every stream.
 */
import { INITIAL_WINDOW } from './constants.js';

export const WIDE_WINDOW = 4 * 1024 * 1024;
/** The shared window's least size, and the bytes it grows by per millisecond of round trip. */
export const SHARED_WINDOW = 64 * 1024;
export const SHARED_BYTES_PER_MS = 32 * 1024;
export const MAX_SHARED_WINDOW = 1024 * 1024;
/** How long no other stream may have received DATA before a stream's window widens. */
export const LONE_STREAM_MS = 100;
export const MAX_WIDE_STREAMS = 4;
/** A stream that receives more than TRANSFER_BYTES within an epoch is a transfer. */
export const TRANSFER_BYTES = INITIAL_WINDOW;
export const TRANSFER_EPOCH_MS = 1000;

/** How many streams' latest DATA a LatestData keeps by name. */
const RECENT_STREAMS = 4;

/**
 * The latest DATA of a class of streams: when each of the RECENT_STREAMS streams heard from last
 * received it, and when the latest of those it no longer names did. Enough to tell when any
 * stream other than a given one last received DATA, and to forget a stream without forgetting
 * the others. A stream whose name was dropped to make room counts as another stream for every
 * stream, itself included: the answer may be too recent, never too old.
 */
class LatestData {
  /** Most recent first; one entry per stream. Kept in arrays so that a note allocates nothing. */
  #streamIds = new Uint32Array(RECENT_STREAMS);
  #times = new Float64Array(RECENT_STREAMS);
  #count = 0;
  #droppedAt = Number.NEGATIVE_INFINITY;

  note(streamId: number, now: number): void {
    let index = this.#indexOf(streamId);
    if (index < 0) {
      if (this.#count === RECENT_STREAMS) {
        index = RECENT_STREAMS - 1;
        this.#droppedAt = Math.max(this.#droppedAt, this.#times[index] as number);
      } else {
        index = this.#count;
        this.#count += 1;
      }
    }
    this.#streamIds.copyWithin(1, 0, index);
    this.#times.copyWithin(1, 0, index);
    this.#streamIds[0] = streamId;
    this.#times[0] = now;
  }

  /** When a stream other than `streamId` last received DATA. */
  othersAt(streamId: number): number {
    const other = this.#count > 0 && this.#streamIds[0] === streamId ? 1 : 0;
    const named = other < this.#count ? (this.#times[other] as number) : Number.NEGATIVE_INFINITY;
    return Math.max(named, this.#droppedAt);
  }

  /** What `streamId` received no longer counts; what the others received still does. */
  forget(streamId: number): void {
    const index = this.#indexOf(streamId);
    if (index < 0) return;
    this.#streamIds.copyWithin(index, index + 1, this.#count);
    this.#times.copyWithin(index, index + 1, this.#count);
    this.#count -= 1;
  }

  #indexOf(streamId: number): number {
    for (let index = 0; index < this.#count; index++) {
      if (this.#streamIds[index] === streamId) return index;
    }
    return -1;
  }
}

/** What the receiver knows of one stream's rate. */
interface StreamRate {
  /** The epoch `bytes` belong to, and the bytes of the epoch before it. */
  epoch: number;
  bytes: number;
  previousBytes: number;
  /** The latest epoch the stream was counted among the transfers in (-Infinity: none). */
  countedIn: number;
  /** Whether it was also counted in the epoch before `countedIn`. */
  countedInPrevious: boolean;
}

export class ReceiveWindows {
  #anyData = new LatestData();
  #interactiveData = new LatestData();
  #rates = new Map<number, StreamRate>();
  /** Epochs count TRANSFER_EPOCH_MS from the first DATA. */
  #epochStart = Number.NEGATIVE_INFINITY;
  #epoch = 0;
  /** Streams counted as transfers in the current epoch, in the one before, and in both. */
  #transfers = 0;
  #previousTransfers = 0;
  #transfersInBoth = 0;
  #wide = new Set<number>();
  #now: () => number;
  #roundTripMs: () => number | undefined;

  /** `roundTripMs` gives the tunnel's least round trip so far, undefined while unknown. */
  constructor(
    now: () => number = () => performance.now(),
    roundTripMs: () => number | undefined = () => undefined,
  ) {
    this.#now = now;
    this.#roundTripMs = roundTripMs;
  }

  /** A DATA frame of `length` payload bytes arrived for `streamId`. */
  noteData(streamId: number, length: number): void {
    const now = this.#now();
    this.#anyData.note(streamId, now);
    this.#advanceEpoch(now);
    let rate = this.#rates.get(streamId);
    if (rate === undefined) {
      rate = {
        epoch: this.#epoch,
        bytes: 0,
        previousBytes: 0,
        countedIn: Number.NEGATIVE_INFINITY,
        countedInPrevious: false,
      };
      this.#rates.set(streamId, rate);
    } else if (rate.epoch !== this.#epoch) {
      rate.previousBytes = rate.epoch === this.#epoch - 1 ? rate.bytes : 0;
      rate.bytes = 0;
      rate.epoch = this.#epoch;
    }
    rate.bytes += length;
    if (rate.bytes <= TRANSFER_BYTES) {
      this.#interactiveData.note(streamId, now);
    } else if (rate.countedIn !== this.#epoch) {
      this.#count(rate);
      // Its first bytes of the epoch were not interactive after all.
      this.#interactiveData.forget(streamId);
    }
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
   * The stream has ended, or will receive no more DATA (FIN): its credit no longer counts, it is
   * no longer one of the transfers, and it no longer keeps others from being alone.
   */
  release(streamId: number): void {
    this.#wide.delete(streamId);
    this.#anyData.forget(streamId);
    this.#interactiveData.forget(streamId);
    const rate = this.#rates.get(streamId);
    if (rate === undefined) return;
    // No need to advance the epoch first: uncounting from a stale epoch's counts gives the
    // same counts once they roll over.
    this.#uncount(rate);
    this.#rates.delete(streamId);
  }

  /** Streams holding wide credit now. */
  get wideCount(): number {
    return this.#wide.size;
  }

  /** The window the policy above gives `streamId`, before the limit on wide streams. */
  #wanted(streamId: number, now: number): number {
    if (now - this.#anyData.othersAt(streamId) >= LONE_STREAM_MS) return WIDE_WINDOW;
    this.#advanceEpoch(now);
    const rate = this.#rates.get(streamId);
    if (rate === undefined || !this.#isTransfer(rate)) return SHARED_WINDOW;
    const transfers = Math.max(
      1,
      this.#transfers + this.#previousTransfers - this.#transfersInBoth,
    );
    if (now - this.#interactiveData.othersAt(streamId) < LONE_STREAM_MS) {
      return Math.max(SHARED_WINDOW, Math.floor(this.#sharedWindow() / transfers));
    }
    return Math.max(INITIAL_WINDOW, Math.floor(WIDE_WINDOW / transfers));
  }

  /** What the transfers beside an interactive stream share: it grows with the round trip. */
  #sharedWindow(): number {
    const roundTrip = this.#roundTripMs() ?? 0;
    const scaled = Math.floor(roundTrip * SHARED_BYTES_PER_MS);
    return Math.min(MAX_SHARED_WINDOW, Math.max(SHARED_WINDOW, scaled));
  }

  #isTransfer(rate: StreamRate): boolean {
    if (rate.epoch === this.#epoch) {
      return rate.bytes > TRANSFER_BYTES || rate.previousBytes > TRANSFER_BYTES;
    }
    return rate.epoch === this.#epoch - 1 && rate.bytes > TRANSFER_BYTES;
  }

  /** Counts `rate`'s stream among the current epoch's transfers. */
  #count(rate: StreamRate): void {
    rate.countedInPrevious = rate.countedIn === this.#epoch - 1;
    rate.countedIn = this.#epoch;
    this.#transfers += 1;
    if (rate.countedInPrevious) this.#transfersInBoth += 1;
  }

  /** Takes the released `rate`'s stream out of the counts of the current and the previous epoch. */
  #uncount(rate: StreamRate): void {
    if (rate.countedIn === this.#epoch) {
      this.#transfers -= 1;
      if (rate.countedInPrevious) {
        this.#previousTransfers -= 1;
        this.#transfersInBoth -= 1;
      }
    } else if (rate.countedIn === this.#epoch - 1) {
      this.#previousTransfers -= 1;
    }
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
    this.#transfersInBoth = 0;
  }
}
