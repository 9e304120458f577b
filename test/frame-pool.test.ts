import assert from 'node:assert/strict';
import { test } from 'node:test';
import { HEADER_SIZE, MAX_DATA_PAYLOAD } from '../src/tunnel/constants.js';
import { dataFramePool, FrameBufferPool } from '../src/tunnel/frame-pool.js';

test('a buffer given back is the next one taken', () => {
  const pool = new FrameBufferPool(64, 4);
  const first = pool.take();
  assert.equal(first.length, 64);
  pool.give(first);
  assert.equal(pool.freeCount, 1);
  assert.equal(pool.take(), first);
  assert.notEqual(pool.take(), first, 'an empty pool allocates');
});

test('the free list keeps at most maxFree buffers', () => {
  const pool = new FrameBufferPool(16, 2);
  const taken = [pool.take(), pool.take(), pool.take()];
  for (const buffer of taken) pool.give(buffer);
  assert.equal(pool.freeCount, 2);
});

test('a buffer of another size is refused with RangeError', () => {
  const pool = new FrameBufferPool(16, 2);
  assert.throws(() => pool.give(Buffer.alloc(15)), RangeError);
  assert.equal(pool.freeCount, 0);
});

test('the shared pool holds buffers for the largest DATA frame a sender produces', () => {
  assert.equal(dataFramePool.bufferSize, HEADER_SIZE + MAX_DATA_PAYLOAD);
});
