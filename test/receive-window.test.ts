import assert from 'node:assert/strict';
import { test } from 'node:test';
import { INITIAL_WINDOW } from '../src/tunnel/constants.js';
import {
  LONE_STREAM_MS,
  MAX_SHARED_WINDOW,
  MAX_WIDE_STREAMS,
  ReceiveWindows,
  SHARED_BYTES_PER_MS,
  SHARED_WINDOW,
  TRANSFER_BYTES,
  TRANSFER_EPOCH_MS,
  WIDE_WINDOW,
} from '../src/tunnel/receive-window.js';

/** An interactive message; and a full DATA frame, as a transfer sends them. */
const SMALL = 100;
const FRAME = 64 * 1024;

/** A ReceiveWindows on a clock the test moves, on a tunnel whose round trip the test sets. */
function windowsWithClock(): {
  windows: ReceiveWindows;
  advance(ms: number): void;
  setRoundTrip(ms: number | undefined): void;
} {
  let now = 1_000;
  let roundTrip: number | undefined;
  return {
    windows: new ReceiveWindows(
      () => now,
      () => roundTrip,
    ),
    advance(ms) {
      now += ms;
    },
    setRoundTrip(ms) {
      roundTrip = ms;
    },
  };
}

test('the first stream to receive DATA on a session is wide at once', () => {
  const { windows } = windowsWithClock();
  windows.noteData(1, SMALL);
  assert.equal(windows.windowFor(1, INITIAL_WINDOW), WIDE_WINDOW);
  assert.equal(windows.wideCount, 1);
});

test('while another stream receives DATA a stream gets SHARED_WINDOW, and widens LONE_STREAM_MS after the other stopped', () => {
  const { windows, advance } = windowsWithClock();
  windows.noteData(1, SMALL);
  windows.noteData(3, SMALL);
  assert.equal(windows.windowFor(1, INITIAL_WINDOW), SHARED_WINDOW);
  assert.equal(windows.windowFor(3, INITIAL_WINDOW), SHARED_WINDOW);
  advance(LONE_STREAM_MS - 1);
  windows.noteData(3, SMALL);
  assert.equal(
    windows.windowFor(3, INITIAL_WINDOW),
    SHARED_WINDOW,
    'stream 1 was heard too lately',
  );
  advance(1);
  assert.equal(windows.windowFor(3, INITIAL_WINDOW), WIDE_WINDOW);
  assert.equal(windows.windowFor(1, INITIAL_WINDOW), SHARED_WINDOW, 'stream 3 is still receiving');
});

test('a stream that follows another after a quiet spell is wide at once', () => {
  const { windows, advance } = windowsWithClock();
  windows.noteData(1, SMALL);
  advance(LONE_STREAM_MS);
  windows.noteData(3, SMALL);
  assert.equal(windows.windowFor(3, INITIAL_WINDOW), WIDE_WINDOW);
});

test('a wide stream that meets company is narrowed, and counts as wide until it consumed its excess', () => {
  const { windows } = windowsWithClock();
  windows.noteData(1, SMALL);
  assert.equal(windows.windowFor(1, INITIAL_WINDOW), WIDE_WINDOW);
  windows.noteData(3, SMALL);
  assert.equal(windows.windowFor(1, WIDE_WINDOW), SHARED_WINDOW);
  assert.equal(windows.wideCount, 1, 'credit already granted still counts');
  assert.equal(windows.windowFor(1, INITIAL_WINDOW), SHARED_WINDOW);
  assert.equal(windows.wideCount, 0);
});

test('at most MAX_WIDE_STREAMS streams hold wide credit; an ended one frees its place', () => {
  const { windows, advance } = windowsWithClock();
  // Each stream went wide alone and went idle with its credit unused: it keeps its place.
  for (let streamId = 1; streamId <= MAX_WIDE_STREAMS; streamId++) {
    advance(LONE_STREAM_MS);
    windows.noteData(streamId, SMALL);
    assert.equal(windows.windowFor(streamId, INITIAL_WINDOW), WIDE_WINDOW, `stream ${streamId}`);
  }
  advance(LONE_STREAM_MS);
  windows.noteData(99, SMALL);
  assert.equal(windows.windowFor(99, INITIAL_WINDOW), INITIAL_WINDOW, 'alone, but no place left');
  assert.equal(windows.wideCount, MAX_WIDE_STREAMS);
  windows.release(1);
  assert.equal(windows.windowFor(99, INITIAL_WINDOW), WIDE_WINDOW);
  assert.equal(windows.wideCount, MAX_WIDE_STREAMS);
});

test('a stream that received its last DATA no longer keeps the next one from being alone', () => {
  const { windows } = windowsWithClock();
  windows.noteData(1, SMALL);
  windows.release(1);
  windows.noteData(3, SMALL);
  assert.equal(windows.windowFor(3, INITIAL_WINDOW), WIDE_WINDOW);
});

/** `streamId` receives enough full frames to count as a transfer. */
function transfer(windows: ReceiveWindows, streamId: number): void {
  for (let bytes = 0; bytes <= TRANSFER_BYTES; bytes += FRAME) windows.noteData(streamId, FRAME);
}

test('transfers with only transfers beside them share WIDE_WINDOW', () => {
  const { windows, advance } = windowsWithClock();
  transfer(windows, 1);
  transfer(windows, 3);
  advance(LONE_STREAM_MS);
  windows.noteData(1, FRAME);
  windows.noteData(3, FRAME);
  assert.equal(windows.windowFor(1, INITIAL_WINDOW), WIDE_WINDOW / 2);
  assert.equal(windows.windowFor(3, INITIAL_WINDOW), WIDE_WINDOW / 2);
  transfer(windows, 5);
  advance(LONE_STREAM_MS);
  for (const streamId of [1, 3, 5]) windows.noteData(streamId, FRAME);
  assert.equal(windows.windowFor(1, INITIAL_WINDOW), Math.floor(WIDE_WINDOW / 3));
});

test('a transfer starting beside another narrows it until the newcomer has moved TRANSFER_BYTES', () => {
  const { windows, advance } = windowsWithClock();
  transfer(windows, 1);
  advance(LONE_STREAM_MS);
  windows.noteData(3, FRAME);
  windows.noteData(1, FRAME);
  assert.equal(windows.windowFor(1, INITIAL_WINDOW), SHARED_WINDOW, 'stream 3 may be interactive');
  transfer(windows, 3);
  assert.equal(windows.windowFor(1, INITIAL_WINDOW), WIDE_WINDOW / 2);
  assert.equal(windows.windowFor(3, INITIAL_WINDOW), WIDE_WINDOW / 2);
});

test('transfers starting together share as soon as each has moved TRANSFER_BYTES', () => {
  const { windows } = windowsWithClock();
  const streams = [1, 3, 5];
  for (let bytes = 0; bytes <= TRANSFER_BYTES; bytes += FRAME) {
    for (const streamId of streams) windows.noteData(streamId, FRAME);
  }
  for (const streamId of streams) {
    assert.equal(windows.windowFor(streamId, INITIAL_WINDOW), Math.floor(WIDE_WINDOW / 3));
  }
});

test('an exchange with large replies stays interactive and keeps a transfer beside it at SHARED_WINDOW', () => {
  const { windows, advance } = windowsWithClock();
  transfer(windows, 1);
  // A reply of three full frames every epoch: larger than any frame, less than TRANSFER_BYTES.
  for (let reply = 0; reply < 5; reply++) {
    for (let frame = 0; frame < 3; frame++) windows.noteData(3, FRAME);
    windows.noteData(1, FRAME);
    assert.equal(windows.windowFor(1, INITIAL_WINDOW), SHARED_WINDOW, `reply ${reply}`);
    assert.equal(windows.windowFor(3, INITIAL_WINDOW), SHARED_WINDOW, `reply ${reply}`);
    advance(TRANSFER_EPOCH_MS);
    transfer(windows, 1);
  }
});

test('a transfer stays one through the next epoch, and its DATA is interactive again from the first epoch after its burst', () => {
  const { windows, advance } = windowsWithClock();
  transfer(windows, 1);
  transfer(windows, 3);
  // After its burst, stream 1 receives a little every step. Each step asks for stream 1's window
  // before any DATA of the step, so that the grant itself must notice a new epoch.
  const step = LONE_STREAM_MS / 2;
  for (let at = step; at < 3 * TRANSFER_EPOCH_MS; at += step) {
    advance(step);
    const transferShare = at < 2 * TRANSFER_EPOCH_MS ? WIDE_WINDOW / 2 : SHARED_WINDOW;
    assert.equal(
      windows.windowFor(1, INITIAL_WINDOW),
      transferShare,
      `${at} ms in, before any DATA`,
    );
    transfer(windows, 3);
    windows.noteData(1, SMALL);
    const besideIt = at < TRANSFER_EPOCH_MS ? WIDE_WINDOW / 2 : SHARED_WINDOW;
    assert.equal(windows.windowFor(3, INITIAL_WINDOW), besideIt, `${at} ms in`);
  }
});

test('a transfer silent for a whole epoch is no longer one', () => {
  const { windows, advance } = windowsWithClock();
  transfer(windows, 1);
  const step = LONE_STREAM_MS / 2;
  // Stream 1 receives nothing from its burst in the first epoch to the start of the third.
  for (let at = step; at <= 2 * TRANSFER_EPOCH_MS; at += step) {
    advance(step);
    transfer(windows, 3);
  }
  assert.equal(windows.windowFor(1, INITIAL_WINDOW), SHARED_WINDOW, 'before its DATA');
  windows.noteData(1, SMALL);
  assert.equal(windows.windowFor(1, INITIAL_WINDOW), SHARED_WINDOW, 'after its DATA');
});

test('at an epoch boundary, a stream beside one whose DATA just turned interactive stays narrow', () => {
  const { windows, advance } = windowsWithClock();
  transfer(windows, 1);
  transfer(windows, 3);
  const step = LONE_STREAM_MS / 2;
  for (let at = step; at < 2 * TRANSFER_EPOCH_MS; at += step) {
    advance(step);
    windows.noteData(3, FRAME);
    windows.noteData(1, SMALL);
  }
  advance(step);
  windows.noteData(3, FRAME);
  assert.equal(windows.windowFor(3, INITIAL_WINDOW), SHARED_WINDOW, 'stream 1 spoke 50 ms ago');
});

test('transfers are counted once each across an epoch boundary, and a released one no longer counts', () => {
  const { windows, advance } = windowsWithClock();
  // Streams 1 and 3 are transfers near the end of an epoch, 5 and 7 early in the next.
  windows.noteData(9, SMALL);
  windows.release(9);
  advance(TRANSFER_EPOCH_MS - LONE_STREAM_MS / 2);
  transfer(windows, 1);
  transfer(windows, 3);
  advance(LONE_STREAM_MS / 2);
  transfer(windows, 5);
  transfer(windows, 7);
  assert.equal(windows.windowFor(1, INITIAL_WINDOW), WIDE_WINDOW / 4);
  transfer(windows, 1);
  assert.equal(
    windows.windowFor(1, INITIAL_WINDOW),
    WIDE_WINDOW / 4,
    'stream 1 again, not a fifth',
  );
  windows.release(7);
  windows.release(5);
  assert.equal(windows.windowFor(1, INITIAL_WINDOW), WIDE_WINDOW / 2, 'streams 1 and 3 are left');
  windows.release(3);
  transfer(windows, 11);
  assert.equal(windows.windowFor(1, INITIAL_WINDOW), WIDE_WINDOW / 2, 'streams 1 and 11');
  transfer(windows, 13);
  windows.release(1);
  assert.equal(windows.windowFor(11, INITIAL_WINDOW), WIDE_WINDOW / 2, 'streams 11 and 13');
});

test('interactive DATA narrows the others for LONE_STREAM_MS, and counts as interactive up to TRANSFER_BYTES exactly', () => {
  const { windows, advance } = windowsWithClock();
  transfer(windows, 1);
  transfer(windows, 3);
  windows.noteData(5, TRANSFER_BYTES);
  assert.equal(windows.windowFor(1, INITIAL_WINDOW), SHARED_WINDOW, 'exactly TRANSFER_BYTES');
  advance(LONE_STREAM_MS - 1);
  transfer(windows, 1);
  transfer(windows, 3);
  assert.equal(windows.windowFor(1, INITIAL_WINDOW), SHARED_WINDOW, '1 ms before it lapses');
  advance(1);
  assert.equal(windows.windowFor(1, INITIAL_WINDOW), WIDE_WINDOW / 2, 'lapsed');
  windows.noteData(5, 1);
  assert.equal(windows.windowFor(1, INITIAL_WINDOW), Math.floor(WIDE_WINDOW / 3), 'now a transfer');
});

test('forgetting a stream keeps the times of those heard from before it', () => {
  const { windows, advance } = windowsWithClock();
  transfer(windows, 1);
  transfer(windows, 3);
  windows.noteData(5, SMALL);
  advance(LONE_STREAM_MS / 2);
  windows.noteData(7, SMALL);
  windows.noteData(9, SMALL);
  windows.release(7);
  windows.release(9);
  advance(LONE_STREAM_MS / 2);
  transfer(windows, 1);
  transfer(windows, 3);
  assert.equal(windows.windowFor(1, INITIAL_WINDOW), WIDE_WINDOW / 2, "stream 5's DATA has lapsed");
});

test('transfers beside an interactive stream that ends share at once', () => {
  const { windows } = windowsWithClock();
  transfer(windows, 1);
  transfer(windows, 3);
  windows.noteData(5, SMALL);
  assert.equal(windows.windowFor(1, INITIAL_WINDOW), SHARED_WINDOW);
  windows.release(5);
  assert.equal(windows.windowFor(1, INITIAL_WINDOW), WIDE_WINDOW / 2);
});

test('transfers of an epoch long past no longer count', () => {
  const { windows, advance } = windowsWithClock();
  transfer(windows, 1);
  transfer(windows, 3);
  advance(2 * TRANSFER_EPOCH_MS);
  transfer(windows, 5);
  transfer(windows, 7);
  assert.equal(windows.windowFor(5, INITIAL_WINDOW), WIDE_WINDOW / 2);
});

test('many transfers get no less than INITIAL_WINDOW, and at most MAX_WIDE_STREAMS get more', () => {
  const { windows, advance } = windowsWithClock();
  const streams = [1, 3, 5, 7, 9, 11];
  for (const streamId of streams) transfer(windows, streamId);
  advance(LONE_STREAM_MS);
  for (const streamId of streams) windows.noteData(streamId, FRAME);
  const share = Math.floor(WIDE_WINDOW / streams.length);
  assert.ok(share > INITIAL_WINDOW);
  const granted = streams.map((streamId) => windows.windowFor(streamId, INITIAL_WINDOW));
  assert.deepEqual(granted, [
    ...Array<number>(MAX_WIDE_STREAMS).fill(share),
    ...Array<number>(streams.length - MAX_WIDE_STREAMS).fill(INITIAL_WINDOW),
  ]);
  for (let streamId = 13; streamId < 13 + 2 * 16; streamId += 2) transfer(windows, streamId);
  advance(LONE_STREAM_MS);
  windows.noteData(1, FRAME);
  windows.noteData(3, FRAME);
  assert.equal(windows.windowFor(1, INITIAL_WINDOW), INITIAL_WINDOW);
});

test('a share of exactly INITIAL_WINDOW takes no place among the wide streams', () => {
  const { windows } = windowsWithClock();
  const streams = Array.from({ length: WIDE_WINDOW / INITIAL_WINDOW }, (_, index) => 2 * index + 1);
  for (const streamId of streams) transfer(windows, streamId);
  for (const streamId of streams) {
    assert.equal(windows.windowFor(streamId, INITIAL_WINDOW), INITIAL_WINDOW);
  }
  assert.equal(windows.wideCount, 0);
});

test('a stream that ends does not make the receiver forget what the others received', () => {
  const { windows } = windowsWithClock();
  transfer(windows, 1);
  windows.noteData(3, SMALL);
  for (const streamId of [5, 7, 9]) windows.noteData(streamId, SMALL);
  for (const streamId of [5, 7, 9]) windows.release(streamId);
  windows.noteData(1, FRAME);
  assert.equal(windows.windowFor(1, INITIAL_WINDOW), SHARED_WINDOW, 'stream 3 is still there');
});

test('transfers that start beside an interactive stream do not make the receiver forget it', () => {
  const { windows } = windowsWithClock();
  transfer(windows, 1);
  windows.noteData(3, SMALL);
  for (let bytes = 0; bytes <= TRANSFER_BYTES; bytes += FRAME) {
    for (const streamId of [5, 7, 9, 11]) windows.noteData(streamId, FRAME);
  }
  windows.noteData(1, FRAME);
  assert.equal(windows.windowFor(1, INITIAL_WINDOW), SHARED_WINDOW, 'stream 3 is still there');
});

test('the shared window grows with the tunnel round trip, from SHARED_WINDOW to MAX_SHARED_WINDOW', () => {
  const { windows, setRoundTrip } = windowsWithClock();
  transfer(windows, 1);
  windows.noteData(3, SMALL);
  windows.noteData(1, FRAME);
  const cases: [number | undefined, number][] = [
    [undefined, SHARED_WINDOW],
    [0.2, SHARED_WINDOW],
    [SHARED_WINDOW / SHARED_BYTES_PER_MS, SHARED_WINDOW],
    [10, 10 * SHARED_BYTES_PER_MS],
    [12.5, Math.floor(12.5 * SHARED_BYTES_PER_MS)],
    [MAX_SHARED_WINDOW / SHARED_BYTES_PER_MS, MAX_SHARED_WINDOW],
    [250, MAX_SHARED_WINDOW],
  ];
  for (const [roundTrip, expected] of cases) {
    setRoundTrip(roundTrip);
    assert.equal(windows.windowFor(1, INITIAL_WINDOW), expected, `transfer at ${roundTrip} ms`);
    assert.equal(windows.windowFor(3, 0), SHARED_WINDOW, `exchange at ${roundTrip} ms`);
  }
  assert.ok(
    10 * SHARED_BYTES_PER_MS > SHARED_WINDOW && 10 * SHARED_BYTES_PER_MS < MAX_SHARED_WINDOW,
  );
});

test('transfers beside an interactive stream share the shared window, each getting at least SHARED_WINDOW', () => {
  const { windows, setRoundTrip } = windowsWithClock();
  setRoundTrip(100);
  const granted = (count: number) => {
    const streams = Array.from({ length: count }, (_, index) => 2 * index + 1);
    for (const streamId of streams) transfer(windows, streamId);
    windows.noteData(1_000, SMALL);
    for (const streamId of streams) windows.noteData(streamId, FRAME);
    const windowsGranted = streams.map((streamId) => windows.windowFor(streamId, 0));
    for (const streamId of streams) windows.release(streamId);
    return windowsGranted;
  };
  assert.deepEqual(granted(2), [MAX_SHARED_WINDOW / 2, MAX_SHARED_WINDOW / 2]);
  assert.deepEqual(granted(6), Array<number>(6).fill(Math.floor(MAX_SHARED_WINDOW / 6)));
  assert.deepEqual(granted(20), Array<number>(20).fill(SHARED_WINDOW));
  assert.equal(windows.wideCount, 0, 'released streams hold no wide place');
});

test('over a long round trip streams that are not transfers take no wide place, so a download alone later is wide', () => {
  const { windows, advance, setRoundTrip } = windowsWithClock();
  setRoundTrip(50);
  const exchanges = [1, 3, 5, 7];
  for (let round = 0; round < 3; round++) {
    for (const streamId of exchanges) windows.noteData(streamId, SMALL);
    for (const streamId of exchanges) {
      assert.equal(windows.windowFor(streamId, 0), SHARED_WINDOW, `stream ${streamId}`);
    }
    advance(50);
  }
  assert.equal(windows.wideCount, 0);
  advance(LONE_STREAM_MS);
  windows.noteData(9, FRAME);
  assert.equal(windows.windowFor(9, INITIAL_WINDOW), WIDE_WINDOW);
});

test('over a long round trip a transfer beside an interactive stream gets the shared window, epoch after epoch', () => {
  const { windows, advance, setRoundTrip } = windowsWithClock();
  const roundTripMs = 250;
  setRoundTrip(roundTripMs);
  // Stream 1 receives its initial credit in the first round trip, then in each one what the
  // last grant allowed, while stream 3 sends a small message every round trip.
  let window = INITIAL_WINDOW;
  for (let elapsed = 0; elapsed < 3 * TRANSFER_EPOCH_MS; elapsed += roundTripMs) {
    windows.noteData(3, SMALL);
    for (let bytes = 0; bytes < window; bytes += FRAME) windows.noteData(1, FRAME);
    window = windows.windowFor(1, 0);
    const expected = elapsed === 0 ? SHARED_WINDOW : MAX_SHARED_WINDOW;
    assert.equal(window, expected, `at ${elapsed} ms`);
    advance(roundTripMs);
  }
});
