import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  CHUNK_SIZE,
  decodeVerdict,
  encodeVerdict,
  PayloadCheck,
  payloadChunk,
} from '../bench/payload.js';

const TOTAL = 3 * CHUNK_SIZE + 1_000;

/** The bytes a sender of `total` payload bytes writes, joined. */
function sent(total: number): Buffer {
  const chunks: Buffer[] = [];
  for (let index = 0, length = 0; length < total; index++) {
    const chunk = payloadChunk(index, Math.min(CHUNK_SIZE, total - length));
    chunks.push(chunk);
    length += chunk.length;
  }
  return Buffer.concat(chunks);
}

/** Feeds `data` to a new check in pieces of `piece` bytes, as socket reads would arrive. */
function checked(data: Buffer, piece: number): PayloadCheck {
  const check = new PayloadCheck();
  for (let at = 0; at < data.length; at += piece) check.update(data.subarray(at, at + piece));
  return check;
}

describe('bench payload check', () => {
  it('passes the payload whatever the read sizes', () => {
    for (const piece of [1_000, CHUNK_SIZE, 100_003, TOTAL]) {
      assert.equal(checked(sent(TOTAL), piece).intact(TOTAL), true, `reads of ${piece} B`);
    }
  });

  it('finds an altered byte at its chunk', () => {
    const data = sent(TOTAL);
    data[2 * CHUNK_SIZE + 7]! ^= 1;
    const check = checked(data, 100_003);
    assert.equal(check.intact(TOTAL), false);
    assert.equal(check.firstMismatch, 2 * CHUNK_SIZE);
  });

  it('catches a lost chunk, a repeated chunk and a short transfer', () => {
    const data = sent(TOTAL);
    const lost = Buffer.concat([data.subarray(0, CHUNK_SIZE), data.subarray(2 * CHUNK_SIZE)]);
    const repeated = Buffer.concat([data.subarray(0, CHUNK_SIZE), data]);
    assert.equal(checked(lost, 4_096).intact(TOTAL - CHUNK_SIZE), false);
    assert.equal(checked(repeated, 4_096).intact(TOTAL + CHUNK_SIZE), false);
    assert.equal(checked(data.subarray(0, TOTAL - 1), 4_096).intact(TOTAL), false);
  });

  it('carries the verdict across the wire unchanged', () => {
    const good = decodeVerdict(encodeVerdict(checked(sent(TOTAL), 4_096)));
    assert.equal(good.intact(TOTAL), true);
    const data = sent(TOTAL);
    data[5]! ^= 0xff;
    const bad = decodeVerdict(encodeVerdict(checked(data, 4_096)));
    assert.deepEqual([bad.bytes, bad.firstMismatch], [TOTAL, 0]);
  });
});
