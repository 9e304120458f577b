import './helpers/fail-on-unhandled.js';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { after, describe, it } from 'node:test';
import { isPosternError } from '../src/errors.js';
import { Reason, StreamKind } from '../src/tunnel/constants.js';
import type { IncomingOpen } from '../src/tunnel/session.js';
import type { TunnelStream } from '../src/tunnel/stream.js';
import { createSessionPair } from './helpers/session-pair.js';

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
    let accepted: TunnelStream | undefined;
    const pair = await createSessionPair({
      onOpen: (open) => {
        accepted = open.accept();
      },
    });
    t.after(() => pair.close());
    const stream = await pair.gateway.openStream(target, { timeoutMs: 5000 });
    // Nobody reads on the client side: the writer must stop after about one window.
    let written = 0;
    const chunk = Buffer.alloc(64 * 1024, 1);
    while (stream.write(chunk)) written += chunk.length;
    written += chunk.length;
    // Let frames flow until the pipe settles (the client queue stops growing).
    let previous = -1;
    while (accepted?.queuedBytes !== previous) {
      previous = accepted?.queuedBytes ?? 0;
      await new Promise((resolve) => setImmediate(resolve));
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    assert.ok(accepted);
    assert.ok(accepted.queuedBytes + accepted.readableLength <= 256 * 1024 + 64 * 1024);
    assert.ok(stream.writableLength > 0, 'the writer is held back');
    const received = readAll(accepted);
    stream.end();
    assert.equal((await received).length, written);
    accepted.end();
    assert.equal((await readAll(stream)).length, 0);
  });

  it('a reset stream fails on both sides with the reason', async (t) => {
    let accepted: TunnelStream | undefined;
    const pair = await createSessionPair({
      onOpen: (open) => {
        accepted = open.accept();
      },
    });
    t.after(() => pair.close());
    const stream = await pair.gateway.openStream(target, { timeoutMs: 5000 });
    stream.write('x');
    const failed = once(stream, 'error');
    const closed = new Promise((resolve) => stream.once('close', resolve));
    await new Promise((resolve) => setImmediate(resolve));
    assert.ok(accepted);
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

  it('500 concurrent streams carry random payloads intact both ways', async (t) => {
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
