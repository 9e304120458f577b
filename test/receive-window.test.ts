import assert from 'node:assert/strict';
import { test } from 'node:test';
import { INITIAL_WINDOW } from '../src/tunnel/constants.js';
import {
  LIGHT_FRAME_MAX,
  LONE_STREAM_MS,
  MAX_WIDE_STREAMS,
  ReceiveWindows,
  SHARED_WINDOW,
  WIDE_WINDOW,
} from '../src/tunnel/receive-window.js';

/** The payload of an interactive exchange's DATA frame, and of a transfer's. */
const LIGHT = 64;
const HEAVY = 64 * 1024;

/** A ReceiveWindows on a clock the test moves. */
function windowsWithClock(): { windows: ReceiveWindows; advance(ms: number): void } {
  let now = 1_000;
  return {
    windows: new ReceiveWindows(() => now),
    advance(ms) {
      now += ms;
    },
  };
}

test('the first stream to receive DATA on a session is wide at once', () => {
  const { windows } = windowsWithClock();
  windows.noteData(1, LIGHT);
  assert.equal(windows.windowFor(1, INITIAL_WINDOW), WIDE_WINDOW);
  assert.equal(windows.wideCount, 1);
});

test('while another stream receives DATA a stream gets SHARED_WINDOW, and widens LONE_STREAM_MS after the other stopped', () => {
  const { windows, advance } = windowsWithClock();
  windows.noteData(1, LIGHT);
  windows.noteData(3, LIGHT);
  assert.equal(windows.windowFor(1, INITIAL_WINDOW), SHARED_WINDOW);
  assert.equal(windows.windowFor(3, INITIAL_WINDOW), SHARED_WINDOW);
  advance(LONE_STREAM_MS - 1);
  windows.noteData(3, LIGHT);
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
  windows.noteData(1, LIGHT);
  advance(LONE_STREAM_MS);
  windows.noteData(3, LIGHT);
  assert.equal(windows.windowFor(3, INITIAL_WINDOW), WIDE_WINDOW);
});

test('a wide stream that meets company is narrowed, and counts as wide until it consumed its excess', () => {
  const { windows } = windowsWithClock();
  windows.noteData(1, LIGHT);
  assert.equal(windows.windowFor(1, INITIAL_WINDOW), WIDE_WINDOW);
  windows.noteData(3, LIGHT);
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
    windows.noteData(streamId, LIGHT);
    assert.equal(windows.windowFor(streamId, INITIAL_WINDOW), WIDE_WINDOW, `stream ${streamId}`);
  }
  advance(LONE_STREAM_MS);
  windows.noteData(99, LIGHT);
  assert.equal(windows.windowFor(99, INITIAL_WINDOW), INITIAL_WINDOW, 'alone, but no place left');
  assert.equal(windows.wideCount, MAX_WIDE_STREAMS);
  windows.release(1);
  assert.equal(windows.windowFor(99, INITIAL_WINDOW), WIDE_WINDOW);
  assert.equal(windows.wideCount, MAX_WIDE_STREAMS);
});

test('a stream that received its last DATA no longer keeps the next one from being alone', () => {
  const { windows } = windowsWithClock();
  windows.noteData(1, LIGHT);
  windows.release(1);
  windows.noteData(3, LIGHT);
  assert.equal(windows.windowFor(3, INITIAL_WINDOW), WIDE_WINDOW);
});

test('transfers with no light stream beside them share the wide window', () => {
  const { windows } = windowsWithClock();
  windows.noteData(1, HEAVY);
  windows.noteData(3, HEAVY);
  assert.equal(windows.windowFor(1, INITIAL_WINDOW), WIDE_WINDOW / 2);
  assert.equal(windows.windowFor(3, INITIAL_WINDOW), WIDE_WINDOW / 2);
  assert.equal(windows.wideCount, 2);
  windows.noteData(5, LIGHT_FRAME_MAX + 1);
  assert.equal(windows.windowFor(5, INITIAL_WINDOW), WIDE_WINDOW / 3);
});

test('no share is below INITIAL_WINDOW, and at most MAX_WIDE_STREAMS transfers hold more', () => {
  const { windows } = windowsWithClock();
  const transfers = MAX_WIDE_STREAMS * 8;
  for (let streamId = 1; streamId <= transfers; streamId++) windows.noteData(streamId, HEAVY);
  assert.ok(WIDE_WINDOW / transfers < INITIAL_WINDOW);
  assert.equal(windows.windowFor(1, INITIAL_WINDOW), INITIAL_WINDOW);
  assert.equal(windows.wideCount, 0);
});

test('a light stream beside a transfer keeps both at SHARED_WINDOW', () => {
  const { windows } = windowsWithClock();
  windows.noteData(1, HEAVY);
  windows.noteData(3, LIGHT_FRAME_MAX);
  assert.equal(windows.windowFor(1, INITIAL_WINDOW), SHARED_WINDOW);
  assert.equal(windows.windowFor(3, INITIAL_WINDOW), SHARED_WINDOW);
  windows.noteData(1, HEAVY);
  assert.equal(windows.windowFor(1, INITIAL_WINDOW), SHARED_WINDOW, 'stream 3 was heard lately');
});

test('transfers widen again LONE_STREAM_MS after the light stream beside them went quiet', () => {
  const { windows, advance } = windowsWithClock();
  windows.noteData(1, HEAVY);
  windows.noteData(3, LIGHT);
  windows.noteData(5, HEAVY);
  assert.equal(windows.windowFor(1, INITIAL_WINDOW), SHARED_WINDOW);
  advance(LONE_STREAM_MS - 1);
  windows.noteData(1, HEAVY);
  windows.noteData(5, HEAVY);
  assert.equal(
    windows.windowFor(1, INITIAL_WINDOW),
    SHARED_WINDOW,
    'stream 3 was heard too lately',
  );
  advance(1);
  assert.equal(windows.windowFor(1, INITIAL_WINDOW), WIDE_WINDOW / 2);
});

test('a transfer that has stopped no longer counts in the share, and an ended one at once', () => {
  const { windows, advance } = windowsWithClock();
  windows.noteData(5, HEAVY);
  windows.noteData(3, HEAVY);
  windows.noteData(1, HEAVY);
  assert.equal(windows.windowFor(1, INITIAL_WINDOW), WIDE_WINDOW / 3);
  windows.release(5);
  assert.equal(windows.windowFor(1, INITIAL_WINDOW), WIDE_WINDOW / 2);
  advance(LONE_STREAM_MS / 2);
  windows.noteData(1, HEAVY);
  advance(LONE_STREAM_MS / 2);
  windows.noteData(1, HEAVY);
  assert.equal(windows.windowFor(1, INITIAL_WINDOW), WIDE_WINDOW, 'stream 3 stopped receiving');
});
