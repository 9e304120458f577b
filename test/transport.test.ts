/**
 * WebSocketTransport over a real WebSocket on 127.0.0.1: how frames are gathered into messages,
 * that nothing sent before a close is lost, and how it measures the round trip.
 */
import './helpers/fail-on-unhandled.js';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { after, before, test } from 'node:test';
import WebSocket, { WebSocketServer } from 'ws';
import { startDelayRelay } from '../bench/delay-relay.js';
import { encodeFrame, type Frame, FrameDecoder } from '../src/tunnel/codec.js';
import { CloseCode, FrameType } from '../src/tunnel/constants.js';
import { WebSocketTransport } from '../src/tunnel/transport.js';

const noHandlers = { frame: () => undefined, drain: () => undefined, close: () => undefined };

let wss: WebSocketServer;
let port: number;

before(async () => {
  wss = new WebSocketServer({ host: '127.0.0.1', port: 0, perMessageDeflate: false });
  await once(wss, 'listening');
  port = (wss.address() as AddressInfo).port;
});

after(async () => {
  await new Promise<void>((resolve) => wss.close(() => resolve()));
});

/**
 * A transport on the sending end and the raw WebSocket that receives its messages; through
 * `viaPort` (a relay to the server) when given.
 */
async function connectedPair(viaPort = port): Promise<{
  transport: WebSocketTransport;
  messages: Buffer[];
  peer: WebSocket;
  /** The WebSocket the transport owns; its events reach the transport's listeners first. */
  ws: WebSocket;
}> {
  const accepted = once(wss, 'connection') as Promise<[WebSocket]>;
  const ws = new WebSocket(`ws://127.0.0.1:${viaPort}`, { perMessageDeflate: false });
  await once(ws, 'open');
  const [peer] = await accepted;
  const messages: Buffer[] = [];
  peer.on('message', (data) => messages.push(data as Buffer));
  const transport = new WebSocketTransport(
    ws,
    { heartbeatIntervalMs: 60_000, heartbeatTimeoutMs: 120_000, remoteAddress: 'test' },
    noHandlers,
  );
  return { transport, messages, peer, ws };
}

/** Resolves once `messages` holds `count` entries. */
async function messagesArrived(peer: WebSocket, messages: Buffer[], count: number): Promise<void> {
  while (messages.length < count) await once(peer, 'message');
}

function decodeAll(messages: Buffer[]): Frame[] {
  const decoder = new FrameDecoder();
  return messages.flatMap((message) => decoder.push(message));
}

/** Waits for the first message and checks that it alone carried `frames`, in order. */
async function assertOneMessageCarried(
  peer: WebSocket,
  messages: Buffer[],
  frames: Frame[],
): Promise<void> {
  await messagesArrived(peer, messages, 1);
  assert.equal(messages.length, 1);
  assert.deepEqual(decodeAll(messages), frames);
}

const window = (streamId: number): Frame => ({ type: FrameType.WINDOW, streamId, increment: 1 });
const data = (streamId: number, size: number): Frame => ({
  type: FrameType.DATA,
  streamId,
  data: Buffer.alloc(size, streamId),
});

test('small frames sent in one turn travel in one message, in order', async () => {
  const { transport, messages, peer } = await connectedPair();
  const frames = [window(1), data(3, 100), window(5), data(7, 0)];
  for (const frame of frames) transport.send(encodeFrame(frame));
  await assertOneMessageCarried(peer, messages, frames);
  transport.destroy();
});

test('small frames sent from separate callbacks of one event-loop round share a message', async () => {
  const { transport, messages, peer } = await connectedPair();
  const frames = [data(3, 100), data(5, 100)];
  transport.send(encodeFrame(frames[0]!));
  // A microtask later is a later callback of the same round.
  await Promise.resolve();
  transport.send(encodeFrame(frames[1]!));
  await assertOneMessageCarried(peer, messages, frames);
  transport.destroy();
});

test('an urgent frame leaves when the current callback has run, without waiting for the round', async () => {
  const { transport, messages, peer } = await connectedPair();
  transport.send(encodeFrame(window(1)), { urgent: true });
  await Promise.resolve();
  transport.send(encodeFrame(data(3, 100)));
  await messagesArrived(peer, messages, 2);
  assert.deepEqual(
    messages.map((message) => decodeAll([message])),
    [[window(1)], [data(3, 100)]],
  );
  transport.destroy();
});

test('a large frame goes out as its own message, after the small ones sent before it', async () => {
  const { transport, messages, peer } = await connectedPair();
  const frames = [window(1), data(3, 64 * 1024), window(5)];
  for (const frame of frames) transport.send(encodeFrame(frame));
  await messagesArrived(peer, messages, 3);
  assert.deepEqual(
    messages.map((message) => message.length),
    frames.map((frame) => encodeFrame(frame).length),
  );
  assert.deepEqual(decodeAll(messages), frames);
  transport.destroy();
});

test('small frames adding up to 64 KiB are sent without waiting for the turn to end', async () => {
  const { transport, messages, peer } = await connectedPair();
  const frame = data(9, 8 * 1024);
  const encoded = encodeFrame(frame);
  const count = Math.ceil((64 * 1024) / encoded.length);
  for (let i = 0; i <= count; i++) transport.send(encoded);
  // The first `count` frames filled a batch and left at once; the last one waited for the turn.
  await messagesArrived(peer, messages, 2);
  assert.deepEqual(
    messages.map((message) => message.length),
    [count * encoded.length, encoded.length],
  );
  transport.destroy();
});

test('frames sent just before close() reach the peer ahead of the close frame', async () => {
  const { transport, messages, peer } = await connectedPair();
  const frames = [data(11, 10), window(11)];
  for (const frame of frames) transport.send(encodeFrame(frame));
  transport.close(CloseCode.NORMAL, 'done');
  const [code] = (await once(peer, 'close')) as [number];
  assert.equal(code, CloseCode.NORMAL);
  assert.deepEqual(decodeAll(messages), frames);
});

test('the written callback of a frame runs once its bytes are on the socket, batched or not', async () => {
  const { transport, messages, peer } = await connectedPair();
  const calls: string[] = [];
  const bothWritten = new Promise<void>((resolve) => {
    const written = (name: string) => () => {
      calls.push(name);
      if (calls.length === 2) resolve();
    };
    transport.send(encodeFrame(window(1)), { written: written('small') });
    transport.send(encodeFrame(data(3, 64 * 1024)), { written: written('large') });
  });
  assert.deepEqual(calls, [], 'nothing is written synchronously');
  await bothWritten;
  assert.deepEqual(calls, ['small', 'large']);
  await messagesArrived(peer, messages, 2);
  transport.destroy();
});

test('a frame sent after close() is dropped and its written callback still runs', async () => {
  const { transport, peer } = await connectedPair();
  transport.close(CloseCode.NORMAL, 'done');
  let written = 0;
  transport.send(encodeFrame(data(5, 64 * 1024)), { written: () => written++ });
  assert.equal(written, 1);
  await once(peer, 'close');
});

test('the round trip is measured from a ping sent at once, and is no longer than it took', async () => {
  const startedAt = performance.now();
  const { transport, ws } = await connectedPair();
  assert.equal(transport.leastRoundTripMs, undefined, 'no pong yet');
  await once(ws, 'pong');
  const roundTrip = transport.leastRoundTripMs;
  assert.ok(roundTrip !== undefined && roundTrip >= 0, `${roundTrip} ms`);
  assert.ok(roundTrip <= performance.now() - startedAt, `${roundTrip} ms`);
  transport.destroy();
});

test('over a path with a 20 ms delay each way the round trip is at least 40 ms', async () => {
  const relay = await startDelayRelay(port, 20);
  try {
    const { transport, ws } = await connectedPair(relay.port);
    await once(ws, 'pong');
    const roundTrip = transport.leastRoundTripMs;
    assert.ok(roundTrip !== undefined && roundTrip >= 40, `${roundTrip} ms`);
    transport.destroy();
  } finally {
    await relay.close();
  }
});

test('pings go out at once, 0.25, 1 and 3 s later, then with the heartbeat, and none once destroyed', (t) => {
  t.mock.timers.enable({ apis: ['setTimeout', 'setInterval'] });
  /** A transport on a stand-in WebSocket that counts the pings sent on it. */
  const counted = () => {
    const sent = { pings: 0 };
    const ws = {
      readyState: WebSocket.OPEN,
      OPEN: WebSocket.OPEN,
      binaryType: 'nodebuffer',
      on: () => undefined,
      ping: () => {
        sent.pings += 1;
      },
      terminate: () => undefined,
    };
    const transport = new WebSocketTransport(
      ws as unknown as WebSocket,
      { heartbeatIntervalMs: 10_000, heartbeatTimeoutMs: 30_000, remoteAddress: 'test' },
      noHandlers,
    );
    return { transport, sent };
  };
  const early = counted();
  early.transport.destroy();
  const { transport, sent } = counted();
  const pings = () => sent.pings;
  assert.equal(pings(), 1, 'at once');
  t.mock.timers.tick(249);
  assert.equal(pings(), 1);
  t.mock.timers.tick(1);
  assert.equal(pings(), 2, 'at 0.25 s');
  t.mock.timers.tick(750);
  assert.equal(pings(), 3, 'at 1 s');
  t.mock.timers.tick(2_000);
  assert.equal(pings(), 4, 'at 3 s');
  t.mock.timers.tick(7_000);
  assert.equal(pings(), 5, 'the heartbeat at 10 s');
  transport.destroy();
  t.mock.timers.tick(60_000);
  assert.equal(pings(), 5, 'none once destroyed');
  assert.equal(early.sent.pings, 1, 'none after a destroy before the early ones');
});

test('each ping is timed from its own sending once the one before was answered, and the shortest is kept', async () => {
  const slowServer = new WebSocketServer({
    host: '127.0.0.1',
    port: 0,
    perMessageDeflate: false,
    autoPong: false,
  });
  await once(slowServer, 'listening');
  const ws = new WebSocket(`ws://127.0.0.1:${(slowServer.address() as AddressInfo).port}`, {
    perMessageDeflate: false,
  });
  try {
    const accepted = once(slowServer, 'connection') as Promise<[WebSocket]>;
    await once(ws, 'open');
    const [peer] = await accepted;
    // The first ping is answered after 200 ms, before the next goes out, the later ones at once.
    let pings = 0;
    peer.on('ping', () => {
      pings += 1;
      if (pings === 1) setTimeout(() => peer.pong(), 200);
      else peer.pong();
    });
    const transport = new WebSocketTransport(
      ws,
      { heartbeatIntervalMs: 60_000, heartbeatTimeoutMs: 120_000, remoteAddress: 'test' },
      noHandlers,
    );
    await once(ws, 'pong');
    const first = transport.leastRoundTripMs;
    // A timer may fire up to a millisecond before performance.now() says it is due.
    assert.ok(first !== undefined && first >= 190, `${first} ms`);
    await once(ws, 'pong');
    const least = transport.leastRoundTripMs;
    assert.ok(least !== undefined && least < 150, `${least} ms after a pong at once`);
    transport.destroy();
  } finally {
    ws.terminate();
    await new Promise<void>((resolve) => slowServer.close(() => resolve()));
  }
});
