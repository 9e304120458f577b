import './helpers/fail-on-unhandled.js';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { after, describe, it, type TestContext } from 'node:test';
import { isPosternError } from '../src/errors.js';
import { encodeFrame } from '../src/tunnel/codec.js';
import {
  CloseCode,
  FrameType,
  INITIAL_WINDOW,
  Reason,
  StreamKind,
} from '../src/tunnel/constants.js';
import { WIDE_WINDOW } from '../src/tunnel/receive-window.js';
import type { IncomingOpen } from '../src/tunnel/session.js';
import type { TunnelStream } from '../src/tunnel/stream.js';
import { createSessionPair, type SessionPair } from './helpers/session-pair.js';

const target = { kind: StreamKind.TCP, host: 'example.test', port: 80 } as const;

/** Collects a stream's bytes without destroying it (an async iterator would). */
function readAll(stream: NodeJS.ReadableStream): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    stream.on('data', (chunk: Buffer) => chunks.push(chunk));
    stream.once('end', () => resolve(Buffer.concat(chunks)));
    stream.once('error', reject);
  });
}

function sha(buf: Buffer): string {
  return createHash('sha256').update(buf).digest('hex');
}

const nextRound = () => new Promise((resolve) => setImmediate(resolve));

/** Resolves once `condition` holds, checked once per event-loop round; fails after 5 s. */
async function until(condition: () => boolean, what: () => string): Promise<void> {
  const deadline = performance.now() + 5_000;
  while (!condition()) {
    assert.ok(performance.now() < deadline, `still not so after 5 s: ${what()}`);
    await nextRound();
  }
}

/** Resolves once the bytes a stream holds unread have stopped growing. */
async function heldSettles(stream: TunnelStream): Promise<void> {
  let previous = -1;
  while (stream.queuedBytes !== previous) {
    previous = stream.queuedBytes;
    await nextRound();
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** A session pair with one stream the gateway opened: both ends, the client's left unread. */
async function openStreamPair(
  t: TestContext,
): Promise<{ stream: TunnelStream; accepted: TunnelStream; pair: SessionPair }> {
  let accepted: TunnelStream | undefined;
  const pair = await createSessionPair({
    onOpen: (open) => {
      accepted = open.accept();
    },
  });
  t.after(() => pair.close());
  const stream = await pair.gateway.openStream(target, { timeoutMs: 5000 });
  assert.ok(accepted, 'the client accepted before its OPEN_OK arrived');
  return { stream, accepted, pair };
}

/** Client side that echoes every stream back. */
function echo(open: IncomingOpen): void {
  const stream = open.accept();
  stream.pipe(stream);
}

describe('session', () => {
  it('opens a stream and echoes bytes both ways', async (t) => {
    const pair = await createSessionPair({ onOpen: echo });
    t.after(() => pair.close());
    const stream = await pair.gateway.openStream(target, { timeoutMs: 5000 });
    const payload = randomBytes(3 * 1024 * 1024 + 17);
    stream.end(payload);
    const back = await readAll(stream);
    assert.equal(sha(back), sha(payload));
  });

  it('a stream half-closed by the opener still receives the reply', async (t) => {
    const pair = await createSessionPair({
      onOpen: (open) => {
        const stream = open.accept();
        void readAll(stream).then((request) =>
          stream.end(Buffer.concat([Buffer.from('got '), request])),
        );
      },
    });
    t.after(() => pair.close());
    const stream = await pair.gateway.openStream(target, { timeoutMs: 5000 });
    stream.end('question');
    assert.equal((await readAll(stream)).toString(), 'got question');
  });

  it('a RESET read together with the OPEN_OK leaves a destroyed stream, not an uncaught error', async (t) => {
    // accept() then destroy() in one turn: OPEN_OK and RESET leave in one message and are read
    // together, so the stream fails before the opener's await returns.
    const pair = await createSessionPair({
      onOpen: (open) => open.accept().destroy(),
    });
    t.after(() => pair.close());
    const stream = await pair.gateway.openStream(target, { timeoutMs: 5000 });
    assert.equal(stream.destroyed, true);
    assert.ok(isPosternError(stream.errored, 'POSTERN_ERR_STREAM_RESET'), String(stream.errored));
  });

  it('reports OPEN_ERROR with its reason', async (t) => {
    const pair = await createSessionPair({
      onOpen: (open) => open.reject(Reason.FORBIDDEN, 'nope'),
    });
    t.after(() => pair.close());
    await assert.rejects(pair.gateway.openStream(target, { timeoutMs: 5000 }), (err) => {
      assert.ok(isPosternError(err, 'POSTERN_ERR_OPEN_FAILED'));
      assert.equal(err.reason, Reason.FORBIDDEN);
      return true;
    });
    assert.equal(pair.gateway.openStreamCount, 0);
  });

  it('a slow reader holds the writer back within one window', async (t) => {
    const { stream, accepted } = await openStreamPair(t);
    // Nobody reads on the client side: the writer must stop after about one window.
    let written = 0;
    const chunk = Buffer.alloc(64 * 1024, 1);
    while (stream.write(chunk)) written += chunk.length;
    written += chunk.length;
    await heldSettles(accepted);
    assert.ok(accepted.queuedBytes + accepted.readableLength <= 256 * 1024 + 64 * 1024);
    assert.ok(stream.writableLength > 0, 'the writer is held back');
    const received = readAll(accepted);
    stream.end();
    assert.equal((await received).length, written);
    accepted.end();
    assert.equal((await readAll(stream)).length, 0);
  });

  it('a stream alone on its session gets the wide window; a reader that stops holds at most that', async (t) => {
    const { stream, accepted } = await openStreamPair(t);
    let received = 0;
    accepted.on('data', (chunk: Buffer) => {
      received += chunk.length;
    });
    // The reader keeps up with a first write; its consuming that is what grants credit.
    const first = 1024;
    stream.write(Buffer.alloc(first, 1));
    await until(
      () => received === first,
      () => `${received} of ${first} bytes read`,
    );
    accepted.pause();
    const bulk = Buffer.alloc(WIDE_WINDOW + 1024 * 1024, 2);
    stream.write(bulk);
    // More than the initial window arrives, so the window widened ...
    await until(
      () => accepted.queuedBytes > WIDE_WINDOW - WIDE_WINDOW / 4,
      () => `${accepted.queuedBytes} bytes held`,
    );
    await heldSettles(accepted);
    // ... and the writer stops at the wide window.
    assert.ok(accepted.queuedBytes <= WIDE_WINDOW, `${accepted.queuedBytes} bytes held`);
    assert.ok(stream.writableLength > 0, 'the writer is held back');
    stream.end();
    accepted.resume();
    await once(accepted, 'end');
    assert.equal(received, first + bulk.length);
    accepted.end();
    stream.resume();
    await once(stream, 'close');
  });

  it('DATA beyond the credit given ends the session with FLOW_CONTROL_ERROR', async (t) => {
    const clientErrors: Error[] = [];
    const pair = await createSessionPair({
      onOpen: (open) => void open.accept().on('error', (error) => clientErrors.push(error)),
    });
    t.after(() => pair.close());
    // Nobody reads this stream on the gateway, so it returns no credit.
    const stream = await pair.gateway.openStream(target, { timeoutMs: 5000 });
    const sendRaw = (size: number) =>
      pair.clientSocket.send(
        encodeFrame({ type: FrameType.DATA, streamId: stream.id, data: Buffer.alloc(size) }),
      );
    for (let sent = 0; sent < INITIAL_WINDOW; sent += 64 * 1024) sendRaw(64 * 1024);
    // An open answered behind those frames: the gateway read all of the window and stayed open.
    await pair.gateway.openStream(target, { timeoutMs: 5000 });
    assert.equal(pair.gateway.state, 'open');
    sendRaw(1);
    const info = await pair.gateway.closed;
    assert.equal(info.code, CloseCode.PROTOCOL_ERROR);
    assert.ok(isPosternError(info.error, 'POSTERN_ERR_FLOW_CONTROL'), String(info.error));
    await pair.client.closed;
    assert.ok(clientErrors.length > 0, 'the streams of the client end with their session');
    for (const error of clientErrors)
      assert.ok(isPosternError(error, 'POSTERN_ERR_SESSION_CLOSED'));
  });

  it('a reset stream fails on both sides with the reason', async (t) => {
    const { stream, accepted, pair } = await openStreamPair(t);
    stream.write('x');
    const failed = once(stream, 'error');
    const closed = new Promise((resolve) => stream.once('close', resolve));
    await nextRound();
    const localError = once(accepted, 'error');
    accepted.destroy(Object.assign(new Error('target reset'), { code: 'ECONNRESET' }));
    const [err] = await failed;
    assert.ok(isPosternError(err, 'POSTERN_ERR_STREAM_RESET'));
    assert.equal(err.reason, Reason.CONNECTION_RESET);
    await closed;
    await localError;
    assert.equal(pair.gateway.openStreamCount, 0);
  });

  it('closing the session fails open streams and pending opens', async (t) => {
    const pair = await createSessionPair({ onOpen: () => undefined });
    t.after(() => pair.close());
    const pending = pair.gateway.openStream(target, { timeoutMs: 5000 });
    pair.client.destroy();
    await assert.rejects(pending, (err) => isPosternError(err, 'POSTERN_ERR_SESSION_CLOSED'));
    const info = await pair.gateway.closed;
    assert.equal(typeof info.code, 'number');
    assert.equal(pair.gateway.state, 'closed');
  });

  it('a graceful close drains streams before closing', async (t) => {
    const pair = await createSessionPair({ onOpen: echo });
    t.after(() => pair.close());
    const stream = await pair.gateway.openStream(target, { timeoutMs: 5000 });
    const closing = pair.gateway.close(5000);
    assert.equal(pair.gateway.acceptingStreams, false);
    stream.end('last words');
    assert.equal((await readAll(stream)).toString(), 'last words');
    const info = await closing;
    assert.equal(info.code, 1000);
  });

  it('200 concurrent streams carry random payloads intact both ways', async (t) => {
    const pair = await createSessionPair({ onOpen: echo });
    t.after(() => pair.close());
    const sizes = Array.from({ length: 200 }, (_, i) => (i * 7919) % (256 * 1024));
    await Promise.all(
      sizes.map(async (size) => {
        const stream = await pair.gateway.openStream(target, { timeoutMs: 10_000 });
        const payload = randomBytes(size);
        stream.end(payload);
        assert.equal(sha(await readAll(stream)), sha(payload));
      }),
    );
  });
});

after(() => undefined);
