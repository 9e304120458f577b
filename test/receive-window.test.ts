import assert from 'node:assert/strict';
import { test } from 'node:test';
import { INITIAL_WINDOW } from '../src/tunnel/constants.js';
import {
  LONE_STREAM_MS,
  MAX_WIDE_STREAMS,
  ReceiveWindows,
  SHARED_WINDOW,
  WIDE_WINDOW,
} from '../src/tunnel/receive-window.js';

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
  windows.noteData(1);
  assert.equal(windows.windowFor(1, INITIAL_WINDOW), WIDE_WINDOW);
  assert.equal(windows.wideCount, 1);
});

test('while another stream receives DATA a stream gets SHARED_WINDOW, and widens LONE_STREAM_MS after the other stopped', () => {
  const { windows, advance } = windowsWithClock();
  windows.noteData(1);
  windows.noteData(3);
  assert.equal(windows.windowFor(1, INITIAL_WINDOW), SHARED_WINDOW);
  assert.equal(windows.windowFor(3, INITIAL_WINDOW), SHARED_WINDOW);
  advance(LONE_STREAM_MS - 1);
  windows.noteData(3);
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
  windows.noteData(1);
  advance(LONE_STREAM_MS);
  windows.noteData(3);
  assert.equal(windows.windowFor(3, INITIAL_WINDOW), WIDE_WINDOW);
});

test('a wide stream that meets company is narrowed, and counts as wide until it consumed its excess', () => {
  const { windows } = windowsWithClock();
  windows.noteData(1);
  assert.equal(windows.windowFor(1, INITIAL_WINDOW), WIDE_WINDOW);
  windows.noteData(3);
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
    windows.noteData(streamId);
    assert.equal(windows.windowFor(streamId, INITIAL_WINDOW), WIDE_WINDOW, `stream ${streamId}`);
  }
  advance(LONE_STREAM_MS);
  windows.noteData(99);
  assert.equal(windows.windowFor(99, INITIAL_WINDOW), INITIAL_WINDOW, 'alone, but no place left');
  assert.equal(windows.wideCount, MAX_WIDE_STREAMS);
  windows.release(1);
  assert.equal(windows.windowFor(99, INITIAL_WINDOW), WIDE_WINDOW);
  assert.equal(windows.wideCount, MAX_WIDE_STREAMS);
});

test('a stream that received its last DATA no longer keeps the next one from being alone', () => {
  const { windows } = windowsWithClock();
  windows.noteData(1);
  windows.release(1);
  windows.noteData(3);
  assert.equal(windows.windowFor(3, INITIAL_WINDOW), WIDE_WINDOW);
});
