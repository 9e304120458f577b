import './helpers/fail-on-unhandled.js';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { connect, type Socket } from 'node:net';
import { Writable } from 'node:stream';
import { test } from 'node:test';
import { INITIAL_WINDOW } from '../src/tunnel/constants.js';
import { type BorrowingWritable, DirectReader } from '../src/tunnel/direct-read.js';
import { TunnelStream } from '../src/tunnel/stream.js';
import { startTcpServer } from './helpers/e2e.js';
import { recordingStreamHost, TCP_TARGET } from './helpers/stream-host.js';
import { sha256 } from './helpers/targets.js';

/** Deterministic bytes that differ from offset to offset, so a reused buffer shows. */
function pattern(length: number, seed = 1): Buffer {
  const bytes = Buffer.alloc(length);
  for (let i = 0; i < length; i++) bytes[i] = (i * 31 + seed * 7 + (i >>> 9)) & 0xff;
  return bytes;
}

/**
 * A writer that copies borrowed bytes, as TunnelStream does, and takes each write only after a
 * turn of the event loop, so that a fast socket fills it.
 */
class SlowCollector extends Writable implements BorrowingWritable {
  readonly received: Buffer[] = [];
  refusals = 0;

  constructor() {
    super({ highWaterMark: 16 * 1024 });
  }

  writeBorrowed(data: Buffer): boolean {
    const room = this.write(Buffer.from(data));
    if (!room) this.refusals++;
    return room;
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: () => void): void {
    this.received.push(chunk);
    setImmediate(callback);
  }
}

test('a full writer stops the socket reading until it drains; every byte arrives in order', async (t) => {
  const sent = pattern(8 * 1024 * 1024);
  const { port, close } = await startTcpServer((socket) => socket.end(sent));
  t.after(close);
  const reader = new DirectReader();
  const socket = connect({ host: '127.0.0.1', port, onread: reader.onread() });
  t.after(() => socket.destroy());
  await once(socket, 'connect');
  const to = new SlowCollector();
  reader.relay(socket, to);
  await once(to, 'finish');
  assert.ok(to.refusals > 0, 'the writer pushed back at least once');
  assert.equal(sha256(Buffer.concat(to.received)), sha256(sent));
});

test('bytes read before the relay begins come first; the socket waits for the relay', async (t) => {
  const banner = pattern(1000, 2);
  const rest = pattern(300_000, 3);
  let serverSide: Socket | undefined;
  const { port, close } = await startTcpServer((socket) => {
    serverSide = socket;
    socket.write(banner);
  });
  t.after(close);
  const reader = new DirectReader();
  const { buffer, callback } = reader.onread();
  let reads = 0;
  let firstRead!: () => void;
  const firstReadDone = new Promise<void>((resolve) => {
    firstRead = resolve;
  });
  // The reader's own callback, counted, so the test knows when the banner has been read.
  const socket = connect({
    host: '127.0.0.1',
    port,
    onread: {
      buffer,
      callback: (length: number, into: Uint8Array) => {
        reads++;
        const keepReading = callback(length, into);
        firstRead();
        return keepReading;
      },
    },
  });
  t.after(() => socket.destroy());
  await firstReadDone;
  assert.equal(reads, 1, 'one read, then the socket stopped for want of a relay');
  const to = new SlowCollector();
  reader.relay(socket, to);
  serverSide!.end(rest);
  await once(to, 'finish');
  assert.equal(sha256(Buffer.concat(to.received)), sha256(Buffer.concat([banner, rest])));
});

test('writeBorrowed frames what credit allows at once and copies the rest before returning', async () => {
  const { host, sent } = recordingStreamHost(INITIAL_WINDOW);
  const stream = new TunnelStream(host, 1, TCP_TARGET);
  const first = pattern(INITIAL_WINDOW + 40_000, 4);
  const second = pattern(10_000, 5);
  const expected = Buffer.concat([first, second]);
  const borrowed = Buffer.from(first);
  stream.writeBorrowed(borrowed);
  assert.equal(Buffer.concat(sent).length, INITIAL_WINDOW, 'the credit went out at once');
  borrowed.fill(0);
  // Queued behind the first write's rest, not sent ahead of it.
  const borrowedAgain = Buffer.from(second);
  stream.writeBorrowed(borrowedAgain);
  borrowedAgain.fill(0);
  assert.equal(Buffer.concat(sent).length, INITIAL_WINDOW);
  stream.receiveWindow(INITIAL_WINDOW);
  await new Promise((resolve) => setImmediate(resolve));
  assert.equal(
    sha256(Buffer.concat(sent)),
    sha256(expected),
    'the caller reusing its buffer changed nothing',
  );
  stream.destroy();
});
