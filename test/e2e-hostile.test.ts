/**
 * Hostile input against a real gateway: garbage on every port, broken tunnel frames, wrong
 * credentials, group takeover, and targets the default policy must refuse. After every step a
 * bystander (a SOCKS5 connection open the whole time) must still carry data, the real clients
 * must still hold their first session, and the gateway must still accept a new client.
 * The hostile peers use `ws` and `net` directly: they are attackers, not clients.
 */
import './helpers/fail-on-unhandled.js';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { connect, type Socket } from 'node:net';
import { after, before, describe, it, type TestContext } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { connect as tlsConnect } from 'node:tls';
import WebSocket from 'ws';
import type { Client } from '../src/client/client.js';
import type { Gateway } from '../src/gateway/gateway.js';
import { encodeFrame, FrameDecoder } from '../src/tunnel/codec.js';
import { CloseCode, FrameType, PROTOCOL_VERSION } from '../src/tunnel/constants.js';
import type { Session } from '../src/tunnel/session.js';
import {
  GROUP,
  PASSWORD,
  socksConnect,
  startClient,
  startGateway,
  startTcpServer,
  type TestServer,
  tunnelUrl,
  waitForSessions,
} from './helpers/e2e.js';
import {
  closedByPeer,
  connectToProxy,
  readExactly,
  type Socks5Credentials,
  socks5Connect,
} from './helpers/raw-socks5.js';

const GATEWAY_USER = 'gateway-user';
const GATEWAY_PASSWORD = 'gateway-secret';
/** The group of a client that keeps the default policy (allowed_hosts: []). */
const DEFAULTS_GROUP = 'defaults';
const DEFAULTS_PASSWORD = 'defaults-secret';
/** A group configured on the gateway that no client ever joins. */
const EMPTY_GROUP = 'empty';
/** Fresh clients that prove the gateway still accepts tunnels join this group and leave. */
const PROBE_GROUP = 'probe';
const PROBE_PASSWORD = 'probe-secret';
/** Authenticated hostile peers join this group before they misbehave. */
const HOSTILE_GROUP = 'hostile';
const HANDSHAKE_MS = 1_500;
const SOCKS5_NOT_ALLOWED = 0x02;

const team: Socks5Credentials = { userId: GROUP, password: PASSWORD };
const defaults: Socks5Credentials = { userId: DEFAULTS_GROUP, password: DEFAULTS_PASSWORD };

let gateway: Gateway;
let teamClient: Client;
let defaultsClient: Client;
let echo: TestServer;
let bystander: Socket;
const bystanderErrors: Error[] = [];
/** Errors of the echo target's sockets: recorded, not asserted (a user's reset reaches them). */
const targetErrors: Error[] = [];
/** The gateway's sessions of the two real clients, as first established. */
let firstSessions: Session[];

function gatewayAccess(target: Gateway) {
  return {
    urls: [tunnelUrl(target)],
    tls_fingerprint: target.certificate.fingerprint,
    auth_username: GATEWAY_USER,
    auth_password: GATEWAY_PASSWORD,
  };
}

function hello(info: Record<string, unknown>): Buffer {
  return encodeFrame({
    type: FrameType.HELLO,
    streamId: 0,
    version: PROTOCOL_VERSION,
    info: { auth_username: GATEWAY_USER, auth_password: GATEWAY_PASSWORD, ...info },
  });
}

/** Writes `payload` and expects exactly it back from an echoing target. */
async function roundTrip(socket: Socket, payload: Buffer): Promise<void> {
  socket.write(payload);
  const echoed = await readExactly(socket, payload.length);
  assert.ok(echoed, 'the echo arrived before the connection ended');
  assert.ok(echoed.equals(payload), 'the echo matches what was sent');
}

function collectErrors(emitter: Socket | WebSocket): Error[] {
  const errors: Error[] = [];
  emitter.on('error', (error: Error) => errors.push(error));
  return errors;
}

/**
 * Other users unaffected: the bystander still carries data, a new SOCKS5 connection works, the
 * real clients still hold their first sessions, and a new client can still connect.
 */
async function assertOthersUnaffected(): Promise<void> {
  await roundTrip(bystander, randomBytes(4096));
  assert.deepEqual(bystanderErrors, []);
  const fresh = await socksConnect(gateway, '127.0.0.1', echo.port);
  await roundTrip(fresh, Buffer.from('fresh connection'));
  fresh.end();
  assert.equal((await closedByPeer(fresh)).length, 0);
  for (const session of firstSessions) assert.equal(session.state, 'open');
  assert.equal(teamClient.connects, 1, 'the team client never reconnected');
  assert.equal(defaultsClient.connects, 1, 'the defaults client never reconnected');
  const probe = startClient(gateway, {
    id: 'probe',
    group_id: PROBE_GROUP,
    group_password: PROBE_PASSWORD,
    gateway: gatewayAccess(gateway),
  });
  try {
    await waitForSessions(gateway, 1, PROBE_GROUP);
  } finally {
    await probe.close();
  }
  await waitForSessions(gateway, 0, PROBE_GROUP);
}

/** A raw WebSocket to /tunnel that trusts any certificate; closed by the test if still open. */
async function openHostileWebSocket(
  t: TestContext,
  options: WebSocket.ClientOptions = {},
): Promise<{ ws: WebSocket; closed: Promise<{ code: number; reason: string }> }> {
  const ws = new WebSocket(tunnelUrl(gateway), {
    rejectUnauthorized: false,
    perMessageDeflate: false,
    ...options,
  });
  collectErrors(ws);
  const closed = new Promise<{ code: number; reason: string }>((resolve) => {
    ws.once('close', (code, reason) => resolve({ code, reason: reason.toString('utf8') }));
  });
  t.after(() => {
    if (ws.readyState !== WebSocket.CLOSED) ws.terminate();
  });
  await once(ws, 'open');
  return { ws, closed };
}

/** Completes a valid handshake in the hostile group; resolves once HELLO_OK has arrived. */
async function handshake(ws: WebSocket, clientId: string): Promise<void> {
  const welcome = once(ws, 'message') as Promise<[Buffer]>;
  ws.send(hello({ client_id: clientId, group_id: HOSTILE_GROUP, group_password: 'hostile' }));
  const [data] = await welcome;
  const [frame] = new FrameDecoder().push(data);
  assert.equal(frame?.type, FrameType.HELLO_OK);
}

function header(type: number, streamId: number, length: number): Buffer {
  const bytes = Buffer.alloc(9);
  bytes.writeUInt8(type, 0);
  bytes.writeUInt32BE(streamId, 1);
  bytes.writeUInt32BE(length, 5);
  return bytes;
}

/** Random bytes whose first byte is `first`, so the class of garbage is fixed. */
function garbage(first: number, length = 256): Buffer {
  const bytes = randomBytes(length);
  bytes[0] = first;
  return bytes;
}

describe('hostile input', () => {
  before(async () => {
    echo = await startTcpServer((socket) => {
      socket.on('error', (error) => targetErrors.push(error));
      socket.pipe(socket);
    });
    gateway = await startGateway({
      auth_username: GATEWAY_USER,
      auth_password: GATEWAY_PASSWORD,
      handshake_timeout: HANDSHAKE_MS,
      groups: [
        { id: GROUP, password: PASSWORD },
        { id: EMPTY_GROUP, password: 'empty-secret' },
      ],
    });
    teamClient = startClient(gateway, { gateway: gatewayAccess(gateway) });
    defaultsClient = startClient(gateway, {
      id: 'client-defaults',
      group_id: DEFAULTS_GROUP,
      group_password: DEFAULTS_PASSWORD,
      gateway: gatewayAccess(gateway),
      allowed_hosts: [],
      forbidden_hosts: [],
    });
    await Promise.all([waitForSessions(gateway, 1), waitForSessions(gateway, 1, DEFAULTS_GROUP)]);
    firstSessions = gateway.registry.entries().map((entry) => entry.session);
    bystander = await socksConnect(gateway, '127.0.0.1', echo.port);
    bystander.on('error', (error) => bystanderErrors.push(error));
    await roundTrip(bystander, Buffer.from('hello before the attacks'));
  });

  after(async () => {
    bystander?.destroy();
    await teamClient?.close();
    await defaultsClient?.close();
    await gateway?.close();
    await echo?.close();
  });

  it('garbage bytes on the tunnel port (raw TCP, not TLS) close that connection', async () => {
    for (const payload of [
      garbage(0x00),
      Buffer.from('GET /tunnel HTTP/1.1\r\nHost: gateway\r\nUpgrade: websocket\r\n\r\n'),
    ]) {
      const socket = connect(gateway.addresses.tunnel.port, '127.0.0.1');
      collectErrors(socket);
      await once(socket, 'connect');
      socket.write(payload);
      const answer = await closedByPeer(socket);
      assert.ok(!answer.toString('latin1').startsWith('HTTP/'), 'no HTTP answer without TLS');
    }
    await assertOthersUnaffected();
  });

  it('valid TLS carrying garbage instead of HTTP is answered 400 and closed', async () => {
    const socket = tlsConnect({
      host: '127.0.0.1',
      port: gateway.addresses.tunnel.port,
      rejectUnauthorized: false,
    });
    collectErrors(socket);
    await once(socket, 'secureConnect');
    socket.write(Buffer.concat([garbage(0x00, 512), Buffer.from('\r\n\r\n')]));
    const answer = await closedByPeer(socket);
    assert.match(answer.toString('latin1'), /^HTTP\/1\.1 400 /);
    await assertOthersUnaffected();
  });

  it('a WebSocket peer sending garbage, text or a bad frame is closed with 4000', async (t) => {
    const beforeHandshake: [string, Buffer | string][] = [
      ['random bytes', garbage(0xff)],
      ['a text message', 'hello, gateway'],
      ['an unknown frame type', header(0x7f, 0, 0)],
      [
        'DATA instead of HELLO',
        encodeFrame({ type: FrameType.DATA, streamId: 1, data: garbage(1) }),
      ],
      [
        'a HELLO that is not JSON',
        Buffer.concat([header(0x01, 0, 4), Buffer.from([0, 1, 0x7b, 0x78])]),
      ],
      ['a HELLO without a group', hello({ client_id: 'no-group' })],
      ['a header announcing 2 MiB', header(FrameType.DATA, 1, 2 * 1024 * 1024)],
    ];
    for (const [what, message] of beforeHandshake) {
      const { ws, closed } = await openHostileWebSocket(t);
      ws.send(message);
      assert.equal((await closed).code, CloseCode.PROTOCOL_ERROR, what);
    }
    const afterHandshake: [string, Buffer][] = [
      ['an unknown frame type', header(0x7f, 0, 0)],
      [
        'DATA on a stream never opened',
        encodeFrame({ type: FrameType.DATA, streamId: 2, data: garbage(2) }),
      ],
      [
        'a second HELLO',
        hello({ client_id: 'again', group_id: HOSTILE_GROUP, group_password: 'x' }),
      ],
      ['random bytes', garbage(0xee)],
    ];
    for (const [index, [what, message]] of afterHandshake.entries()) {
      const { ws, closed } = await openHostileWebSocket(t);
      await handshake(ws, `hostile-${index}`);
      ws.send(message);
      assert.equal((await closed).code, CloseCode.PROTOCOL_ERROR, `after the handshake: ${what}`);
    }
    await waitForSessions(gateway, 0, HOSTILE_GROUP);
    await assertOthersUnaffected();
  });

  it('garbage on the SOCKS5 port (random bytes, an HTTP request) is closed unanswered', async () => {
    for (const payload of [
      garbage(0xff),
      garbage(0x04),
      Buffer.from('GET http://example.com/ HTTP/1.1\r\nHost: example.com\r\n\r\n'),
      Buffer.from('CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n'),
    ]) {
      const socket = await connectToProxy(gateway.addresses.socks5!.port);
      collectErrors(socket);
      socket.write(payload);
      assert.equal((await closedByPeer(socket)).length, 0, 'not a byte of answer');
    }
    await assertOthersUnaffected();
  });

  it('connections that stall mid-handshake are closed at the handshake deadline', async (t) => {
    const started = performance.now();
    const stalledSocks = await connectToProxy(gateway.addresses.socks5!.port);
    collectErrors(stalledSocks);
    stalledSocks.write(Buffer.from([0x05]));
    const stalledTls = connect(gateway.addresses.tunnel.port, '127.0.0.1');
    collectErrors(stalledTls);
    const { closed: stalledHello } = await openHostileWebSocket(t);
    const [socksAnswer, tlsAnswer, helloAnswer] = await Promise.all([
      closedByPeer(stalledSocks),
      closedByPeer(stalledTls),
      stalledHello,
    ]);
    const elapsed = performance.now() - started;
    assert.equal(socksAnswer.length, 0);
    assert.equal(tlsAnswer.length, 0);
    assert.equal(helloAnswer.code, CloseCode.HANDSHAKE_TIMEOUT);
    assert.ok(elapsed >= HANDSHAKE_MS * 0.9, `closed after ${elapsed} ms, before the deadline`);
    assert.ok(
      elapsed < HANDSHAKE_MS + 3_000,
      `closed after ${elapsed} ms, long after the deadline`,
    );
    await assertOthersUnaffected();
  });

  it('a TLS connection that stalls mid HTTP request is closed at the handshake deadline', async () => {
    const socket = tlsConnect({
      host: '127.0.0.1',
      port: gateway.addresses.tunnel.port,
      rejectUnauthorized: false,
    });
    collectErrors(socket);
    await once(socket, 'secureConnect');
    socket.write('GET /tunnel HTTP/1.1\r\nHost: gateway\r\n');
    // Proving a deadline means waiting for it; give up (and fail) well after it should have hit.
    const giveUp = new AbortController();
    const outcome = await Promise.race([
      closedByPeer(socket).then(() => 'closed'),
      sleep(HANDSHAKE_MS + 3_000, 'still open', { signal: giveUp.signal }),
    ]);
    giveUp.abort();
    if (outcome !== 'closed') socket.destroy();
    assert.equal(outcome, 'closed', `open ${HANDSHAKE_MS + 3_000} ms after a stalled request`);
    await assertOthersUnaffected();
  });

  it('wrong gateway credentials are refused with 4003', async (t) => {
    const attempts: [string, Record<string, unknown>][] = [
      ['a wrong password', { auth_password: 'guess' }],
      ['a wrong user name', { auth_username: 'admin' }],
      ['no credentials', { auth_username: undefined, auth_password: undefined }],
    ];
    for (const [what, credentials] of attempts) {
      const { ws, closed } = await openHostileWebSocket(t);
      ws.send(
        hello({ client_id: 'intruder', group_id: GROUP, group_password: PASSWORD, ...credentials }),
      );
      assert.equal((await closed).code, CloseCode.UNAUTHORIZED, what);
    }
    await assertOthersUnaffected();
  });

  it('an unknown group over SOCKS5 fails authentication and is closed', async () => {
    let connections = 0;
    const counter = () => connections++;
    echo.server.on('connection', counter);
    try {
      for (const credentials of [
        { userId: 'nobody-registered', password: 'anything' },
        { userId: GROUP, password: 'not-the-password' },
      ]) {
        const outcome = await socks5Connect(
          gateway.addresses.socks5!.port,
          credentials,
          '127.0.0.1',
          echo.port,
        );
        collectErrors(outcome.socket);
        assert.equal(outcome.method, 0x02, `${credentials.userId}: username/password chosen`);
        assert.equal(outcome.authStatus, 0x01, `${credentials.userId}: authentication failed`);
        await closedByPeer(outcome.socket);
      }
      // A group the gateway knows but no client has joined: refused at once, not left hanging.
      const empty = await socks5Connect(
        gateway.addresses.socks5!.port,
        { userId: EMPTY_GROUP, password: 'empty-secret' },
        '127.0.0.1',
        echo.port,
      );
      collectErrors(empty.socket);
      assert.equal(empty.authStatus, 0x00);
      assert.equal(empty.reply, 0x01, 'general failure: no client of the group is connected');
      await closedByPeer(empty.socket);
      assert.equal(connections, 0, 'the target saw no connection');
    } finally {
      echo.server.off('connection', counter);
    }
    await assertOthersUnaffected();
  });

  it('a client announcing a taken group with another password is refused with 4004', async (t) => {
    const takeovers: [string, Record<string, unknown>][] = [
      ['a configured group', { client_id: 'client-a', group_id: GROUP, group_password: 'mine' }],
      [
        'a group bound by its first client',
        { client_id: 'client-defaults', group_id: DEFAULTS_GROUP, group_password: 'mine' },
      ],
    ];
    for (const [what, info] of takeovers) {
      const { ws, closed } = await openHostileWebSocket(t);
      ws.send(hello(info));
      assert.equal((await closed).code, CloseCode.GROUP_PASSWORD_MISMATCH, what);
    }
    assert.deepEqual(
      gateway.registry.entries().map((entry) => entry.session),
      firstSessions,
      'the first clients keep their sessions',
    );
    await assertOthersUnaffected();
  });

  it('the default policy refuses loopback, link-local and metadata targets with REP 0x02', async () => {
    let connections = 0;
    const onTarget = (socket: Socket) => {
      connections++;
      socket.on('error', (error) => targetErrors.push(error));
    };
    const target4 = await startTcpServer(onTarget);
    const target6 = await startTcpServer(onTarget, '::1');
    try {
      const refused: [string, number][] = [
        ['127.0.0.1', target4.port],
        ['127.1', target4.port],
        ['2130706433', target4.port],
        ['0x7f.1', target4.port],
        ['0177.0.0.1', target4.port],
        ['0.0.0.0', target4.port],
        ['localhost', target4.port],
        ['LOCALHOST.', target4.port],
        ['::ffff:127.0.0.1', target4.port],
        ['::1', target6.port],
        ['[::1]', target6.port],
        ['::', target6.port],
        ['169.254.169.254', 80],
        ['169.254.169.254', target4.port],
      ];
      for (const [host, port] of refused) {
        const outcome = await socks5Connect(gateway.addresses.socks5!.port, defaults, host, port);
        collectErrors(outcome.socket);
        assert.equal(outcome.authStatus, 0x00, `${host}: authenticated`);
        assert.equal(outcome.reply, SOCKS5_NOT_ALLOWED, `${host}:${port} refused by the ruleset`);
        await closedByPeer(outcome.socket);
      }
      assert.equal(connections, 0, 'no refused target saw a connection');
      // The same target through the team's client, which allows it: proof the target listens.
      const reached = once(target4.server, 'connection');
      const allowed = await socks5Connect(
        gateway.addresses.socks5!.port,
        team,
        '127.0.0.1',
        target4.port,
      );
      assert.equal(allowed.reply, 0x00);
      await reached;
      allowed.socket.destroy();
      assert.equal(connections, 1);
    } finally {
      await target4.close();
      await target6.close();
    }
    await assertOthersUnaffected();
  });
});
