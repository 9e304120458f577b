/**
 * Load and backpressure end to end: many concurrent SOCKS5 streams through one tunnel with
 * every byte checked, and a paused user that must hold back a fast target without the gateway
 * or the client buffering the difference.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { EventEmitter, once } from 'node:events';
import type { Socket } from 'node:net';
import { describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import type { Client } from '../src/client/client.js';
import type { Gateway } from '../src/gateway/gateway.js';
import {
  socksConnect,
  startEchoServer,
  startTcpServer,
  startTunnel,
  type TestServer,
} from './helpers/e2e.js';
import { waitForNoStreams } from './helpers/targets.js';

const KiB = 1024;
const MiB = 1024 * KiB;

// Live memory is measured after full collections, so garbage not yet collected does not count.
setFlagsFromString('--expose-gc');
const collectGarbage = runInNewContext('gc') as () => void;

function liveMemory(): { rss: number; arrayBuffers: number } {
  // The second collection waits for the first one's concurrent ArrayBuffer sweeping to finish.
  collectGarbage();
  collectGarbage();
  const { rss, arrayBuffers } = process.memoryUsage();
  return { rss, arrayBuffers };
}

/** A small seeded generator (mulberry32), so a failing size mix can be replayed from its seed. */
function seededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
}

/**
 * 500 sizes from 0 B to 4 MiB: one empty stream, four of exactly 4 MiB, twenty between
 * 256 KiB and 4 MiB, and the rest log-uniform between 1 B and 64 KiB.
 */
function payloadSizes(random: () => number): number[] {
  const sizes = [0, 4 * MiB, 4 * MiB, 4 * MiB, 4 * MiB];
  for (let i = 0; i < 20; i++) sizes.push(256 * KiB + Math.floor(random() * (4 * MiB - 256 * KiB)));
  while (sizes.length < 500)
    sizes.push(Math.max(1, Math.floor(Math.exp(random() * Math.log(64 * KiB)))));
  return sizes;
}

interface Digest {
  bytes: number;
  sha256: string;
}

function digestOf(data: Buffer): Digest {
  return { bytes: data.length, sha256: createHash('sha256').update(data).digest('hex') };
}

/** Hashes everything a socket delivers until it ends, without keeping it. */
function digestAll(socket: Socket): Promise<Digest> {
  return new Promise((resolve, reject) => {
    const hash = createHash('sha256');
    let bytes = 0;
    socket.on('data', (chunk: Buffer) => {
      bytes += chunk.length;
      hash.update(chunk);
    });
    socket.once('end', () => resolve({ bytes, sha256: hash.digest('hex') }));
    socket.once('error', reject);
  });
}

/** Waits until neither end of the tunnel has a stream open. */
async function streamsReleased(gateway: Gateway, client: Client): Promise<void> {
  await Promise.all(gateway.registry.entries().map((entry) => waitForNoStreams(entry.session)));
  for (const tunnel of client.tunnels) {
    assert.ok(tunnel.session, 'the client tunnel is still connected');
    await waitForNoStreams(tunnel.session);
  }
}

/**
 * Writes `total` random bytes to a socket as fast as it takes them, honouring write() returning
 * false, and hashes what it wrote. Emits 'blocked' when write() returns false and 'drain' when
 * the socket drains; ends the socket after the last byte.
 */
class FastWriter extends EventEmitter {
  readonly total: number;
  /** Bytes handed to socket.write() so far. */
  written = 0;
  blocked = false;
  readonly finished: Promise<Digest>;
  #socket: Socket;
  #hash = createHash('sha256');
  #finish!: (digest: Digest) => void;

  constructor(socket: Socket, total: number) {
    super();
    this.#socket = socket;
    this.total = total;
    this.finished = new Promise((resolve) => {
      this.#finish = resolve;
    });
    socket.on('drain', () => {
      this.blocked = false;
      this.emit('drain');
      this.#pump();
    });
    this.#pump();
  }

  #pump(): void {
    while (this.written < this.total) {
      const chunk = randomBytes(Math.min(64 * KiB, this.total - this.written));
      this.#hash.update(chunk);
      this.written += chunk.length;
      if (!this.#socket.write(chunk)) {
        this.blocked = true;
        this.emit('blocked');
        return;
      }
    }
    this.#socket.end();
    this.#finish({ bytes: this.written, sha256: this.#hash.digest('hex') });
  }
}

/** How long a blocked writer must go without 'drain' to count as held back. */
const STALL_QUIET_MS = 500;

/**
 * Resolves once the writer is blocked and no 'drain' comes for `STALL_QUIET_MS`: every buffer
 * between it and the paused reader is full. Waits through the drains of the filling phase.
 */
async function untilHeldBack(writer: FastWriter): Promise<void> {
  for (;;) {
    if (!writer.blocked) await once(writer, 'blocked');
    const stop = new AbortController();
    const drained = once(writer, 'drain', { signal: stop.signal }).then(
      () => true,
      () => false,
    );
    const quiet = sleep(STALL_QUIET_MS, false, { signal: stop.signal }).catch(() => true);
    const sawDrain = await Promise.race([drained, quiet]);
    stop.abort();
    if (!sawDrain) return;
  }
}

/**
 * A target that writes `total` bytes to the first connection once that connection's user has
 * half-closed, reached by a SOCKS5 user that is paused before any byte can arrive.
 */
async function startPausedDownload(
  gateway: Gateway,
  total: number,
): Promise<{ server: TestServer; user: Socket; writer: FastWriter; targetSocket: Socket }> {
  let started!: (value: { writer: FastWriter; targetSocket: Socket }) => void;
  const target = new Promise<{ writer: FastWriter; targetSocket: Socket }>((resolve) => {
    started = resolve;
  });
  const server = await startTcpServer((socket) => {
    socket.on('error', (err) => socket.destroy(err));
    socket.once('end', () =>
      started({ writer: new FastWriter(socket, total), targetSocket: socket }),
    );
    socket.resume();
  });
  const user = await socksConnect(gateway, '127.0.0.1', server.port);
  // The socks library resumes the socket in a setImmediate after the handshake; pausing before
  // that would be undone, and bytes that arrived in between would be dropped with no listener.
  await new Promise((resolve) => setImmediate(resolve));
  user.pause();
  // The user's FIN says "request sent" and starts the download.
  user.end();
  return { server, user, ...(await target) };
}

describe('load and backpressure end to end', () => {
  test('500 concurrent streams carry random payloads of 0 B to 4 MiB both ways, every byte checked by hash', {
    timeout: 120_000,
  }, async (t) => {
    const tunnel = await startTunnel();
    t.after(() => tunnel.close());
    const echo = await startEchoServer();
    t.after(() => echo.close());
    const { gateway, client } = tunnel;

    const seed = randomBytes(4).readUInt32BE(0);
    const sizes = payloadSizes(seededRandom(seed));
    const total = sizes.reduce((sum, size) => sum + size, 0);
    t.diagnostic(`seed ${seed}: ${sizes.length} streams, ${(total / MiB).toFixed(1)} MiB each way`);
    const payloads = sizes.map((size) => randomBytes(size));

    // Every connection is open before any byte moves, so all 500 streams really are concurrent.
    const users = await Promise.all(
      payloads.map(() => socksConnect(gateway, '127.0.0.1', echo.port)),
    );
    t.after(() => {
      for (const user of users) user.destroy();
    });
    assert.equal(gateway.registry.openStreamCount, payloads.length);

    const echoed = await Promise.all(
      users.map((user, index) => {
        const back = digestAll(user);
        user.end(payloads[index]);
        return back;
      }),
    );
    for (const [index, payload] of payloads.entries()) {
      assert.deepEqual(echoed[index], digestOf(payload), `stream ${index} (${payload.length} B)`);
    }

    await streamsReleased(gateway, client);
    assert.equal(gateway.registry.openStreamCount, 0);
  });

  test('a slow reader holds the writer back; memory stays bounded; nothing is lost', {
    timeout: 60_000,
  }, async (t) => {
    const tunnel = await startTunnel();
    t.after(() => tunnel.close());
    const { gateway, client } = tunnel;
    const total = 64 * MiB;
    const before = liveMemory();

    const { server, user, writer, targetSocket } = await startPausedDownload(gateway, total);
    t.after(() => server.close());
    t.after(() => user.destroy());
    await untilHeldBack(writer);
    const heldAt = { written: writer.written, bytesWritten: targetSocket.bytesWritten };
    const held = liveMemory();
    t.diagnostic(
      `held back after ${(heldAt.written / MiB).toFixed(1)} MiB written by the target; ` +
        `growth: arrayBuffers ${((held.arrayBuffers - before.arrayBuffers) / MiB).toFixed(1)} MiB, ` +
        `rss ${((held.rss - before.rss) / MiB).toFixed(1)} MiB; user socket read ${user.bytesRead} B`,
    );
    assert.ok(heldAt.written < total / 2, `the target wrote ${heldAt.written} B of ${total} B`);
    assert.ok(user.bytesRead < 256 * KiB, 'the paused user took at most a socket read or two');
    assert.ok(held.arrayBuffers - before.arrayBuffers < 32 * MiB, 'buffered bytes are bounded');
    assert.ok(held.rss - before.rss < 64 * MiB, 'resident memory growth is bounded');

    // Still held: a second quiet period without any progress at the target.
    await sleep(1_000);
    assert.equal(writer.blocked, true);
    assert.equal(writer.written, heldAt.written);
    assert.equal(targetSocket.bytesWritten, heldAt.bytesWritten);

    const received = digestAll(user);
    user.resume();
    assert.deepEqual(await received, await writer.finished);
    assert.equal((await received).bytes, total);
    await streamsReleased(gateway, client);
  });

  test('a paused reader does not hold back other streams on the same tunnel', {
    timeout: 60_000,
  }, async (t) => {
    const tunnel = await startTunnel();
    t.after(() => tunnel.close());
    const echo = await startEchoServer();
    t.after(() => echo.close());
    const { gateway, client } = tunnel;
    const { server, user, writer } = await startPausedDownload(gateway, 16 * MiB);
    t.after(() => server.close());
    t.after(() => user.destroy());
    await untilHeldBack(writer);

    const other = await socksConnect(gateway, '127.0.0.1', echo.port);
    t.after(() => other.destroy());
    const payload = randomBytes(4 * MiB);
    const echoed = digestAll(other);
    other.end(payload);
    assert.deepEqual(await echoed, digestOf(payload));
    assert.equal(writer.blocked, true, 'the paused download is still held back');

    const received = digestAll(user);
    user.resume();
    assert.deepEqual(await received, await writer.finished);
    await streamsReleased(gateway, client);
  });
});
