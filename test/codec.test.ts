import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { PosternError } from '../src/errors.js';
import { encodeDataInto, encodeFrame, type Frame, FrameDecoder } from '../src/tunnel/codec.js';
import {
  FrameType,
  HEADER_SIZE,
  MAX_FRAME_PAYLOAD,
  MAX_HOST_LENGTH,
  Reason,
  StreamKind,
} from '../src/tunnel/constants.js';

const protocolDoc = readFileSync(new URL('../../docs/protocol.md', import.meta.url), 'utf8');

/** The `NAME: HEX` lines of the fenced block with the given info string, in document order. */
function vectorBlock(info: string): Map<string, Buffer> {
  const block = protocolDoc.match(new RegExp(`^\`\`\`${info}\\n([\\s\\S]*?)^\`\`\`$`, 'm'));
  assert.ok(block, `docs/protocol.md has a \`\`\`${info} block`);
  const vectors = new Map<string, Buffer>();
  for (const line of block[1].split('\n')) {
    if (line.trim() === '') continue;
    const match = line.match(/^([a-z0-9_]+): ((?:[0-9a-f]{2})+)$/);
    assert.ok(match, `malformed vector line: ${JSON.stringify(line)}`);
    assert.ok(!vectors.has(match[1]), `duplicate vector name ${match[1]}`);
    vectors.set(match[1], Buffer.from(match[2], 'hex'));
  }
  return vectors;
}

/** What each documented vector must decode to; a doc edit that disagrees fails the test. */
const expectedVectors: Record<string, Frame> = {
  hello: {
    type: FrameType.HELLO,
    streamId: 0,
    version: 1,
    info: { client_id: 'c1', group_id: 'g1', group_password: 'pw', open_ports: [] },
  },
  hello_ok: {
    type: FrameType.HELLO_OK,
    streamId: 0,
    version: 1,
    info: { session_id: 's1', heartbeat_interval_ms: 20000, heartbeat_timeout_ms: 60000 },
  },
  open_tcp_example_com_443: {
    type: FrameType.OPEN,
    streamId: 1,
    kind: StreamKind.TCP,
    host: 'example.com',
    port: 443,
  },
  open_udp_ipv6_literal: {
    type: FrameType.OPEN,
    streamId: 5,
    kind: StreamKind.UDP,
    host: '2001:db8::1',
    port: 53,
  },
  open_tcp_utf8_host: {
    type: FrameType.OPEN,
    streamId: 7,
    kind: StreamKind.TCP,
    host: 'bücher.example',
    port: 80,
  },
  open_ok: { type: FrameType.OPEN_OK, streamId: 1 },
  open_error_forbidden: {
    type: FrameType.OPEN_ERROR,
    streamId: 9,
    reason: Reason.FORBIDDEN,
    message: 'denied by policy',
  },
  data_hello: { type: FrameType.DATA, streamId: 3, data: Buffer.from('hello') },
  data_empty: { type: FrameType.DATA, streamId: 3, data: Buffer.alloc(0) },
  data_big_stream_id: { type: FrameType.DATA, streamId: 0x01020305, data: Buffer.from([0, 0xff]) },
  window_131072: { type: FrameType.WINDOW, streamId: 3, increment: 131072 },
  fin: { type: FrameType.FIN, streamId: 3 },
  reset_connection_reset: {
    type: FrameType.RESET,
    streamId: 3,
    reason: Reason.CONNECTION_RESET,
    message: '',
  },
  goaway_normal_restart: {
    type: FrameType.GOAWAY,
    streamId: 0,
    reason: Reason.NORMAL,
    message: 'restart',
  },
};

const expectedInvalidVectors = [
  'unknown_type_7f',
  'unknown_type_00',
  'payload_over_max',
  'window_increment_zero',
  'window_short_payload',
  'open_host_length_mismatch',
  'open_host_empty',
  'open_on_stream_0',
  'open_kind_9',
  'open_ok_on_stream_0',
  'open_ok_with_payload',
  'fin_with_payload',
  'goaway_on_stream_3',
  'reset_unknown_reason',
  'reset_without_reason',
  'hello_not_json',
  'hello_json_array',
  'hello_on_stream_1',
  'hello_without_version',
  'data_on_stream_0',
];

function isProtocolError(err: unknown): boolean {
  return err instanceof PosternError && err.code === 'POSTERN_ERR_PROTOCOL';
}

function decodeAll(chunks: Iterable<Buffer>): Frame[] {
  const decoder = new FrameDecoder();
  const frames: Frame[] = [];
  for (const chunk of chunks) frames.push(...decoder.push(chunk));
  assert.equal(decoder.bufferedLength, 0, 'no bytes left over after the last whole frame');
  return frames;
}

/** Cuts `bytes` at the given offsets (taken modulo its length, duplicates ignored). */
function splitAt(bytes: Buffer, cuts: number[]): Buffer[] {
  const points = [...new Set(cuts.map((cut) => cut % (bytes.length + 1)))].sort((a, b) => a - b);
  const chunks: Buffer[] = [];
  let start = 0;
  for (const point of [...points, bytes.length]) {
    chunks.push(bytes.subarray(start, point));
    start = point;
  }
  return chunks;
}

function oneByteAtATime(bytes: Buffer): Buffer[] {
  return Array.from({ length: bytes.length }, (_, i) => bytes.subarray(i, i + 1));
}

/** At least one frame of every type, with edge values (largest ids, ports, windows, hosts). */
const sampleFrames: Frame[] = [
  ...Object.values(expectedVectors),
  { type: FrameType.HELLO, streamId: 0, version: 0xffff, info: {} },
  {
    type: FrameType.HELLO_OK,
    streamId: 0,
    version: 0,
    info: { nested: { list: [1, 'two', null] } },
  },
  {
    type: FrameType.OPEN,
    streamId: 0xffffffff,
    kind: StreamKind.UDP,
    host: 'h'.repeat(MAX_HOST_LENGTH),
    port: 0xffff,
  },
  { type: FrameType.OPEN, streamId: 2, kind: StreamKind.TCP, host: '192.0.2.1', port: 0 },
  { type: FrameType.OPEN_ERROR, streamId: 11, reason: Reason.SESSION_CLOSED, message: '' },
  {
    type: FrameType.DATA,
    streamId: 13,
    data: Buffer.from(Array.from({ length: 4096 }, (_, i) => i % 251)),
  },
  { type: FrameType.WINDOW, streamId: 13, increment: 0xffffffff },
  { type: FrameType.WINDOW, streamId: 13, increment: 1 },
  {
    type: FrameType.RESET,
    streamId: 15,
    reason: Reason.FLOW_CONTROL_ERROR,
    message: 'ünïcödé ✓ 𝄞',
  },
  { type: FrameType.GOAWAY, streamId: 0, reason: Reason.PROTOCOL_ERROR, message: 'bad frame' },
];

describe('documented test vectors', () => {
  const vectors = vectorBlock('vectors');
  const invalidVectors = vectorBlock('invalid-vectors');

  test('the doc lists exactly the vectors this test expects', () => {
    assert.deepEqual([...vectors.keys()].sort(), Object.keys(expectedVectors).sort());
    assert.deepEqual([...invalidVectors.keys()].sort(), [...expectedInvalidVectors].sort());
  });

  test('the vectors cover every frame type', () => {
    const covered = new Set([...vectors.values()].map((bytes) => bytes[0]));
    for (const [name, type] of Object.entries(FrameType)) {
      assert.ok(covered.has(type), `no vector for ${name}`);
    }
  });

  for (const [name, expected] of Object.entries(expectedVectors)) {
    test(`vector ${name} decodes to its frame and re-encodes to the same bytes`, () => {
      const bytes = vectors.get(name);
      assert.ok(bytes, `vector ${name} is in docs/protocol.md`);
      const decoder = new FrameDecoder();
      assert.deepStrictEqual(decoder.push(bytes), [expected]);
      assert.equal(decoder.bufferedLength, 0);
      assert.deepStrictEqual(encodeFrame(expected), bytes);
    });
  }

  for (const name of expectedInvalidVectors) {
    test(`invalid vector ${name} is rejected with a protocol error`, () => {
      const bytes = invalidVectors.get(name);
      assert.ok(bytes, `invalid vector ${name} is in docs/protocol.md`);
      assert.throws(() => new FrameDecoder().push(bytes), isProtocolError);
    });
  }
});

describe('frame round trips', () => {
  test('every sample frame decodes to itself, whatever its type', () => {
    const seen = new Set<number>();
    for (const frame of sampleFrames) {
      seen.add(frame.type);
      const bytes = encodeFrame(frame);
      assert.equal(bytes.readUInt32BE(5), bytes.length - HEADER_SIZE, 'length field');
      assert.deepStrictEqual(new FrameDecoder().push(bytes), [frame]);
    }
    assert.equal(seen.size, Object.keys(FrameType).length);
  });

  test('many frames decode the same coalesced, one byte at a time, and split at random', () => {
    const stream = Buffer.concat(sampleFrames.map((frame) => encodeFrame(frame)));
    assert.deepStrictEqual(decodeAll([stream]), sampleFrames);
    assert.deepStrictEqual(decodeAll(oneByteAtATime(stream)), sampleFrames);
    fc.assert(
      fc.property(fc.array(fc.nat(), { maxLength: 40 }), (cuts) => {
        assert.deepStrictEqual(decodeAll(splitAt(stream, cuts)), sampleFrames);
      }),
      { numRuns: 100 },
    );
  });

  test('a payload of exactly MAX_FRAME_PAYLOAD bytes is accepted', () => {
    const frame: Frame = {
      type: FrameType.DATA,
      streamId: 1,
      data: Buffer.alloc(MAX_FRAME_PAYLOAD, 7),
    };
    assert.deepStrictEqual(new FrameDecoder().push(encodeFrame(frame)), [frame]);
  });

  test('an oversized payload is rejected from its header, before the payload arrives', () => {
    const header = Buffer.alloc(HEADER_SIZE);
    header.writeUInt8(FrameType.DATA, 0);
    header.writeUInt32BE(1, 1);
    header.writeUInt32BE(MAX_FRAME_PAYLOAD + 1, 5);
    const decoder = new FrameDecoder();
    assert.deepStrictEqual(decoder.push(header.subarray(0, HEADER_SIZE - 1)), []);
    assert.throws(() => decoder.push(header.subarray(HEADER_SIZE - 1)), isProtocolError);
  });

  test('an unknown frame type is rejected from its header, before the payload arrives', () => {
    const header = Buffer.from('7f0000000100000010', 'hex');
    assert.throws(() => new FrameDecoder().push(header), isProtocolError);
  });
});

describe('FrameDecoder.bufferedLength', () => {
  const first = encodeFrame({ type: FrameType.DATA, streamId: 3, data: Buffer.from('hello') });
  const second = encodeFrame({ type: FrameType.WINDOW, streamId: 3, increment: 5 });

  test('is 0 on a fresh decoder', () => {
    assert.equal(new FrameDecoder().bufferedLength, 0);
  });

  test('counts a partial header, then a partial payload, then drops to 0 on completion', () => {
    const decoder = new FrameDecoder();
    assert.deepStrictEqual(decoder.push(first.subarray(0, 4)), []);
    assert.equal(decoder.bufferedLength, 4);
    assert.deepStrictEqual(decoder.push(first.subarray(4, HEADER_SIZE + 2)), []);
    assert.equal(decoder.bufferedLength, HEADER_SIZE + 2);
    assert.equal(decoder.push(first.subarray(HEADER_SIZE + 2)).length, 1);
    assert.equal(decoder.bufferedLength, 0);
  });

  test('counts only the incomplete tail when a chunk ends inside the next frame', () => {
    const decoder = new FrameDecoder();
    const frames = decoder.push(Buffer.concat([first, second.subarray(0, 6)]));
    assert.equal(frames.length, 1);
    assert.equal(decoder.bufferedLength, 6);
    assert.deepStrictEqual(decoder.push(second.subarray(6)), [
      { type: FrameType.WINDOW, streamId: 3, increment: 5 },
    ]);
    assert.equal(decoder.bufferedLength, 0);
  });

  test('an empty chunk changes nothing', () => {
    const decoder = new FrameDecoder();
    assert.deepStrictEqual(decoder.push(Buffer.alloc(0)), []);
    decoder.push(first.subarray(0, 3));
    assert.deepStrictEqual(decoder.push(Buffer.alloc(0)), []);
    assert.equal(decoder.bufferedLength, 3);
  });
});

describe('encodeFrame host limits', () => {
  const open = (host: string): Frame => ({
    type: FrameType.OPEN,
    streamId: 1,
    kind: StreamKind.TCP,
    host,
    port: 80,
  });

  test('rejects an empty host with RangeError', () => {
    assert.throws(() => encodeFrame(open('')), RangeError);
  });

  test('rejects a host longer than MAX_HOST_LENGTH bytes with RangeError', () => {
    assert.throws(() => encodeFrame(open('a'.repeat(MAX_HOST_LENGTH + 1))), RangeError);
  });

  test('measures the host in UTF-8 bytes, not characters', () => {
    const twoByteChars = 'ü'.repeat(128);
    assert.equal(twoByteChars.length, 128);
    assert.throws(() => encodeFrame(open(twoByteChars)), RangeError);
    assert.equal(encodeFrame(open('ü'.repeat(127))).readUInt8(HEADER_SIZE + 3), 254);
  });
});

describe('encodeDataInto', () => {
  test('writes the same bytes as encodeFrame into a larger buffer and returns just the frame', () => {
    const data = Buffer.from('payload bytes');
    const target = Buffer.alloc(100, 0xee);
    const frame = encodeDataInto(target, 7, data);
    assert.deepEqual(frame, encodeFrame({ type: FrameType.DATA, streamId: 7, data }));
    assert.equal(frame.buffer, target.buffer, 'the frame is a view of the target, not a copy');
    assert.equal(target[HEADER_SIZE + data.length], 0xee, 'bytes past the frame are untouched');
  });

  test('rejects a target too small for the frame with RangeError, writing nothing', () => {
    const target = Buffer.alloc(HEADER_SIZE + 3, 0xee);
    assert.throws(() => encodeDataInto(target, 1, Buffer.alloc(4)), RangeError);
    assert.ok(target.every((byte) => byte === 0xee));
  });
});

// ---- property tests -------------------------------------------------------------------------

// biome-ignore lint/suspicious/noControlCharactersInRegex: matching control characters is the point
const CONTROL_CHARACTER = /[\u0000-\u001f\u007f]/;
const streamId = fc.integer({ min: 1, max: 0xffffffff });
const reason = fc.constantFrom(...Object.values(Reason));
const text = fc.string({ unit: 'binary', maxLength: 80 });
const host = fc
  .oneof(
    fc.string({ unit: 'binary', minLength: 1, maxLength: 63 }),
    fc.string({ unit: 'grapheme-ascii', minLength: 1, maxLength: MAX_HOST_LENGTH }),
  )
  .filter((value) => Buffer.byteLength(value, 'utf8') <= MAX_HOST_LENGTH)
  .filter((value) => !CONTROL_CHARACTER.test(value));
// JSON cannot carry -0, so the expected info is what a JSON round trip makes of it.
const info = fc
  .dictionary(fc.string(), fc.jsonValue({ maxDepth: 3 }), { noNullPrototype: true })
  .map((value) => JSON.parse(JSON.stringify(value)) as Record<string, unknown>);
const version = fc.integer({ min: 0, max: 0xffff });

/** fc.record, minus null-prototype objects (a decoded frame always has Object.prototype). */
function plainRecord<T>(model: { [K in keyof T]: fc.Arbitrary<T[K]> }): fc.Arbitrary<T> {
  return fc.record(model, { noNullPrototype: true });
}

const arbitraryFrame: fc.Arbitrary<Frame> = fc.oneof(
  plainRecord({
    type: fc.constant(FrameType.HELLO),
    streamId: fc.constant(0 as const),
    version,
    info,
  }),
  plainRecord({
    type: fc.constant(FrameType.HELLO_OK),
    streamId: fc.constant(0 as const),
    version,
    info,
  }),
  plainRecord({
    type: fc.constant(FrameType.OPEN),
    streamId,
    kind: fc.constantFrom(StreamKind.TCP, StreamKind.UDP),
    host,
    port: fc.integer({ min: 0, max: 0xffff }),
  }),
  plainRecord({ type: fc.constant(FrameType.OPEN_OK), streamId }),
  plainRecord({ type: fc.constant(FrameType.OPEN_ERROR), streamId, reason, message: text }),
  plainRecord({
    type: fc.constant(FrameType.DATA),
    streamId,
    data: fc.uint8Array({ maxLength: 600 }).map((bytes) => Buffer.from(bytes)),
  }),
  plainRecord({
    type: fc.constant(FrameType.WINDOW),
    streamId,
    increment: fc.integer({ min: 1, max: 0xffffffff }),
  }),
  plainRecord({ type: fc.constant(FrameType.FIN), streamId }),
  plainRecord({ type: fc.constant(FrameType.RESET), streamId, reason, message: text }),
  plainRecord({
    type: fc.constant(FrameType.GOAWAY),
    streamId: fc.constant(0 as const),
    reason,
    message: text,
  }),
);

/** Feeds chunks to one decoder; only frames or a protocol error are acceptable outcomes. */
function decodeHostile(chunks: Buffer[]): void {
  const decoder = new FrameDecoder();
  try {
    for (const chunk of chunks) decoder.push(chunk);
  } catch (err) {
    if (isProtocolError(err)) return;
    throw err;
  }
}

/** A header with a plausible type, stream id and length, followed by random bytes. */
const headerGuidedBytes = fc
  .record({
    type: fc.oneof(fc.constantFrom(...Object.values(FrameType)), fc.integer({ min: 0, max: 0xff })),
    streamId: fc.oneof(fc.constantFrom(0, 1, 2, 3), fc.integer({ min: 0, max: 0xffffffff })),
    payload: fc.uint8Array({ maxLength: 64 }),
    lengthSkew: fc.constantFrom(0, 0, 0, -1, 1, 3),
  })
  .map(({ type, streamId: id, payload, lengthSkew }) => {
    const header = Buffer.alloc(HEADER_SIZE);
    header.writeUInt8(type, 0);
    header.writeUInt32BE(id, 1);
    header.writeUInt32BE(Math.max(0, payload.length + lengthSkew), 5);
    return Buffer.concat([header, payload]);
  });

/** A valid frame with a few bytes overwritten. */
const mutatedFrameBytes = fc
  .tuple(
    arbitraryFrame,
    fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 0xff })), { maxLength: 4 }),
  )
  .map(([frame, edits]) => {
    const bytes = encodeFrame(frame);
    for (const [at, value] of edits) bytes[at % bytes.length] = value;
    return bytes;
  });

describe('codec properties (fast-check)', () => {
  test('arbitrary valid frames round-trip, whatever the chunk boundaries', () => {
    fc.assert(
      fc.property(
        fc.array(arbitraryFrame, { minLength: 1, maxLength: 8 }),
        fc.array(fc.nat(), { maxLength: 12 }),
        (frames, cuts) => {
          const encoded = frames.map((frame) => encodeFrame(frame));
          const bytes = Buffer.concat(encoded);
          const decoded = decodeAll(splitAt(bytes, cuts));
          assert.deepStrictEqual(decoded, frames);
          assert.deepStrictEqual(Buffer.concat(decoded.map((frame) => encodeFrame(frame))), bytes);
        },
      ),
      { numRuns: 400 },
    );
  });

  test('random bytes yield frames or a protocol error, never another error type', () => {
    fc.assert(
      fc.property(fc.array(fc.uint8Array({ maxLength: 64 }), { maxLength: 6 }), (chunks) => {
        decodeHostile(chunks.map((chunk) => Buffer.from(chunk)));
      }),
      { numRuns: 1000 },
    );
  });

  test('header-guided random frames yield frames or a protocol error, never another error type', () => {
    fc.assert(
      fc.property(
        fc.array(headerGuidedBytes, { minLength: 1, maxLength: 6 }),
        fc.array(fc.nat(), { maxLength: 8 }),
        (frames, cuts) => {
          decodeHostile(splitAt(Buffer.concat(frames), cuts));
        },
      ),
      { numRuns: 1000 },
    );
  });

  test('mutated valid frames yield frames or a protocol error, never another error type', () => {
    fc.assert(
      fc.property(fc.array(mutatedFrameBytes, { minLength: 1, maxLength: 4 }), (frames) => {
        decodeHostile([Buffer.concat(frames)]);
      }),
      { numRuns: 1000 },
    );
  });
});
