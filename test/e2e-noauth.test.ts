/**
 * End to end: `allowed_sources` closes connections from other sources as they are accepted, and
 * `no_auth_group` serves users without credentials (the npm `socks` client, curl, OpenBSD `nc`
 * and raw bytes) through a real gateway and client on 127.0.0.1.
 */
import './helpers/fail-on-unhandled.js';
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { request as httpRequest } from 'node:http';
import { connect, type Socket } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { SocksClient } from 'socks';
import { isPosternError } from '../src/errors.js';
import { Gateway } from '../src/gateway/gateway.js';
import {
  GROUP,
  gatewaySettings,
  PASSWORD,
  readAll,
  socksConnect,
  startClient,
  startEchoServer,
  startGateway,
  type TestServer,
  testLogger,
  waitForSessions,
} from './helpers/e2e.js';
import { closedByPeer, connectRequest, readExactly } from './helpers/raw-socks5.js';
import { type HttpTarget, nextReleasedStream, sha256, startHttpServer } from './helpers/targets.js';

const OTHER = 'other';
const OTHER_PASSWORD = 'other-secret';
const LOOPBACK = ['127.0.0.0/8', '::1'];

interface Outcome {
  code: number;
  stdout: Buffer;
  stderr: string;
}

/** Runs a program with `input` on its standard input; resolves with its exit code and output. */
function run(command: string, args: readonly string[], input?: Buffer): Promise<Outcome> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { stdio: ['pipe', 'pipe', 'pipe'], timeout: 20_000 });
    const stdout: Buffer[] = [];
    const stderr: Buffer[] = [];
    child.stdout.on('data', (chunk: Buffer) => stdout.push(chunk));
    child.stderr.on('data', (chunk: Buffer) => stderr.push(chunk));
    child.once('error', reject);
    child.once('close', (code, signal) => {
      resolve({
        code: code ?? (signal === null ? -1 : 128),
        stdout: Buffer.concat(stdout),
        stderr: Buffer.concat(stderr).toString('utf8'),
      });
    });
    child.stdin.end(input);
  });
}

/** curl with proxy variables overridden, so it cannot bypass the proxy it is given. */
function curl(args: readonly string[]): Promise<Outcome> {
  return new Promise((resolve) => {
    execFile(
      '/usr/bin/curl',
      ['--silent', '--show-error', '--max-time', '10', '--noproxy', '', ...args],
      { encoding: 'buffer' },
      (error, stdout, stderr) => {
        const code = error === null ? 0 : Number((error as { code?: number }).code ?? -1);
        resolve({ code, stdout, stderr: stderr.toString('utf8') });
      },
    );
  });
}

/** A GET in absolute form through an HTTP proxy, with optional Proxy-Authorization. */
function proxyGet(
  proxyPort: number,
  url: string,
  authorization?: string,
): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({
      host: '127.0.0.1',
      port: proxyPort,
      path: url,
      agent: false,
      headers: {
        host: new URL(url).host,
        connection: 'close',
        ...(authorization === undefined ? {} : { 'proxy-authorization': authorization }),
      },
    });
    req.once('error', reject);
    req.once('response', (res) => {
      readAll(res).then(
        (body) => resolve({ status: res.statusCode ?? 0, body: body.toString('utf8') }),
        reject,
      );
    });
    req.end();
  });
}

function basic(username: string, password: string): string {
  return `Basic ${Buffer.from(`${username}:${password}`).toString('base64')}`;
}

/**
 * A SOCKS5 CONNECT that offers only "no authentication" (0x00), as Chromium does: the method
 * the gateway chose, the REP byte (undefined when none came), and the socket, which the caller
 * owns.
 */
async function noAuthConnect(
  proxyPort: number,
  host: string,
  port: number,
): Promise<{ method: number | undefined; reply: number | undefined; socket: Socket }> {
  const socket = connect(proxyPort, '127.0.0.1');
  await once(socket, 'connect');
  socket.write(Buffer.from([5, 1, 0]));
  const method = (await readExactly(socket, 2))?.[1];
  if (method !== 0) return { method, reply: undefined, socket };
  socket.write(connectRequest(host, port));
  const reply = (await readExactly(socket, 10))?.[1];
  return { method, reply, socket };
}

/** The group of the session that releases the next stream to `port`: which way a user went. */
function nextGroupTo(gateway: Gateway, port: number): Promise<string> {
  const entries = gateway.registry.entries();
  return new Promise((resolve) => {
    const listeners = entries.map((entry) => {
      const onReleased = (stream: { target: { port: number } }) => {
        if (stream.target.port !== port) return;
        for (const [index, other] of entries.entries()) {
          other.session.off('stream-released', listeners[index]!);
        }
        resolve(entry.groupId);
      };
      entry.session.on('stream-released', onReleased);
      return onReleased;
    });
  });
}

/** Sends `payload` over `socket`, ends it, and returns what came back until the peer ended. */
async function echoOver(socket: Socket, payload: Buffer): Promise<Buffer> {
  const echoed = readAll(socket);
  socket.end(payload);
  return echoed;
}

/**
 * Connects to `port`, sends `bytes`, and resolves with what arrived before the gateway closed
 * the connection. A reset (the gateway closed with our bytes unread) counts as closed.
 */
async function refusedConnection(port: number, host: string, bytes: Buffer): Promise<Buffer> {
  const socket = connect(port, host);
  socket.on('error', (error: NodeJS.ErrnoException) => {
    assert.ok(error.code === 'ECONNRESET' || error.code === 'EPIPE', String(error));
  });
  await once(socket, 'connect');
  socket.write(bytes);
  return closedByPeer(socket);
}

describe('allowed_sources', { timeout: 60_000 }, () => {
  let gateway: Gateway;

  before(async () => {
    gateway = await startGateway({
      proxy: {
        socks5: { listen_addr: '127.0.0.1:0', allowed_sources: ['10.0.0.0/8'] },
        http: { listen_addr: '127.0.0.1:0', allowed_sources: ['10.0.0.0/8', 'fd00::/8'] },
        https: { listen_addr: '127.0.0.1:0', allowed_sources: ['192.168.0.0/16'] },
      },
    });
  });

  after(() => gateway.close());

  test('a SOCKS5 listener closes a connection from outside its sources without a reply', async () => {
    for (let attempt = 0; attempt < 3; attempt++) {
      const received = await refusedConnection(
        gateway.addresses.socks5!.port,
        '127.0.0.1',
        Buffer.from([5, 1, 0]),
      );
      assert.equal(received.length, 0);
    }
  });

  test('HTTP and HTTPS listeners close such a connection without a status or a TLS hello', async () => {
    const get = Buffer.from('GET http://127.0.0.1:1/ HTTP/1.1\r\nHost: 127.0.0.1:1\r\n\r\n');
    assert.equal(
      (await refusedConnection(gateway.addresses.http!.port, '127.0.0.1', get)).length,
      0,
    );
    // A TLS ClientHello's first bytes: the listener answers nothing, not even a TLS alert.
    const hello = Buffer.from([0x16, 0x03, 0x01, 0x00, 0x05, 0x01, 0x00, 0x00, 0x01, 0x00]);
    assert.equal(
      (await refusedConnection(gateway.addresses.https!.port, '127.0.0.1', hello)).length,
      0,
    );
    const result = await curl([
      '-x',
      `http://127.0.0.1:${gateway.addresses.http!.port}`,
      'http://127.0.0.1:1/',
    ]);
    // 52: empty reply; 56: reset, when the request was already in flight as the socket closed.
    assert.ok(
      [52, 56].includes(result.code),
      `curl: no reply expected, got ${result.code} ${result.stderr}`,
    );
  });

  test('the refusals leave the gateway running: the tunnel endpoint still takes a client', async () => {
    const client = startClient(gateway);
    try {
      await waitForSessions(gateway, 1);
    } finally {
      await client.close();
    }
  });

  test('a listener whose sources include 127.0.0.0/8 serves 127.0.0.1 with credentials as usual', async (t) => {
    const served = await startGateway({
      proxy: {
        socks5: { listen_addr: '127.0.0.1:0', allowed_sources: ['10.0.0.0/8', '127.0.0.0/8'] },
        http: { listen_addr: '127.0.0.1:0', allowed_sources: ['127.0.0.1'] },
      },
    });
    const client = startClient(served);
    const echo = await startEchoServer();
    const web = await startHttpServer((req, res) => res.end(`web ${req.url}`));
    t.after(async () => {
      await client.close();
      await served.close();
      await echo.close();
      await web.close();
    });
    await waitForSessions(served, 1);
    const payload = randomBytes(32 * 1024);
    const socket = await socksConnect(served, '127.0.0.1', echo.port);
    assert.equal(sha256(await echoOver(socket, payload)), sha256(payload));
    const response = await proxyGet(
      served.addresses.http!.port,
      `http://127.0.0.1:${web.port}/allowed`,
      basic(GROUP, PASSWORD),
    );
    assert.deepEqual(response, { status: 200, body: 'web /allowed' });
    // Credentials are still required where there is no no_auth_group.
    const anonymous = await proxyGet(served.addresses.http!.port, `http://127.0.0.1:${web.port}/`);
    assert.equal(anonymous.status, 407);
    const { method, socket: refused } = await noAuthConnect(
      served.addresses.socks5!.port,
      '127.0.0.1',
      echo.port,
    );
    assert.equal(method, 0xff);
    await closedByPeer(refused);
  });

  test('a dual-stack listener matches an IPv4 peer, reported as ::ffff:127.0.0.1, to 127.0.0.0/8', async (t) => {
    const dual = await startGateway({
      proxy: {
        socks5: { listen_addr: '[::]:0', allowed_sources: ['127.0.0.0/8'], no_auth_group: GROUP },
      },
    });
    const client = startClient(dual);
    const echo = await startEchoServer();
    t.after(async () => {
      await client.close();
      await dual.close();
      await echo.close();
    });
    await waitForSessions(dual, 1);
    const { method, reply, socket } = await noAuthConnect(
      dual.addresses.socks5!.port,
      '127.0.0.1',
      echo.port,
    );
    assert.equal(method, 0);
    assert.equal(reply, 0);
    assert.equal((await echoOver(socket, Buffer.from('dual stack'))).toString(), 'dual stack');
    // ::1 is an IPv6 peer, not in the IPv4 range: refused.
    const fromV6 = await refusedConnection(
      dual.addresses.socks5!.port,
      '::1',
      Buffer.from([5, 1, 0]),
    );
    assert.equal(fromV6.length, 0);
  });
});

describe('no_auth_group', { timeout: 60_000 }, () => {
  let gateway: Gateway;
  const clients: { close(): Promise<void> }[] = [];
  let echo: TestServer;
  let web: HttpTarget;
  const webToken = randomBytes(8).toString('hex');

  before(async () => {
    gateway = await startGateway({
      proxy: {
        socks5: { listen_addr: '127.0.0.1:0', allowed_sources: LOOPBACK, no_auth_group: GROUP },
        http: { listen_addr: '127.0.0.1:0', allowed_sources: LOOPBACK, no_auth_group: GROUP },
      },
      groups: [
        { id: GROUP, password: PASSWORD },
        { id: OTHER, password: OTHER_PASSWORD },
      ],
    });
    clients.push(startClient(gateway));
    clients.push(
      startClient(gateway, { id: 'client-other', group_id: OTHER, group_password: OTHER_PASSWORD }),
    );
    await waitForSessions(gateway, 1, GROUP);
    await waitForSessions(gateway, 1, OTHER);
    echo = await startEchoServer();
    web = await startHttpServer((req, res) => res.end(`${webToken} ${req.url}`));
  });

  after(async () => {
    for (const client of clients) await client.close();
    await gateway.close();
    await echo.close();
    await web.close();
  });

  test('SOCKS5 accepts method 0x00 and routes to the bound group', async () => {
    const group = nextGroupTo(gateway, echo.port);
    const { method, reply, socket } = await noAuthConnect(
      gateway.addresses.socks5!.port,
      '127.0.0.1',
      echo.port,
    );
    assert.equal(method, 0x00);
    assert.equal(reply, 0x00);
    const payload = randomBytes(128 * 1024);
    assert.equal(sha256(await echoOver(socket, payload)), sha256(payload));
    assert.equal(await group, GROUP);
  });

  test('the npm socks client without credentials reaches a local server', async () => {
    const group = nextGroupTo(gateway, echo.port);
    const { socket } = await SocksClient.createConnection({
      proxy: { host: '127.0.0.1', port: gateway.addresses.socks5!.port, type: 5 },
      command: 'connect',
      destination: { host: '127.0.0.1', port: echo.port },
      timeout: 10_000,
    });
    assert.equal((await echoOver(socket, Buffer.from('no password'))).toString(), 'no password');
    assert.equal(await group, GROUP);
  });

  test('curl --socks5-hostname without credentials gets the page; the name is resolved by the client', async () => {
    const released = nextReleasedStream(
      gateway,
      (stream) => stream.target.host === 'localhost' && stream.target.port === web.port,
    );
    const result = await curl([
      '--fail',
      '--socks5-hostname',
      `127.0.0.1:${gateway.addresses.socks5!.port}`,
      `http://localhost:${web.port}/curl-no-auth`,
    ]);
    assert.equal(result.code, 0, result.stderr);
    assert.equal(result.stdout.toString(), `${webToken} /curl-no-auth`);
    await released;
  });

  test('SOCKS5 credentials are still checked and select their own group; wrong ones are refused', async () => {
    const group = nextGroupTo(gateway, echo.port);
    const socket = await socksConnect(gateway, '127.0.0.1', echo.port, {
      userId: OTHER,
      password: OTHER_PASSWORD,
    });
    assert.equal((await echoOver(socket, Buffer.from('other'))).toString(), 'other');
    assert.equal(await group, OTHER);
    await assert.rejects(
      socksConnect(gateway, '127.0.0.1', echo.port, { userId: OTHER, password: 'wrong' }),
      /Socks5 Authentication failed/,
    );
    await assert.rejects(
      socksConnect(gateway, '127.0.0.1', echo.port, { userId: GROUP, password: 'wrong' }),
      /Socks5 Authentication failed/,
    );
  });

  test('HTTP without Proxy-Authorization goes to the bound group; credentials select theirs', async () => {
    const port = gateway.addresses.http!.port;
    const bound = nextGroupTo(gateway, web.port);
    assert.deepEqual(await proxyGet(port, `http://127.0.0.1:${web.port}/anonymous`), {
      status: 200,
      body: `${webToken} /anonymous`,
    });
    assert.equal(await bound, GROUP);

    const other = nextGroupTo(gateway, web.port);
    const withCredentials = await proxyGet(
      port,
      `http://127.0.0.1:${web.port}/other`,
      basic(OTHER, OTHER_PASSWORD),
    );
    assert.deepEqual(withCredentials, { status: 200, body: `${webToken} /other` });
    assert.equal(await other, OTHER);

    const wrong = await proxyGet(port, `http://127.0.0.1:${web.port}/`, basic(OTHER, 'wrong'));
    assert.equal(wrong.status, 407);
  });

  test('curl -x without credentials: plain HTTP and a CONNECT tunnel', async () => {
    const proxy = `http://127.0.0.1:${gateway.addresses.http!.port}`;
    const plain = await curl(['--fail', '-x', proxy, `http://127.0.0.1:${web.port}/plain`]);
    assert.equal(plain.code, 0, plain.stderr);
    assert.equal(plain.stdout.toString(), `${webToken} /plain`);
    const tunnelled = await curl([
      '--fail',
      '--proxytunnel',
      '-x',
      proxy,
      `http://127.0.0.1:${web.port}/tunnelled`,
    ]);
    assert.equal(tunnelled.code, 0, tunnelled.stderr);
    assert.equal(tunnelled.stdout.toString(), `${webToken} /tunnelled`);
  });

  describe('ssh-style use with OpenBSD nc', () => {
    const doors = [
      { name: 'nc -X 5 through the no-auth SOCKS5 listener', protocol: '5', door: 'socks5' },
      {
        name: 'nc -X connect through the no-auth HTTP listener',
        protocol: 'connect',
        door: 'http',
      },
    ] as const;
    for (const { name, protocol, door } of doors) {
      test(`${name} echoes stdin`, async () => {
        const payload = Buffer.from(`${randomBytes(24 * 1024).toString('base64')}\n`);
        const released = nextReleasedStream(gateway, (stream) => stream.target.port === echo.port);
        const proxy = `127.0.0.1:${gateway.addresses[door]!.port}`;
        const args = ['-N', '-X', protocol, '-x', proxy, '127.0.0.1', String(echo.port)];
        const result = await run('nc', args, payload);
        assert.equal(result.code, 0, result.stderr);
        assert.equal(sha256(result.stdout), sha256(payload));
        await released;
      });
    }
  });
});

describe('no_auth_group whose group has no client connected', { timeout: 30_000 }, () => {
  let gateway: Gateway;
  let echo: TestServer;

  before(async () => {
    gateway = await startGateway({
      proxy: {
        socks5: { listen_addr: '127.0.0.1:0', allowed_sources: LOOPBACK, no_auth_group: 'lonely' },
        http: { listen_addr: '127.0.0.1:0', allowed_sources: LOOPBACK, no_auth_group: 'lonely' },
      },
      groups: [{ id: 'lonely', password: 'nobody-here' }],
    });
    echo = await startEchoServer();
  });

  after(async () => {
    await gateway.close();
    await echo.close();
  });

  test('SOCKS5 answers general failure and HTTP answers 503', async () => {
    const { method, reply, socket } = await noAuthConnect(
      gateway.addresses.socks5!.port,
      '127.0.0.1',
      echo.port,
    );
    assert.equal(method, 0x00);
    assert.equal(reply, 0x01);
    await closedByPeer(socket);
    const response = await proxyGet(gateway.addresses.http!.port, `http://127.0.0.1:${echo.port}/`);
    assert.equal(response.status, 503);
  });
});

describe('a gateway started from code checks the same rules as the configuration', () => {
  test('no_auth_group needs allowed_sources and a declared group; sources must be IPs or CIDRs', async () => {
    const cases: [Parameters<typeof gatewaySettings>[0], RegExp][] = [
      [
        { proxy: { socks5: { listen_addr: '127.0.0.1:0', no_auth_group: GROUP } } },
        /socks5\.no_auth_group needs a non-empty gateway\.proxy\.socks5\.allowed_sources/,
      ],
      [
        {
          proxy: {
            http: { listen_addr: '127.0.0.1:0', allowed_sources: [], no_auth_group: GROUP },
          },
        },
        /open proxy/,
      ],
      [
        {
          proxy: {
            socks5: { listen_addr: '127.0.0.1:0', allowed_sources: LOOPBACK, no_auth_group: 'x' },
          },
        },
        /group "x" is not declared/,
      ],
      [
        { proxy: { https: { listen_addr: '127.0.0.1:0', allowed_sources: ['10.0.0.0/40'] } } },
        /gateway\.proxy\.https\.allowed_sources: "10\.0\.0\.0\/40" has an invalid prefix length/,
      ],
    ];
    for (const [overrides, message] of cases) {
      await assert.rejects(
        Gateway.start(gatewaySettings(overrides), testLogger()),
        (err) => isPosternError(err, 'POSTERN_ERR_CONFIG') && message.test(err.message),
      );
    }
  });
});
