import assert from 'node:assert/strict';
import { test } from 'node:test';
import { INITIAL_WINDOW } from '../src/tunnel/constants.js';
import {
  LONE_STREAM_MS,
  MAX_WIDE_STREAMS,
  ReceiveWindows,
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

test('a stream widens only after it has been the only one receiving DATA for LONE_STREAM_MS', () => {
  const { windows, advance } = windowsWithClock();
  windows.noteData(1);
  assert.equal(windows.windowFor(1, INITIAL_WINDOW), INITIAL_WINDOW);
  advance(LONE_STREAM_MS - 1);
  windows.noteData(1);
  assert.equal(windows.windowFor(1, INITIAL_WINDOW), INITIAL_WINDOW, 'not alone long enough');
  advance(1);
  assert.equal(windows.windowFor(1, INITIAL_WINDOW), WIDE_WINDOW);
  assert.equal(windows.wideCount, 1);
});

test('DATA for another stream narrows a wide stream; it stays counted until it consumed its excess', () => {
  const { windows, advance } = windowsWithClock();
  windows.noteData(1);
  advance(LONE_STREAM_MS);
  assert.equal(windows.windowFor(1, INITIAL_WINDOW), WIDE_WINDOW);
  windows.noteData(3);
  assert.equal(windows.windowFor(1, WIDE_WINDOW), INITIAL_WINDOW);
  assert.equal(windows.wideCount, 1, 'credit already granted still counts');
  assert.equal(windows.windowFor(1, INITIAL_WINDOW), INITIAL_WINDOW);
  assert.equal(windows.wideCount, 0);
  assert.equal(
    windows.windowFor(3, INITIAL_WINDOW),
    INITIAL_WINDOW,
    'stream 3 is new to being alone',
  );
  advance(LONE_STREAM_MS);
  assert.equal(windows.windowFor(3, INITIAL_WINDOW), WIDE_WINDOW);
  assert.equal(windows.windowFor(1, INITIAL_WINDOW), INITIAL_WINDOW, 'stream 1 is not alone');
});

test('at most MAX_WIDE_STREAMS streams hold wide credit; an ended one frees its place', () => {
  const { windows, advance } = windowsWithClock();
  const widen = (streamId: number) => {
    windows.noteData(streamId);
    advance(LONE_STREAM_MS);
    return windows.windowFor(streamId, INITIAL_WINDOW);
  };
  // Each stream went wide and went idle with its credit unused: it keeps its place.
  for (let streamId = 1; streamId <= MAX_WIDE_STREAMS; streamId++) {
    assert.equal(widen(streamId), WIDE_WINDOW, `stream ${streamId}`);
  }
  assert.equal(widen(99), INITIAL_WINDOW, 'no place left');
  assert.equal(windows.wideCount, MAX_WIDE_STREAMS);
  windows.release(1);
  assert.equal(windows.windowFor(99, INITIAL_WINDOW), WIDE_WINDOW);
  assert.equal(windows.wideCount, MAX_WIDE_STREAMS);
});
