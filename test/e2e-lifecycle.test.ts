/**
 * End-to-end lifecycle: idle survival, heartbeat-based failure detection, a client killed
 * mid-transfer, reconnection after a gateway restart, and graceful drain on shutdown.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import type { Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it, type TestContext } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import type { Client } from '../src/client/client.js';
import type { Gateway } from '../src/gateway/gateway.js';
import { POSTERN_NODE_FLAGS } from '../src/node-flags.js';
import { loadServerCertificate } from '../src/tls/certificates.js';
import { CloseCode } from '../src/tunnel/constants.js';
import {
  GROUP,
  PASSWORD,
  readAll,
  socksConnect,
  startClient,
  startEchoServer,
  startGateway,
  startTcpServer,
  startTunnel,
  tunnelUrl,
  waitForRegistry,
  waitForSessions,
} from './helpers/e2e.js';
import { startRelay } from './helpers/relay.js';
import { CurlFailed, curlThroughGateway } from './helpers/targets.js';

const cli = fileURLToPath(new URL('../src/cli.js', import.meta.url));
const TEST_TIMEOUT_MS = 30_000;
const CLEANUP_TIMEOUT_MS = 15_000;

/**
 * Runs the registered closers in reverse order after the test, every one of them even when an
 * earlier one fails, and reports the failures together.
 */
function cleanupStack(t: TestContext): (close: () => unknown) => void {
  const closers: (() => unknown)[] = [];
  t.after(
    async () => {
      const failures: unknown[] = [];
      for (const close of closers.reverse()) {
        try {
          await close();
        } catch (err) {
          failures.push(err);
        }
      }
      if (failures.length > 0) throw new AggregateError(failures, 'cleanup failed');
    },
    // A close that never resolves is a failure, not a hung test run.
    { timeout: CLEANUP_TIMEOUT_MS },
  );
  return (close) => closers.push(close);
}

/** Writes `payload` and resolves with the first `payload.length` bytes that come back. */
function roundTrip(socket: Socket, payload: Buffer): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let received = 0;
    const settle = () => {
      socket.pause();
      socket.off('data', onData);
      socket.off('end', onEnd);
      socket.off('error', onError);
    };
    const onData = (chunk: Buffer) => {
      chunks.push(chunk);
      received += chunk.length;
      if (received < payload.length) return;
      settle();
      resolve(Buffer.concat(chunks));
    };
    const onEnd = () => {
      settle();
      reject(new Error(`connection ended after ${received} of ${payload.length} bytes`));
    };
    const onError = (err: Error) => {
      settle();
      reject(err);
    };
    socket.on('data', onData);
    socket.once('end', onEnd);
    socket.once('error', onError);
    socket.resume();
    socket.write(payload);
  });
}

/** Resolves once the client has established `count` sessions in total. */
function waitForConnects(client: Client, count: number): Promise<void> {
  return new Promise((resolve) => {
    const check = () => {
      if (client.connects < count) return;
      for (const tunnel of client.tunnels) tunnel.off('connected', check);
      resolve();
    };
    for (const tunnel of client.tunnels) tunnel.on('connected', check);
    check();
  });
}

/** The gateway's one registered session of `clientId`. */
function sessionOf(gateway: Gateway, clientId: string) {
  const matches = gateway.registry.entries().filter((entry) => entry.clientId === clientId);
  assert.equal(matches.length, 1, `expected one session of ${clientId}`);
  return matches[0]!.session;
}

describe('e2e: tunnel and connection lifecycle', () => {
  it('an idle tunnel and an idle proxied connection survive 10 s and still carry data', {
    timeout: TEST_TIMEOUT_MS,
  }, async (t) => {
    const heartbeat = { interval: 200, timeout: 1_000 };
    const add = cleanupStack(t);
    const echo = await startEchoServer();
    add(() => echo.close());
    const tunnel = await startTunnel({ heartbeat }, { heartbeat });
    add(() => tunnel.close());
    const { gateway, client } = tunnel;
    await waitForConnects(client, 1);
    const session = sessionOf(gateway, client.id);
    const sessionId = session.id;
    let registryChanges = 0;
    const countChange = () => registryChanges++;
    gateway.registry.on('change', countChange);
    add(() => gateway.registry.off('change', countChange));

    const user = await socksConnect(gateway, '127.0.0.1', echo.port);
    add(() => user.destroy());
    const before = Buffer.from('before the idle period');
    assert.deepEqual(await roundTrip(user, before), before);

    // Fifty heartbeat intervals and ten heartbeat timeouts of complete silence on the connection.
    await sleep(10_000);

    const after = Buffer.from('after the idle period');
    assert.deepEqual(await roundTrip(user, after), after);
    const second = await socksConnect(gateway, '127.0.0.1', echo.port);
    add(() => second.destroy());
    const fresh = Buffer.from('a new connection');
    assert.deepEqual(await roundTrip(second, fresh), fresh);

    assert.equal(client.connects, 1, 'the client reconnected');
    assert.equal(registryChanges, 0, 'the registry changed while idle');
    assert.equal(sessionOf(gateway, client.id), session);
    assert.equal(session.id, sessionId);
    assert.equal(session.state, 'open');
    assert.equal(session.openStreamCount, 2);
  });

  it('a client that stops answering is dropped within heartbeat.timeout and new streams go to the other client', {
    timeout: TEST_TIMEOUT_MS,
  }, async (t) => {
    const gatewayHeartbeat = { interval: 200, timeout: 1_000 };
    // The clients would notice the silence only after a minute: the gateway must act alone.
    const clientHeartbeat = { interval: 1_000, timeout: 60_000 };
    const slack = 3_000;
    const add = cleanupStack(t);
    const echo = await startEchoServer();
    add(() => echo.close());
    const gateway = await startGateway({ heartbeat: gatewayHeartbeat });
    add(() => gateway.close());
    const relay = await startRelay(gateway.addresses.tunnel.port);
    const clientA = startClient(gateway, {
      id: 'client-a',
      heartbeat: clientHeartbeat,
      gateway: {
        urls: [`wss://127.0.0.1:${relay.port}/tunnel`],
        tls_fingerprint: gateway.certificate.fingerprint,
      },
    });
    add(() => clientA.close());
    const clientB = startClient(gateway, { id: 'client-b', heartbeat: clientHeartbeat });
    add(() => clientB.close());
    // Registered last so it runs first: client A must see its tunnel break before it closes.
    add(() => relay.close());
    // The gateway registers a session before its WELCOME reaches the client: wait for both ends.
    await Promise.all([waitForSessions(gateway, 2), waitForConnects(clientA, 1)]);
    const sessionA = sessionOf(gateway, 'client-a');
    const sessionB = sessionOf(gateway, 'client-b');

    relay.freeze();
    const frozenAt = performance.now();
    await waitForRegistry(gateway, () => {
      const entries = gateway.registry.entries();
      return entries.length === 1 && entries[0]!.clientId === 'client-b';
    });
    const droppedAt = performance.now();

    // The gateway last heard A when the relay last passed A's bytes on, or a moment later.
    const silence = droppedAt - relay.lastForwardedToTargetAt;
    assert.ok(
      silence >= gatewayHeartbeat.timeout,
      `dropped after ${Math.round(silence)} ms of silence, before heartbeat.timeout`,
    );
    const elapsed = droppedAt - frozenAt;
    assert.ok(
      elapsed < gatewayHeartbeat.timeout + slack,
      `dropped only ${Math.round(elapsed)} ms after the freeze`,
    );
    assert.equal(sessionA.state, 'closed');
    const closeInfo = await sessionA.closed;
    assert.equal(closeInfo.code, CloseCode.HEARTBEAT_TIMEOUT);
    assert.equal(sessionB.state, 'open');
    assert.ok(clientA.tunnels[0]!.session, 'client A noticed the silence; the test proves nothing');

    const users = await Promise.all(
      Array.from({ length: 4 }, () => socksConnect(gateway, '127.0.0.1', echo.port)),
    );
    for (const user of users) add(() => user.destroy());
    for (const [index, user] of users.entries()) {
      const payload = Buffer.from(`connection ${index}`);
      assert.deepEqual(await roundTrip(user, payload), payload);
    }
    assert.equal(sessionB.openStreamCount, users.length);
    assert.equal(gateway.registry.openStreamCount, users.length);
    assert.equal(gateway.registry.entries().length, 1);
  });

  it("a client killed mid-transfer resets the user's connection and the open-stream count returns to 0", {
    timeout: TEST_TIMEOUT_MS,
  }, async (t) => {
    const total = 256 * 1024 * 1024;
    const killAfter = 4 * 1024 * 1024;
    const chunk = Buffer.alloc(64 * 1024, 0x5a);
    const add = cleanupStack(t);
    let clientProcess: ChildProcess | undefined;
    let streamsAtKill: number | undefined;
    // An HTTP answer announcing `total` bytes; once `killAfter` of them are on their way, the
    // client process is killed.
    const target = await startTcpServer((socket) => {
      let sent = 0;
      // The client's end of this socket dies with the client process.
      socket.on('error', () => socket.destroy());
      const pump = () => {
        while (sent < total && !socket.destroyed) {
          sent += chunk.length;
          if (sent >= killAfter && streamsAtKill === undefined && clientProcess) {
            streamsAtKill = gateway.registry.openStreamCount;
            killChild(clientProcess);
          }
          if (!socket.write(chunk)) {
            socket.once('drain', pump);
            return;
          }
        }
        if (!socket.destroyed) socket.end();
      };
      socket.once('data', () => {
        socket.write(`HTTP/1.1 200 OK\r\nContent-Length: ${total}\r\n\r\n`);
        pump();
      });
    });
    add(() => target.close());
    const gateway = await startGateway();
    add(() => gateway.close());

    let stderr = '';
    const child = spawn(
      process.execPath,
      [
        ...POSTERN_NODE_FLAGS,
        cli,
        'client',
        '--gateway',
        tunnelUrl(gateway),
        '--tls-fingerprint',
        gateway.certificate.fingerprint,
        '--id',
        'child-client',
        '--group-id',
        GROUP,
        '--group-password',
        PASSWORD,
        '--allow',
        '127.0.0.1',
        '--log-level',
        'error',
      ],
      // The CLI rejects unknown POSTERN_* variables, and POSTERN_TEST_DEBUG is one.
      { stdio: ['ignore', 'ignore', 'pipe'], env: withoutPosternVariables(process.env) },
    );
    clientProcess = child;
    const exited = once(child, 'exit') as Promise<[number | null, NodeJS.Signals | null]>;
    add(async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      await exited;
    });
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (text: string) => {
      stderr += text;
    });
    await Promise.race([
      waitForSessions(gateway, 1),
      exited.then(([code, signal]) => {
        throw new Error(`client exited early (${code ?? signal}): ${stderr}`);
      }),
    ]);
    const session = sessionOf(gateway, 'child-client');

    // curl reads until the kernel reports the reset (exit 56, "Connection reset by peer"); a
    // clean close before the announced length would be exit 18 instead. A Node socket cannot
    // tell the two apart reliably: libuv (in Node 20) reports a reset that arrives behind unread
    // data as a plain end of stream.
    const failure: unknown = await curlThroughGateway(gateway, `http://127.0.0.1:${target.port}/`, [
      '--output',
      '/dev/null',
    ]).then(
      () => assert.fail('the whole download arrived'),
      (error: unknown) => error,
    );
    assert.ok(failure instanceof CurlFailed, String(failure));
    assert.equal(failure.exitCode, 56, failure.stderr);
    assert.match(failure.stderr, /reset by peer/i);
    assert.equal(streamsAtKill, 1, 'the stream was open when the client was killed');
    const [, signal] = await exited;
    assert.equal(signal, 'SIGKILL');
    await waitForSessions(gateway, 0);
    assert.equal(session.state, 'closed');
    assert.equal(session.openStreamCount, 0);
    assert.equal(gateway.registry.openStreamCount, 0);
  });

  it('the client reconnects by itself after the gateway restarts', {
    timeout: TEST_TIMEOUT_MS,
  }, async (t) => {
    const add = cleanupStack(t);
    const echo = await startEchoServer();
    add(() => echo.close());
    const certificate = await loadServerCertificate({});
    const dir = await mkdtemp(join(tmpdir(), 'postern-e2e-'));
    add(() => rm(dir, { recursive: true, force: true }));
    const tls = { tls_cert: join(dir, 'gateway.crt'), tls_key: join(dir, 'gateway.key') };
    await writeFile(tls.tls_cert, certificate.cert);
    await writeFile(tls.tls_key, certificate.key);

    const first = await startGateway(tls);
    add(() => first.close());
    const port = first.addresses.tunnel.port;
    const client = startClient(first, { reconnect: { initial_delay: 50, max_delay: 500 } });
    add(() => client.close());
    await waitForConnects(client, 1);
    await waitForSessions(first, 1);

    await first.close();
    const second = await startGateway({ ...tls, listen_addr: `127.0.0.1:${port}` });
    add(() => second.close());
    assert.equal(second.certificate.fingerprint, first.certificate.fingerprint);
    await waitForConnects(client, 2);
    await waitForSessions(second, 1);

    assert.equal(client.connects, 2);
    assert.equal(first.registry.size, 0);
    const user = await socksConnect(second, '127.0.0.1', echo.port);
    add(() => user.destroy());
    const payload = Buffer.from('through the restarted gateway');
    assert.deepEqual(await roundTrip(user, payload), payload);
    assert.equal(second.registry.openStreamCount, 1);
  });

  it('graceful gateway shutdown drains: an open connection finishes within drain_timeout', {
    timeout: TEST_TIMEOUT_MS,
  }, async (t) => {
    const drainTimeout = 5_000;
    const add = cleanupStack(t);
    // Answers only after the user's half-close, with everything it received.
    const target = await startTcpServer((socket) => {
      socket.on('error', () => socket.destroy());
      // A failed read is the socket's 'error', handled above.
      readAll(socket).then(
        (request) => socket.end(Buffer.concat([Buffer.from('got: '), request])),
        () => socket.destroy(),
      );
    });
    add(() => target.close());
    const tunnel = await startTunnel({ drain_timeout: drainTimeout });
    add(() => tunnel.close());
    const { gateway } = tunnel;

    const user = await socksConnect(gateway, '127.0.0.1', target.port);
    add(() => user.destroy());
    const reply = readAll(user);
    user.write('sent before shutdown; ');
    const closeStarted = performance.now();
    const closing = gateway.close();

    await assert.rejects(socksConnect(gateway, '127.0.0.1', target.port));
    user.end('sent after shutdown began');
    assert.equal((await reply).toString(), 'got: sent before shutdown; sent after shutdown began');
    await closing;
    const elapsed = performance.now() - closeStarted;
    assert.ok(
      elapsed < drainTimeout,
      `close took ${Math.round(elapsed)} ms: it waited for the timer`,
    );
    assert.equal(gateway.registry.size, 0);
  });
});

function killChild(child: ChildProcess): void {
  assert.ok(child.kill('SIGKILL'), 'could not signal the client process');
}

function withoutPosternVariables(env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  return Object.fromEntries(Object.entries(env).filter(([name]) => !name.startsWith('POSTERN_')));
}
