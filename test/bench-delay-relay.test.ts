/**
 * The benchmark's delay relay (bench/delay-relay.ts), which the long-path workload and the
 * transport's round-trip test rely on: it passes every byte and the end on, in order, no
 * sooner than its delay each way.
 */
import './helpers/fail-on-unhandled.js';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { connect, type Socket } from 'node:net';
import { test } from 'node:test';
import { startDelayRelay } from '../bench/delay-relay.js';
import { readAll, startEchoServer, startTcpServer } from './helpers/e2e.js';

const DELAY_MS = 20;

async function connectTo(port: number): Promise<Socket> {
  const socket = connect({ host: '127.0.0.1', port, allowHalfOpen: true });
  await once(socket, 'connect');
  return socket;
}

test('every byte and the end come back through the relay, in order, after two delays', async () => {
  const echo = await startEchoServer();
  const relay = await startDelayRelay(echo.port, DELAY_MS);
  try {
    const socket = await connectTo(relay.port);
    const payload = Buffer.alloc(4 * 1024 * 1024);
    for (let i = 0; i < payload.length; i++) payload[i] = (i * 7 + (i >> 12)) & 0xff;
    const sentAt = performance.now();
    const firstByte = once(socket, 'data').then(() => performance.now() - sentAt);
    const received = readAll(socket);
    socket.end(payload);
    const delay = await firstByte;
    assert.ok(delay >= 2 * DELAY_MS, `the echo came back after ${delay} ms`);
    assert.ok((await received).equals(payload), 'the echo differs from what was sent');
    socket.destroy();
  } finally {
    await relay.close();
    await echo.close();
  }
});

test('an end with no data before it is held as long as data would be', async () => {
  const target = await startTcpServer((socket) => {
    socket.resume();
    socket.once('end', () => socket.end());
  });
  const relay = await startDelayRelay(target.port, DELAY_MS);
  try {
    const socket = await connectTo(relay.port);
    const endedAt = performance.now();
    socket.resume();
    socket.end();
    await once(socket, 'end');
    const elapsed = performance.now() - endedAt;
    assert.ok(elapsed >= 2 * DELAY_MS, `the end came back after ${elapsed} ms`);
    socket.destroy();
  } finally {
    await relay.close();
    await target.close();
  }
});
