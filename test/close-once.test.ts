/**
 * DESIGN §1 rule 1 (one owner, closed exactly once) checked from the outside: a spy on
 * `Socket.prototype.destroy` and `WebSocket.prototype.close` / `terminate` watches a real gateway
 * and real clients through every shutdown path, and every socket created must end destroyed.
 * Rule 4 (an unhandled rejection or uncaught exception fails the tests) is proved on a fixture.
 */
import './helpers/fail-on-unhandled.js';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer as createHttpsServer } from 'node:https';
import { type AddressInfo, connect, createServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import WebSocket, { WebSocketServer } from 'ws';
import type { Gateway } from '../src/gateway/gateway.js';
import { encodeFrame, type Frame, FrameDecoder } from '../src/tunnel/codec.js';
import { CloseCode, FrameType, PROTOCOL_VERSION } from '../src/tunnel/constants.js';
import type { TransportCloseInfo } from '../src/tunnel/transport.js';
import { CloseSpy, type SecondClose } from './helpers/close-spy.js';
import {
  GROUP,
  readAll,
  socksConnect,
  startClient,
  startGateway,
  startTcpServer,
  type TestServer,
  tunnelUrl,
  waitForRegistry,
  waitForSessions,
} from './helpers/e2e.js';
import { authRequest, connectRequest, connectToProxy, greeting } from './helpers/raw-socks5.js';

const HEARTBEAT = { interval: 250, timeout: 1_000 };
const DRAIN_MS = 400;
const SILENT_GROUP = 'silent';
const SILENT_PASSWORD = 'silent-secret';

/** Resolves on 'close' whatever ended the socket (events.once would reject on 'error'). */
function whenClosed(socket: Socket): Promise<void> {
  if (socket.closed) return Promise.resolve();
  return new Promise((resolve) => socket.once('close', () => resolve()));
}

/** Keeps a socket's errors for the test to assert on, so none is unhandled. */
function collectErrors(socket: Socket): Error[] {
  const errors: Error[] = [];
  socket.on('error', (error) => errors.push(error));
  return errors;
}

function codeOf(error: Error | undefined): string | undefined {
  return (error as NodeJS.ErrnoException | undefined)?.code;
}

/** Waits for the next connection a target server accepts. */
function nextConnection(target: TestServer): Promise<Socket> {
  return once(target.server, 'connection').then(([socket]) => socket as Socket);
}

async function sendAndEcho(user: Socket, text: string): Promise<void> {
  const echoed = once(user, 'data');
  user.write(text);
  const [chunk] = (await echoed) as [Buffer];
  assert.equal(chunk.toString(), text);
}

/** A port nothing listens on: bound, then released. */
async function closedPort(): Promise<number> {
  const server = createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;
  server.close();
  await once(server, 'close');
  return port;
}

/**
 * A tunnel peer the test controls: it completes the handshake in group "silent", answers the
 * opens it is told to answer, and never answers a ping (autoPong off), so the gateway's
 * heartbeat is the only thing that can end it.
 */
async function startSilentPeer(gateway: Gateway): Promise<{
  ws: WebSocket;
  frames: Frame[];
  nextFrame(type: Frame['type']): Promise<Frame>;
}> {
  const ws = new WebSocket(tunnelUrl(gateway), {
    rejectUnauthorized: false,
    perMessageDeflate: false,
    autoPong: false,
  });
  const decoder = new FrameDecoder();
  const frames: Frame[] = [];
  const waiters: { type: Frame['type']; resolve: (frame: Frame) => void }[] = [];
  ws.on('message', (data: Buffer) => {
    for (const frame of decoder.push(data)) {
      frames.push(frame);
      const index = waiters.findIndex((waiter) => waiter.type === frame.type);
      if (index >= 0) waiters.splice(index, 1)[0]!.resolve(frame);
    }
  });
  const nextFrame = (type: Frame['type']) =>
    new Promise<Frame>((resolve) => waiters.push({ type, resolve }));
  await once(ws, 'open');
  const welcome = nextFrame(FrameType.HELLO_OK);
  ws.send(
    encodeFrame({
      type: FrameType.HELLO,
      streamId: 0,
      version: PROTOCOL_VERSION,
      info: { client_id: 'silent-peer', group_id: SILENT_GROUP, group_password: SILENT_PASSWORD },
    }),
  );
  await welcome;
  return { ws, frames, nextFrame };
}

/**
 * A stand-in gateway that completes the handshake and then says nothing, not even a pong, so a
 * real client's heartbeat must end the tunnel.
 */
async function startMuteGateway(
  gateway: Gateway,
): Promise<{ url: string; close(): Promise<void> }> {
  const server = createHttpsServer({
    cert: gateway.certificate.cert,
    key: gateway.certificate.key,
  });
  const wss = new WebSocketServer({ server, autoPong: false, perMessageDeflate: false });
  wss.on('connection', (ws) => {
    ws.once('message', () => {
      ws.send(
        encodeFrame({
          type: FrameType.HELLO_OK,
          streamId: 0,
          version: PROTOCOL_VERSION,
          info: { session_id: 'mute', heartbeat_interval_ms: 60_000, heartbeat_timeout_ms: 60_000 },
        }),
      );
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;
  return {
    url: `wss://127.0.0.1:${port}/tunnel`,
    async close() {
      // wss.clients holds only WebSockets that have not closed yet.
      for (const ws of wss.clients) ws.terminate();
      wss.close();
      const closed = once(server, 'close');
      server.close();
      server.closeAllConnections();
      await closed;
    },
  };
}

function describeSecondCloses(closes: readonly SecondClose[]): string {
  return closes.map((close) => `${close.call} on ${close.target}\n${close.stack}`).join('\n\n');
}

/** One line per distinct call site: `socket.destroy at node:_tls_wrap:735:33 (node) x5`. */
function summarizeSecondCloses(closes: readonly SecondClose[]): string {
  const counts = new Map<string, number>();
  for (const close of closes) {
    const site = close.stack.split('\n')[0]?.trim().replace(/^at /, '') ?? 'unknown';
    const key = `${close.call} at ${site} (${close.origin})`;
    counts.set(key, (counts.get(key) ?? 0) + 1);
  }
  return [...counts].map(([key, count]) => `${key} x${count}`).join('; ');
}

test('every socket and WebSocket is closed exactly once through every shutdown path', async (t) => {
  const spy = new CloseSpy();
  spy.install();
  t.after(() => spy.restore());
  const cleanups: (() => Promise<void>)[] = [];
  try {
    const targetErrors: Error[] = [];
    const echo = await startTcpServer((socket) => {
      socket.on('error', (error) => targetErrors.push(error));
      socket.pipe(socket);
    });
    cleanups.push(() => echo.close());
    const resetter = await startTcpServer((socket) => {
      socket.once('data', () => socket.resetAndDestroy());
    });
    cleanups.push(() => resetter.close());

    const gateway = await startGateway({
      heartbeat: HEARTBEAT,
      drain_timeout: DRAIN_MS,
      groups: [
        { id: GROUP, password: 'team-secret' },
        { id: SILENT_GROUP, password: SILENT_PASSWORD },
      ],
    });
    cleanups.push(() => gateway.close());
    const client = startClient(gateway, { heartbeat: HEARTBEAT, drain_timeout: DRAIN_MS });
    cleanups.push(() => client.close());
    await waitForSessions(gateway, 1);

    await t.test('a user that closes normally', async () => {
      const arrived = nextConnection(echo);
      const user = await socksConnect(gateway, '127.0.0.1', echo.port);
      const target = await arrived;
      user.end('hello');
      assert.equal((await readAll(user)).toString(), 'hello');
      await Promise.all([whenClosed(user), whenClosed(target)]);
    });

    await t.test('a user that resets', async () => {
      const arrived = nextConnection(echo);
      const user = await socksConnect(gateway, '127.0.0.1', echo.port);
      const target = await arrived;
      await sendAndEcho(user, 'ping');
      user.resetAndDestroy();
      await Promise.all([whenClosed(user), whenClosed(target)]);
    });

    await t.test('a target that resets', async () => {
      const user = await socksConnect(gateway, '127.0.0.1', resetter.port);
      const errors = collectErrors(user);
      user.write('x');
      await whenClosed(user);
      assert.equal(codeOf(errors[0]), 'ECONNRESET');
    });

    await t.test('opens refused with OPEN_ERROR (connection refused, forbidden)', async () => {
      const port = await closedPort();
      await assert.rejects(socksConnect(gateway, '127.0.0.1', port), /ConnectionRefused/);
      await assert.rejects(socksConnect(gateway, '169.254.169.254', 80), /NotAllowed/);
    });

    await t.test('the client session destroyed with a stream open', async () => {
      const arrived = nextConnection(echo);
      const user = await socksConnect(gateway, '127.0.0.1', echo.port);
      const target = await arrived;
      const errors = collectErrors(user);
      await sendAndEcho(user, 'before');
      const tunnel = client.tunnels[0]!;
      const session = tunnel.session!;
      const gatewaySide = gateway.registry.entries()[0]!.session;
      const reconnected = once(tunnel, 'connected');
      session.destroy();
      await Promise.all([whenClosed(user), whenClosed(target), session.closed, reconnected]);
      assert.equal(codeOf(errors[0]), 'ECONNRESET');
      await waitForRegistry(gateway, () =>
        gateway.registry.entries().some((entry) => entry.session !== gatewaySide),
      );
      await gatewaySide.closed;
      assert.equal(client.connects, 2);
    });

    await t.test('a pending open cancelled by its user, then a heartbeat timeout', async () => {
      const peer = await startSilentPeer(gateway);
      cleanups.push(async () => {
        if (peer.ws.readyState !== WebSocket.CLOSED) peer.ws.terminate();
      });
      const credentials = { userId: SILENT_GROUP, password: SILENT_PASSWORD };
      // The first user gives up while the peer has not answered its open.
      const firstOpen = peer.nextFrame(FrameType.OPEN);
      const leaving = await connectToProxy(gateway.addresses.socks5!.port);
      leaving.write(
        Buffer.concat([
          greeting(),
          authRequest(credentials),
          connectRequest('127.0.0.1', echo.port),
        ]),
      );
      const open = await firstOpen;
      const cancelled = peer.nextFrame(FrameType.RESET);
      const peerClosed = once(peer.ws, 'close');
      // A reset, not a FIN: the gateway takes a FIN before its reply as a half-close.
      leaving.resetAndDestroy();
      assert.equal((await cancelled).streamId, open.streamId);
      // The second user's open is answered; then the peer falls silent for good.
      const secondOpen = peer.nextFrame(FrameType.OPEN);
      const staying = socksConnect(gateway, '127.0.0.1', echo.port, credentials);
      const { streamId } = await secondOpen;
      peer.ws.send(encodeFrame({ type: FrameType.OPEN_OK, streamId }));
      const user = await staying;
      const errors = collectErrors(user);
      await whenClosed(user);
      assert.equal(codeOf(errors[0]), 'ECONNRESET');
      await peerClosed;
    });

    await t.test('the client heartbeat times out against a mute gateway', async () => {
      const mute = await startMuteGateway(gateway);
      cleanups.push(() => mute.close());
      const muted = startClient(gateway, {
        id: 'client-muted',
        heartbeat: HEARTBEAT,
        gateway: { urls: [mute.url], tls_fingerprint: gateway.certificate.fingerprint },
      });
      cleanups.push(() => muted.close());
      const [info] = (await once(muted.tunnels[0]!, 'disconnected')) as [TransportCloseInfo];
      assert.equal(info.code, CloseCode.HEARTBEAT_TIMEOUT);
      await muted.close();
    });

    await t.test('client.close() with one stream finishing and one left open', async () => {
      const finishing = await socksConnect(gateway, '127.0.0.1', echo.port);
      const abandoned = await socksConnect(gateway, '127.0.0.1', echo.port);
      const abandonedErrors = collectErrors(abandoned);
      await sendAndEcho(abandoned, 'still here');
      const closing = client.close();
      finishing.end('bye');
      assert.equal((await readAll(finishing)).toString(), 'bye');
      await Promise.all([closing, whenClosed(finishing), whenClosed(abandoned)]);
      assert.equal(codeOf(abandonedErrors[0]), 'ECONNRESET');
      await waitForSessions(gateway, 0);
    });

    await t.test('gateway.close() with a stream open', async () => {
      const second = startClient(gateway, { id: 'client-b', heartbeat: HEARTBEAT });
      cleanups.push(() => second.close());
      await waitForSessions(gateway, 1);
      const user = await socksConnect(gateway, '127.0.0.1', echo.port);
      const errors = collectErrors(user);
      await sendAndEcho(user, 'draining');
      await gateway.close();
      await whenClosed(user);
      assert.equal(codeOf(errors[0]), 'ECONNRESET');
      await second.close();
    });
    assert.deepEqual(
      targetErrors.map(codeOf).filter((code) => code !== 'ECONNRESET'),
      [],
      'targets only ever see resets',
    );
  } finally {
    for (const cleanup of cleanups.reverse()) await cleanup();
  }

  const unclosed = await spy.unclosedSocketsAfter(5_000);
  spy.restore();
  const fromUs = spy.secondCloses.filter(
    (close) => close.origin === 'product' || close.origin === 'test',
  );
  const elsewhere = spy.secondCloses.filter((close) => !fromUs.includes(close));
  if (elsewhere.length > 0) {
    t.diagnostic(
      `second closes made inside node or libraries: ${summarizeSecondCloses(elsewhere)}`,
    );
  }
  t.diagnostic(`sockets tracked: ${spy.socketCount}`);
  assert.ok(spy.socketCount >= 20, `the spy saw only ${spy.socketCount} sockets`);
  assert.deepEqual(unclosed, [], 'every socket created ended destroyed');
  assert.equal(fromUs.length, 0, describeSecondCloses(fromUs));
});

test('the close spy catches a second destroy() and a second WebSocket close()', async (t) => {
  const spy = new CloseSpy();
  spy.install();
  t.after(() => spy.restore());
  const server = await startTcpServer((socket) => socket.resume());
  t.after(() => server.close());
  const socket = connect(server.port, '127.0.0.1');
  await once(socket, 'connect');
  socket.destroy();
  socket.destroy();
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0 });
  await once(wss, 'listening');
  t.after(() => wss.close());
  const ws = new WebSocket(`ws://127.0.0.1:${(wss.address() as AddressInfo).port}`);
  await once(ws, 'open');
  ws.close();
  ws.close();
  await once(ws, 'close');
  ws.terminate();
  spy.restore();
  assert.deepEqual(
    spy.secondCloses.map((close) => [close.call, close.origin]),
    [
      ['socket.destroy', 'test'],
      ['ws.close', 'test'],
      ['ws.terminate', 'test'],
    ],
  );
});

test('the suite fails on any unhandled rejection or uncaught exception', async (t) => {
  const helper = fileURLToPath(new URL('./helpers/fail-on-unhandled.js', import.meta.url));
  const dir = await mkdtemp(join(tmpdir(), 'postern-fixture-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const fixtures = {
    clean: `test('passes', () => {});`,
    rejection: `test('rejects', async () => {
      Promise.reject(new Error('fixture-rejection'));
      await new Promise((resolve) => setTimeout(resolve, 50));
    });`,
    lateRejection: `test('rejects after it ended', () => {
      setTimeout(() => { Promise.reject(new Error('fixture-late-rejection')); }, 20);
    });`,
    exception: `test('throws later', async () => {
      setTimeout(() => { throw new Error('fixture-exception'); }, 10);
      await new Promise((resolve) => setTimeout(resolve, 50));
    });`,
  };
  const run = async (name: keyof typeof fixtures) => {
    // Outside any directory named test, so no default test glob ever picks it up.
    const file = join(dir, `${name}.mjs`);
    await writeFile(
      file,
      `import ${JSON.stringify(helper)};\nimport { test } from 'node:test';\n${fixtures[name]}\n`,
    );
    const env = { ...process.env };
    // The parent runner's context would change how the child reports.
    delete env.NODE_TEST_CONTEXT;
    return new Promise<{ code: number; output: string }>((resolve) => {
      execFile(
        process.execPath,
        ['--test', file],
        { env, timeout: 30_000 },
        (error, stdout, stderr) => {
          const code = error ? Number((error as { code?: unknown }).code ?? 1) : 0;
          resolve({ code, output: `${stdout}${stderr}` });
        },
      );
    });
  };
  const [clean, rejection, lateRejection, exception] = await Promise.all([
    run('clean'),
    run('rejection'),
    run('lateRejection'),
    run('exception'),
  ]);
  assert.equal(clean.code, 0, clean.output);
  assert.notEqual(rejection.code, 0, rejection.output);
  assert.match(rejection.output, /unhandled rejection: Error: fixture-rejection/);
  assert.notEqual(lateRejection.code, 0, lateRejection.output);
  assert.match(lateRejection.output, /unhandled rejection: Error: fixture-late-rejection/);
  assert.notEqual(exception.code, 0, exception.output);
  assert.match(exception.output, /uncaughtException: Error: fixture-exception/);
});
