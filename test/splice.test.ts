/**
 * splice() joins a real TCP socket to a stream. These tests pin down how a failure on one side
 * reaches the other, and that both sides always close (splice's promise is what the front doors
 * wait for on shutdown).
 */
import './helpers/fail-on-unhandled.js';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { type AddressInfo, connect, createServer, type Socket } from 'node:net';
import { Duplex } from 'node:stream';
import { test } from 'node:test';
import { resetSocket, splice } from '../src/tunnel/splice.js';

/** A connected pair of real sockets on 127.0.0.1: `near` is spliced, `far` plays the user. */
async function socketPair(): Promise<{ near: Socket; far: Socket; close: () => Promise<void> }> {
  const server = createServer({ allowHalfOpen: true });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const accepted = once(server, 'connection') as Promise<[Socket]>;
  const far = connect({ port: (server.address() as AddressInfo).port, host: '127.0.0.1' });
  far.on('error', () => undefined);
  const [near] = await accepted;
  return {
    near,
    far,
    close: async () => {
      far.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** A stream whose readable side the test drives by hand; writes are accepted and kept. */
function manualStream(): Duplex & { written: Buffer[] } {
  const written: Buffer[] = [];
  const stream = new Duplex({
    read: () => undefined,
    write(chunk: Buffer, _encoding, callback) {
      written.push(chunk);
      callback();
      stream.emit('wrote');
    },
  });
  return Object.assign(stream, { written });
}

function closed(emitter: Socket): Promise<void> {
  return emitter.closed ? Promise.resolve() : new Promise((r) => emitter.once('close', () => r()));
}

test('a stream reset just as it ended toward the user still closes the socket', {
  timeout: 10_000,
}, async () => {
  const { near, far, close } = await socketPair();
  const stream = manualStream();
  const done = splice(near, stream);
  far.resume();
  // splice's pipe ends the socket on 'end' (its listener runs first); the reset then comes while
  // the socket's shutdown is still in flight, when the kernel refuses a TCP RST.
  stream.once('end', () => stream.destroy(new Error('reset by peer')));
  stream.push('reply');
  stream.push(null);
  await done;
  assert.equal(near.destroyed, true);
  await close();
});

test('a stream reset mid-transfer resets the user socket', async () => {
  const { near, far, close } = await socketPair();
  const stream = manualStream();
  const done = splice(near, stream);
  const farError = once(far, 'error') as Promise<[NodeJS.ErrnoException]>;
  stream.push('partial');
  await once(far, 'data');
  const reset = new Error('reset by peer');
  stream.destroy(reset);
  assert.deepEqual(await done, { by: 'stream', error: reset }, 'the stream failed first');
  const [error] = await farError;
  assert.equal(error.code, 'ECONNRESET');
  await closed(far);
  await close();
});

test('the user leaving mid-transfer destroys the stream', async () => {
  const { near, far, close } = await socketPair();
  const stream = manualStream();
  const done = splice(near, stream);
  far.write('request');
  await once(stream, 'wrote');
  far.resetAndDestroy();
  const cut = await done;
  assert.ok(cut, 'a side failed');
  assert.equal(cut.by, 'socket', 'the user failed first');
  assert.equal((cut.error as NodeJS.ErrnoException).code, 'ECONNRESET');
  assert.equal(stream.destroyed, true);
  assert.equal(Buffer.concat(stream.written).toString(), 'request');
  await close();
});

test('both sides ending cleanly closes both without a reset', async () => {
  const { near, far, close } = await socketPair();
  const stream = manualStream();
  const done = splice(near, stream);
  const farGot: Buffer[] = [];
  far.on('data', (chunk: Buffer) => farGot.push(chunk));
  const farEnded = once(far, 'end');
  far.end('request');
  stream.push('reply');
  stream.push(null);
  await farEnded;
  assert.equal(await done, undefined, 'neither side failed');
  assert.equal(Buffer.concat(farGot).toString(), 'reply');
  assert.equal(Buffer.concat(stream.written).toString(), 'request');
  assert.equal(stream.errored, null);
  await close();
});

test('a socket whose FIN was read before the splice ends the stream at once', async () => {
  const { near, far, close } = await socketPair();
  far.end('early');
  const early = await new Promise<Buffer>((resolve) => {
    const chunks: Buffer[] = [];
    near.on('data', (chunk: Buffer) => chunks.push(chunk));
    near.once('end', () => resolve(Buffer.concat(chunks)));
  });
  near.removeAllListeners('data');
  near.pause();
  assert.equal(early.toString(), 'early');
  const stream = manualStream();
  const finished = once(stream, 'finish');
  const done = splice(near, stream);
  await finished;
  assert.equal(stream.written.length, 0);
  stream.push(null);
  await done;
  assert.equal(stream.errored, null);
  await close();
});

test('a stream that is slow to take writes pauses the socket until it drains', async () => {
  const { near, far, close } = await socketPair();
  let held: (() => void) | null = null;
  let holding = true;
  const taken: Buffer[] = [];
  const stream = new Duplex({
    read: () => undefined,
    writableHighWaterMark: 1024,
    write(chunk: Buffer, _encoding, callback) {
      taken.push(chunk);
      if (holding) held = () => callback();
      else callback();
    },
  });
  const done = splice(near, stream);
  far.end(Buffer.alloc(64 * 1024, 1));
  await new Promise((resolve) => setTimeout(resolve, 100));
  assert.equal(near.isPaused(), true, 'the socket waits for the stream');
  assert.equal(taken.length, 1);
  holding = false;
  const finished = once(stream, 'finish');
  (held as (() => void) | null)?.();
  await finished;
  assert.equal(Buffer.concat(taken).length, 64 * 1024);
  stream.push(null);
  await done;
  await close();
});

test('a stream that closed before the splice began still settles it and resets the socket', async () => {
  const { near, far, close } = await socketPair();
  const stream = manualStream();
  stream.on('error', () => undefined);
  stream.destroy(new Error('reset before the relay'));
  await new Promise((resolve) => stream.once('close', resolve));
  const farError = once(far, 'error') as Promise<[NodeJS.ErrnoException]>;
  await splice(near, stream);
  const [error] = await farError;
  assert.equal(error.code, 'ECONNRESET');
  await close();
});

test('resetSocket resets a socket that was ended with reply bytes still queued', async () => {
  const { near, far, close } = await socketPair();
  // The user reads nothing yet, so the reply backs up in near's write queue behind end().
  far.pause();
  near.end(Buffer.alloc(16 * 1024 * 1024, 1));
  assert.ok(near.writableLength > 0, 'the reply is still queued');
  resetSocket(near);
  const ended = new Promise<string>((resolve) => {
    far.once('end', () => resolve('end'));
    far.once('error', (error: NodeJS.ErrnoException) => resolve(error.code ?? 'error'));
  });
  far.resume();
  assert.equal(await ended, 'ECONNRESET', 'a cut reply must not look complete');
  await close();
});
