import assert from 'node:assert/strict';
import { once } from 'node:events';
import { type AddressInfo, connect, createServer, type Server, type Socket } from 'node:net';
import { Duplex } from 'node:stream';
import { after, afterEach, before, beforeEach, describe, test } from 'node:test';
import fc from 'fast-check';
import pino from 'pino';
import { SocksClient } from 'socks';
import { PosternError } from '../src/errors.js';
import {
  type Socks5Handlers,
  type Socks5Target,
  serveSocks5,
  socks5ReplyFor,
} from '../src/gateway/socks5.js';
import type { CancelSignal } from '../src/tunnel/cancellation.js';
import { Reason } from '../src/tunnel/constants.js';

// ---------------------------------------------------------------------------------------------
// Harness: target servers, a proxy that runs serveSocks5 with fake handlers, a raw wire client.
// ---------------------------------------------------------------------------------------------

interface LogLine {
  level: number;
  msg: string;
  [key: string]: unknown;
}

const ERROR_LEVEL = 50;

/** A TCP server on 127.0.0.1 whose accepted sockets the test can close. */
class LocalServer {
  readonly server: Server;
  readonly sockets = new Set<Socket>();
  readonly errors: Error[] = [];

  constructor(onSocket: (socket: Socket) => void, options: { allowHalfOpen?: boolean } = {}) {
    this.server = createServer({ allowHalfOpen: options.allowHalfOpen ?? true }, (socket) => {
      this.sockets.add(socket);
      socket.on('error', (error) => this.errors.push(error));
      socket.once('close', () => this.sockets.delete(socket));
      onSocket(socket);
    });
  }

  async listen(): Promise<number> {
    this.server.listen(0, '127.0.0.1');
    await once(this.server, 'listening');
    return (this.server.address() as AddressInfo).port;
  }

  async close(): Promise<void> {
    for (const socket of this.sockets) socket.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

interface ConnectCall {
  group: string;
  target: Socks5Target;
  cancellation: CancelSignal;
}

type ConnectImpl = (
  group: string,
  target: Socks5Target,
  cancellation: CancelSignal,
) => Promise<Duplex>;

/** Dials 127.0.0.1 at the requested port, whatever host was asked for. */
function dialLocal(
  _group: string,
  target: Socks5Target,
  cancellation: CancelSignal,
): Promise<Duplex> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port: target.port, allowHalfOpen: true });
    const stopListening = cancellation.onCancel(() => socket.destroy());
    socket.once('connect', () => {
      stopListening();
      socket.off('error', onError);
      resolve(socket);
    });
    const onError = (error: Error) =>
      reject(
        new PosternError('POSTERN_ERR_OPEN_FAILED', 'dial failed', {
          reason: Reason.CONNECTION_REFUSED,
          cause: error,
        }),
      );
    socket.once('error', onError);
  });
}

/** A net.Server on 127.0.0.1 that serves SOCKS5 with test-controlled handlers. */
class TestProxy {
  readonly logs: LogLine[] = [];
  readonly calls: ConnectCall[] = [];
  readonly served: Promise<void>[] = [];
  /** The proxy's side of each accepted socket, to watch what the server has read. */
  readonly accepted: Socket[] = [];
  connectImpl: ConnectImpl = dialLocal;
  #server: Server;
  port = 0;

  constructor(
    options: {
      noAuthGroup?: string;
      handshakeTimeoutMs?: number;
      authenticate?: Socks5Handlers['authenticate'];
    } = {},
  ) {
    const logger = pino(
      { level: 'debug', base: undefined },
      { write: (line: string) => this.logs.push(JSON.parse(line) as LogLine) },
    );
    const handlers: Socks5Handlers = {
      authenticate:
        options.authenticate ??
        (async (username, password) =>
          username === 'alice' && password === 'secret' ? 'group-a' : null),
      connect: (group, target, cancellation) => {
        this.calls.push({ group, target, cancellation });
        return this.connectImpl(group, target, cancellation);
      },
      handshakeTimeoutMs: options.handshakeTimeoutMs ?? 10_000,
      logger,
      ...(options.noAuthGroup !== undefined && { noAuthGroup: options.noAuthGroup }),
    };
    // Default allowHalfOpen (false): serveSocks5 must make half-close work on its own.
    this.#server = createServer((socket) => {
      this.accepted.push(socket);
      this.served.push(serveSocks5(socket, handlers));
    });
  }

  async listen(): Promise<this> {
    this.#server.listen(0, '127.0.0.1');
    await once(this.#server, 'listening');
    this.port = (this.#server.address() as AddressInfo).port;
    return this;
  }

  /** Waits for every connection served so far to finish; serveSocks5 never rejects. */
  async settled(): Promise<void> {
    await Promise.all(this.served);
  }

  lines(msg: string): LogLine[] {
    return this.logs.filter((line) => line.msg === msg);
  }

  reset(): void {
    this.logs.length = 0;
    this.calls.length = 0;
    this.connectImpl = dialLocal;
  }

  async close(): Promise<void> {
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
    await this.settled();
  }
}

/** A client that speaks raw bytes and collects everything the proxy sends. */
class WireClient {
  readonly socket: Socket;
  readonly closed: Promise<void>;
  error: NodeJS.ErrnoException | undefined;
  ended = false;
  #received = Buffer.alloc(0);
  #waiters: (() => void)[] = [];

  private constructor(socket: Socket) {
    this.socket = socket;
    socket.on('data', (chunk: Buffer) => {
      this.#received = Buffer.concat([this.#received, chunk]);
      this.#notify();
    });
    socket.on('end', () => {
      this.ended = true;
      this.#notify();
    });
    socket.on('error', (error) => {
      this.error = error;
    });
    this.closed = new Promise((resolve) => {
      socket.once('close', () => {
        this.#notify();
        resolve();
      });
    });
  }

  static async open(port: number): Promise<WireClient> {
    const socket = connect({ host: '127.0.0.1', port, allowHalfOpen: true, noDelay: true });
    await once(socket, 'connect');
    return new WireClient(socket);
  }

  write(bytes: Buffer | number[] | string): void {
    this.socket.write(
      Buffer.isBuffer(bytes) || typeof bytes === 'string' ? bytes : Buffer.from(bytes),
    );
  }

  /** Resolves with exactly `length` bytes; rejects if the connection ends first. */
  async take(length: number): Promise<Buffer> {
    while (this.#received.length < length) {
      if (this.ended || this.socket.destroyed) {
        throw new Error(`connection ended after ${this.#received.length} of ${length} bytes`);
      }
      await new Promise<void>((resolve) => this.#waiters.push(resolve));
    }
    const bytes = this.#received.subarray(0, length);
    this.#received = this.#received.subarray(length);
    return bytes;
  }

  /** Everything still to come, once the proxy has ended or closed the connection. */
  async rest(): Promise<Buffer> {
    while (!this.ended && !this.socket.destroyed) {
      await new Promise<void>((resolve) => this.#waiters.push(resolve));
    }
    const bytes = this.#received;
    this.#received = Buffer.alloc(0);
    return bytes;
  }

  /** Waits for the proxy to end or reset the connection, then closes this side too. */
  async closedByProxy(): Promise<void> {
    await this.rest();
    if (!this.socket.destroyed) this.socket.end();
    await this.closed;
  }

  async destroy(): Promise<void> {
    this.socket.destroy();
    await this.closed;
  }

  #notify(): void {
    for (const resolve of this.#waiters.splice(0)) resolve();
  }
}

const GREETING_USERPASS = [0x05, 0x01, 0x02];
const GREETING_NOAUTH = [0x05, 0x01, 0x00];

function authBytes(username: string, password: string): Buffer {
  const user = Buffer.from(username);
  const pass = Buffer.from(password);
  return Buffer.concat([Buffer.from([0x01, user.length]), user, Buffer.from([pass.length]), pass]);
}

const GOOD_AUTH = authBytes('alice', 'secret');

function port16(port: number): Buffer {
  const bytes = Buffer.alloc(2);
  bytes.writeUInt16BE(port);
  return bytes;
}

function ipv4Request(command: number, port: number): Buffer {
  return Buffer.concat([Buffer.from([0x05, command, 0x00, 0x01, 127, 0, 0, 1]), port16(port)]);
}

function ipv6Request(address: Buffer, port: number): Buffer {
  return Buffer.concat([Buffer.from([0x05, 0x01, 0x00, 0x04]), address, port16(port)]);
}

function domainRequest(name: Buffer, port: number): Buffer {
  return Buffer.concat([Buffer.from([0x05, 0x01, 0x00, 0x03, name.length]), name, port16(port)]);
}

/** Greeting and authentication as alice, checking both answers. */
async function authenticate(client: WireClient): Promise<void> {
  client.write(GREETING_USERPASS);
  assert.deepEqual([...(await client.take(2))], [0x05, 0x02]);
  client.write(GOOD_AUTH);
  assert.deepEqual([...(await client.take(2))], [0x01, 0x00]);
}

/** The 10-byte command reply; returns its REP byte after checking the fixed fields. */
async function takeReply(client: WireClient): Promise<number> {
  const reply = await client.take(10);
  assert.equal(reply[0], 0x05);
  assert.equal(reply[2], 0x00);
  assert.deepEqual([...reply.subarray(3)], [0x01, 0, 0, 0, 0, 0, 0], 'BND is 0.0.0.0:0');
  return reply[1]!;
}

/** Yields to the event loop until `predicate` holds; for conditions no event announces. */
async function until(predicate: () => boolean): Promise<void> {
  while (!predicate()) await new Promise((resolve) => setImmediate(resolve));
}

/** Resolves once connect() has been called `count` times. */
function connectCalled(proxy: TestProxy, count = 1): Promise<void> {
  return until(() => proxy.calls.length >= count);
}

/** A stand-in tunnel stream the test controls: records what the user sent, can be reset. */
function fakeStream(): { stream: Duplex; received: Buffer[] } {
  const received: Buffer[] = [];
  const stream = new Duplex({
    allowHalfOpen: true,
    read: () => undefined,
    write: (chunk: Buffer, _encoding, callback) => {
      received.push(chunk);
      callback();
    },
  });
  return { stream, received };
}

// ---------------------------------------------------------------------------------------------

describe('socks5ReplyFor', () => {
  test('maps every tunnel reason to the RFC 1928 reply code', () => {
    const expected: [Reason | undefined, number][] = [
      [Reason.FORBIDDEN, 0x02],
      [Reason.NETWORK_UNREACHABLE, 0x03],
      [Reason.HOST_UNREACHABLE, 0x04],
      [Reason.DNS_FAILURE, 0x04],
      [Reason.CONNECTION_REFUSED, 0x05],
      [Reason.DIAL_TIMEOUT, 0x06],
      [Reason.UNSUPPORTED, 0x07],
      [Reason.NORMAL, 0x01],
      [Reason.GOING_AWAY, 0x01],
      [Reason.CONNECTION_RESET, 0x01],
      [Reason.CANCELLED, 0x01],
      [Reason.PROTOCOL_ERROR, 0x01],
      [Reason.INTERNAL_ERROR, 0x01],
      [Reason.FLOW_CONTROL_ERROR, 0x01],
      [Reason.SESSION_CLOSED, 0x01],
      [undefined, 0x01],
    ];
    assert.equal(expected.length, Object.keys(Reason).length + 1, 'every reason is listed');
    for (const [reason, rep] of expected)
      assert.equal(socks5ReplyFor(reason), rep, `reason ${reason}`);
  });
});

describe('serveSocks5', () => {
  const echo = new LocalServer((socket) => socket.pipe(socket));
  /** Collects everything until the user's FIN, then answers with it and ends. */
  const replyOnEnd = new LocalServer((socket) => {
    const chunks: Buffer[] = [];
    socket.on('data', (chunk: Buffer) => chunks.push(chunk));
    socket.on('end', () => socket.end(`got:${Buffer.concat(chunks).toString()}`));
  });
  /** Sends a banner and ends its side at once; records what the user sends afterwards. */
  const bannerThenListen = new LocalServer((socket) => {
    socket.end('banner');
    const chunks: Buffer[] = [];
    socket.on('data', (chunk: Buffer) => chunks.push(chunk));
    socket.on('end', () => bannerReceived.push(Buffer.concat(chunks).toString()));
  });
  const bannerReceived: string[] = [];
  /** Resets the connection as soon as any data arrives. */
  const resetter = new LocalServer((socket) => {
    socket.once('data', () => socket.resetAndDestroy());
  });
  let echoPort = 0;
  const proxy = new TestProxy();

  before(async () => {
    echoPort = await echo.listen();
    await replyOnEnd.listen();
    await bannerThenListen.listen();
    await resetter.listen();
    await proxy.listen();
  });

  beforeEach(() => proxy.reset());

  afterEach(async () => {
    await proxy.settled();
    const errors = proxy.logs.filter((line) => line.level >= ERROR_LEVEL);
    assert.deepEqual(errors, [], 'no error-level log lines');
  });

  after(async () => {
    await proxy.close();
    await Promise.all([
      echo.close(),
      replyOnEnd.close(),
      bannerThenListen.close(),
      resetter.close(),
    ]);
  });

  async function socksConnect(host: string, port: number, auth = true): Promise<Socket> {
    const { socket } = await SocksClient.createConnection({
      proxy: {
        host: '127.0.0.1',
        port: proxy.port,
        type: 5,
        ...(auth && { userId: 'alice', password: 'secret' }),
      },
      command: 'connect',
      destination: { host, port },
    });
    return socket;
  }

  /** Sends `text` through an echo target, checks it comes back, then closes the socket. */
  async function echoRoundTrip(socket: Socket, text: string): Promise<void> {
    let received = '';
    const echoed = new Promise<void>((resolve, reject) => {
      socket.on('data', (chunk: Buffer) => {
        received += chunk.toString();
        if (received.length >= text.length) resolve();
      });
      socket.once('error', reject);
    });
    socket.write(text);
    await echoed;
    assert.equal(received, text);
    const closed = once(socket, 'close');
    socket.destroy();
    await closed;
  }

  describe('CONNECT through the socks client', () => {
    test('IPv4 target: echoes through, group from the credentials', async () => {
      const socket = await socksConnect('127.0.0.1', echoPort);
      await echoRoundTrip(socket, 'hello over ipv4');
      assert.equal(proxy.calls.length, 1);
      assert.equal(proxy.calls[0]!.group, 'group-a');
      assert.deepEqual(proxy.calls[0]!.target, {
        host: '127.0.0.1',
        port: echoPort,
        addressType: 'ipv4',
      });
      assert.equal(proxy.lines('socks5 connected').length, 1);
    });

    test('IPv6 ::1 target arrives as the address type ipv6 with the short text form', async () => {
      const socket = await socksConnect('::1', echoPort);
      await echoRoundTrip(socket, 'hello over ipv6');
      assert.deepEqual(proxy.calls[0]!.target, {
        host: '::1',
        port: echoPort,
        addressType: 'ipv6',
      });
    });

    test('domain target is passed on unresolved', async () => {
      const socket = await socksConnect('echo.internal.example', echoPort);
      await echoRoundTrip(socket, 'hello by name');
      assert.deepEqual(proxy.calls[0]!.target, {
        host: 'echo.internal.example',
        port: echoPort,
        addressType: 'domain',
      });
    });

    test('a large transfer arrives whole and in order', async () => {
      const socket = await socksConnect('127.0.0.1', echoPort);
      const payload = Buffer.alloc(4 * 1024 * 1024);
      for (let index = 0; index < payload.length; index++) payload[index] = (index * 31) % 251;
      socket.end(payload);
      const chunks: Buffer[] = [];
      for await (const chunk of socket) chunks.push(chunk as Buffer);
      assert.ok(Buffer.concat(chunks).equals(payload));
    });
  });

  describe('authentication', () => {
    test('a wrong password gets status 0x01 and the connection closes', async () => {
      const client = await WireClient.open(proxy.port);
      client.write(GREETING_USERPASS);
      assert.deepEqual([...(await client.take(2))], [0x05, 0x02]);
      client.write(authBytes('alice', 'wrong'));
      assert.deepEqual([...(await client.take(2))], [0x01, 0x01]);
      assert.equal((await client.rest()).length, 0);
      await client.closedByProxy();
      assert.equal(proxy.calls.length, 0);
      const failed = proxy.lines('socks5 authentication failed');
      assert.equal(failed.length, 1);
      assert.equal(failed[0]!.username, 'alice');
      assert.ok(!JSON.stringify(proxy.logs).includes('wrong'), 'the password is never logged');
    });

    test('an authenticate() that throws gets status 0x01 and one error log line', async () => {
      const failing = new TestProxy({
        authenticate: async () => {
          throw new Error('credential store unavailable');
        },
      });
      await failing.listen();
      const client = await WireClient.open(failing.port);
      client.write(Buffer.concat([Buffer.from(GREETING_USERPASS), GOOD_AUTH]));
      assert.deepEqual([...(await client.take(4))], [0x05, 0x02, 0x01, 0x01]);
      await client.closedByProxy();
      await failing.close();
      const lines = failing.lines('socks5 authentication error');
      assert.equal(lines.length, 1);
      assert.equal(lines[0]!.level, ERROR_LEVEL);
      assert.equal(failing.calls.length, 0);
    });

    test('no acceptable method gets 0xFF and the connection closes', async () => {
      const client = await WireClient.open(proxy.port);
      client.write([0x05, 0x02, 0x00, 0x01]);
      assert.deepEqual([...(await client.take(2))], [0x05, 0xff]);
      assert.equal((await client.rest()).length, 0);
      await client.closedByProxy();
      assert.equal(proxy.lines('socks5 no acceptable method').length, 1);
    });

    test('zero methods offered gets 0xFF', async () => {
      const client = await WireClient.open(proxy.port);
      client.write([0x05, 0x00]);
      assert.deepEqual([...(await client.take(2))], [0x05, 0xff]);
      await client.closedByProxy();
    });

    test('a wrong subnegotiation version closes without a status', async () => {
      const client = await WireClient.open(proxy.port);
      client.write(GREETING_USERPASS);
      await client.take(2);
      client.write([0x05, 0x01, 0x61, 0x01, 0x62]);
      assert.equal((await client.rest()).length, 0);
      await client.closedByProxy();
      assert.equal(proxy.lines('socks5 bad auth version').length, 1);
    });
  });

  describe('reply codes', () => {
    const cases: [string, () => unknown, number][] = [
      ['FORBIDDEN', () => openError(Reason.FORBIDDEN), 0x02],
      ['NETWORK_UNREACHABLE', () => openError(Reason.NETWORK_UNREACHABLE), 0x03],
      ['HOST_UNREACHABLE', () => openError(Reason.HOST_UNREACHABLE), 0x04],
      ['DNS_FAILURE', () => openError(Reason.DNS_FAILURE), 0x04],
      ['CONNECTION_REFUSED', () => openError(Reason.CONNECTION_REFUSED), 0x05],
      ['DIAL_TIMEOUT', () => openError(Reason.DIAL_TIMEOUT), 0x06],
      ['UNSUPPORTED', () => openError(Reason.UNSUPPORTED), 0x07],
      ['GOING_AWAY', () => openError(Reason.GOING_AWAY), 0x01],
      ['SESSION_CLOSED', () => openError(Reason.SESSION_CLOSED), 0x01],
      ['INTERNAL_ERROR', () => openError(Reason.INTERNAL_ERROR), 0x01],
      [
        'no client in the group (no reason)',
        () => new PosternError('POSTERN_ERR_NO_ROUTE', 'no client connected for group-a'),
        0x01,
      ],
    ];

    function openError(reason: Reason): PosternError {
      return new PosternError('POSTERN_ERR_OPEN_FAILED', 'open failed', { reason });
    }

    for (const [name, error, rep] of cases) {
      test(`connect rejected with ${name} gives REP ${rep}`, async () => {
        proxy.connectImpl = async () => {
          throw error();
        };
        const client = await WireClient.open(proxy.port);
        await authenticate(client);
        client.write(ipv4Request(0x01, 8080));
        assert.equal(await takeReply(client), rep);
        assert.equal((await client.rest()).length, 0);
        await client.closedByProxy();
        const refused = proxy.lines('socks5 connect refused');
        assert.equal(refused.length, 1, 'logged once');
        assert.equal(refused[0]!.target, '127.0.0.1:8080');
        assert.equal(refused[0]!.reply, rep);
        assert.ok(typeof refused[0]!.reason === 'string');
      });
    }

    test('the socks client reports a refused connection', async () => {
      proxy.connectImpl = async () => {
        throw openError(Reason.CONNECTION_REFUSED);
      };
      await assert.rejects(socksConnect('127.0.0.1', 9), /ConnectionRefused/);
    });

    test('a connect that fails with a non-Postern error gets 0x01 and an error log line', async () => {
      proxy.connectImpl = async () => {
        throw new TypeError('a bug in the router');
      };
      const client = await WireClient.open(proxy.port);
      await authenticate(client);
      client.write(ipv4Request(0x01, 8080));
      assert.equal(await takeReply(client), 0x01);
      await client.closedByProxy();
      await proxy.settled();
      const failed = proxy.lines('socks5 connect failed unexpectedly');
      assert.equal(failed.length, 1);
      proxy.logs.length = 0; // expected here; afterEach rejects error lines elsewhere
    });

    for (const [name, command] of [
      ['BIND', 0x02],
      ['UDP ASSOCIATE', 0x03],
      ['an unknown command', 0x09],
    ] as const) {
      test(`${name} gets 0x07 command not supported`, async () => {
        const client = await WireClient.open(proxy.port);
        await authenticate(client);
        client.write(ipv4Request(command, 53));
        assert.equal(await takeReply(client), 0x07);
        await client.closedByProxy();
        assert.equal(proxy.calls.length, 0);
        assert.equal(proxy.lines('socks5 command not supported').length, 1);
      });
    }

    test('an unknown address type gets 0x08', async () => {
      const client = await WireClient.open(proxy.port);
      await authenticate(client);
      client.write([0x05, 0x01, 0x00, 0x02, 1, 2, 3, 4, 0, 80]);
      assert.equal(await takeReply(client), 0x08);
      await client.closedByProxy();
      assert.equal(proxy.calls.length, 0);
    });

    for (const [name, domain] of [
      ['empty', Buffer.alloc(0)],
      ['with a space', Buffer.from('bad host')],
      ['with a control byte', Buffer.from('bad\nhost')],
      ['with non-ASCII bytes', Buffer.from('bücher.example')],
    ] as const) {
      test(`a domain name ${name} gets 0x01`, async () => {
        const client = await WireClient.open(proxy.port);
        await authenticate(client);
        client.write(domainRequest(domain, 80));
        assert.equal(await takeReply(client), 0x01);
        await client.closedByProxy();
        assert.equal(proxy.calls.length, 0);
        assert.equal(proxy.lines('socks5 bad domain name').length, 1);
      });
    }

    test('IPv6 addresses are formatted in RFC 5952 text form', async () => {
      proxy.connectImpl = async () => {
        throw openError(Reason.CONNECTION_REFUSED);
      };
      const fixed = [
        Buffer.alloc(16),
        Buffer.from('20010db8000000000000000000000001', 'hex'),
        Buffer.from('00010000000000020000000000000003', 'hex'),
        Buffer.from('20010db8000000010001000100010001', 'hex'),
        Buffer.from('00000000000000000000ffff7f000001', 'hex'),
      ];
      const expected = ['::', '2001:db8::1', '1:0:0:2::3', '2001:db8:0:1:1:1:1:1', '::ffff:7f00:1'];
      const seen: string[] = [];
      const sendOne = async (address: Buffer): Promise<string> => {
        const calls = proxy.calls.length;
        const client = await WireClient.open(proxy.port);
        await authenticate(client);
        client.write(ipv6Request(address, 443));
        assert.equal(await takeReply(client), 0x05);
        await client.closedByProxy();
        return proxy.calls[calls]!.target.host;
      };
      for (const address of fixed) seen.push(await sendOne(address));
      assert.deepEqual(seen, expected);
      // The WHATWG URL serializer compresses IPv6 the same way; use it as an independent oracle.
      await fc.assert(
        fc.asyncProperty(
          fc.uint8Array({ minLength: 16, maxLength: 16 }),
          fc.array(fc.boolean(), { minLength: 8, maxLength: 8 }),
          async (random, zeroGroups) => {
            const address = Buffer.from(random);
            for (const [group, zero] of zeroGroups.entries()) {
              if (zero) address.fill(0, group * 2, group * 2 + 2);
            }
            const host = await sendOne(address);
            const oracle = new URL(
              `http://[${address.toString('hex').replace(/(.{4})(?!$)/g, '$1:')}]/`,
            );
            assert.equal(`[${host}]`, oracle.hostname);
          },
        ),
        { numRuns: 40 },
      );
    });
  });

  describe('framing', () => {
    test('the handshake parses when every byte arrives on its own', async () => {
      const acceptedBefore = proxy.accepted.length;
      const client = await WireClient.open(proxy.port);
      await until(() => proxy.accepted.length > acceptedBefore);
      const serverSide = proxy.accepted.at(-1)!;
      const sendByteByByte = async (bytes: Buffer | number[]) => {
        for (const byte of bytes) {
          const before = serverSide.bytesRead;
          client.write([byte]);
          await until(() => serverSide.bytesRead > before);
        }
      };
      await sendByteByByte(GREETING_USERPASS);
      assert.deepEqual([...(await client.take(2))], [0x05, 0x02]);
      await sendByteByByte(GOOD_AUTH);
      assert.deepEqual([...(await client.take(2))], [0x01, 0x00]);
      await sendByteByByte(domainRequest(Buffer.from('localhost'), echoPort));
      assert.equal(await takeReply(client), 0x00);
      client.write('split ok');
      assert.equal((await client.take(8)).toString(), 'split ok');
      await client.destroy();
      assert.deepEqual(proxy.calls[0]!.target, {
        host: 'localhost',
        port: echoPort,
        addressType: 'domain',
      });
    });

    test('greeting, auth, request and early data in one write: early data reaches the target', async () => {
      const client = await WireClient.open(proxy.port);
      client.write(
        Buffer.concat([
          Buffer.from(GREETING_USERPASS),
          GOOD_AUTH,
          ipv4Request(0x01, echoPort),
          Buffer.from('early data'),
        ]),
      );
      assert.deepEqual([...(await client.take(4))], [0x05, 0x02, 0x01, 0x00]);
      assert.equal(await takeReply(client), 0x00);
      assert.equal((await client.take(10)).toString(), 'early data');
      await client.destroy();
    });

    test('early data sent while connect() is pending is delivered in order', async () => {
      let release: (() => void) | undefined;
      proxy.connectImpl = async (group, target, cancellation) => {
        await new Promise<void>((resolve) => {
          release = resolve;
        });
        return dialLocal(group, target, cancellation);
      };
      const client = await WireClient.open(proxy.port);
      await authenticate(client);
      client.write(ipv4Request(0x01, echoPort));
      client.write('first,');
      await connectCalled(proxy);
      client.write('second');
      const serverSide = proxy.accepted.at(-1)!;
      const expectedBytes = 3 + GOOD_AUTH.length + 10 + 'first,second'.length;
      await until(() => serverSide.bytesRead === expectedBytes);
      release!();
      assert.equal(await takeReply(client), 0x00);
      assert.equal((await client.take(12)).toString(), 'first,second');
      await client.destroy();
    });
  });

  describe('half-close', () => {
    test('a user who ends its write side still receives the whole reply', async () => {
      const client = await WireClient.open(proxy.port);
      await authenticate(client);
      client.write(ipv4Request(0x01, (replyOnEnd.server.address() as AddressInfo).port));
      assert.equal(await takeReply(client), 0x00);
      client.write('question');
      client.socket.end();
      assert.equal((await client.rest()).toString(), 'got:question');
      assert.ok(client.ended, 'the reply ends with a clean FIN');
      await client.closed;
      assert.equal(client.error, undefined);
      assert.equal(proxy.lines('socks5 connection closed').length, 1);
    });

    test('a FIN sent with the request before the reply is passed on after early data', async () => {
      const client = await WireClient.open(proxy.port);
      await authenticate(client);
      client.socket.end(
        Buffer.concat([
          ipv4Request(0x01, (replyOnEnd.server.address() as AddressInfo).port),
          Buffer.from('one-shot'),
        ]),
      );
      assert.equal(await takeReply(client), 0x00);
      assert.equal((await client.rest()).toString(), 'got:one-shot');
      await client.closed;
      assert.equal(proxy.calls[0]!.cancellation.cancelled, false);
    });

    test('a target that ends first still receives what the user sends afterwards', async () => {
      bannerReceived.length = 0;
      const client = await WireClient.open(proxy.port);
      await authenticate(client);
      client.write(ipv4Request(0x01, (bannerThenListen.server.address() as AddressInfo).port));
      assert.equal(await takeReply(client), 0x00);
      assert.equal((await client.rest()).toString(), 'banner');
      assert.ok(client.ended);
      client.socket.end('after the banner');
      await client.closed;
      await proxy.settled();
      await until(() => bannerReceived.length === 1);
      assert.deepEqual(bannerReceived, ['after the banner']);
    });
  });

  describe('resets', () => {
    test('a target reset resets the user socket (ECONNRESET)', async () => {
      const client = await WireClient.open(proxy.port);
      await authenticate(client);
      client.write(ipv4Request(0x01, (resetter.server.address() as AddressInfo).port));
      assert.equal(await takeReply(client), 0x00);
      client.write('trigger');
      await client.closed;
      assert.equal(client.error?.code, 'ECONNRESET');
      assert.equal(client.ended, false, 'no clean FIN');
      const reset = proxy.lines('socks5 relay reset');
      assert.equal(reset.length, 1);
      assert.equal(reset[0]!.cutBy, 'tunnel');
    });

    test('a tunnel stream destroyed with an error resets the user socket', async () => {
      const { stream } = fakeStream();
      proxy.connectImpl = async () => stream;
      const client = await WireClient.open(proxy.port);
      await authenticate(client);
      client.write(ipv4Request(0x01, 443));
      assert.equal(await takeReply(client), 0x00);
      stream.push('partial');
      assert.equal((await client.take(7)).toString(), 'partial');
      stream.destroy(new PosternError('POSTERN_ERR_STREAM_RESET', 'reset by peer'));
      await client.closed;
      assert.equal(client.error?.code, 'ECONNRESET');
    });

    test('a tunnel stream destroyed without an error still resets the user socket', async () => {
      const { stream } = fakeStream();
      proxy.connectImpl = async () => stream;
      const client = await WireClient.open(proxy.port);
      await authenticate(client);
      client.write(ipv4Request(0x01, 443));
      assert.equal(await takeReply(client), 0x00);
      stream.destroy();
      await client.closed;
      assert.equal(client.error?.code, 'ECONNRESET');
    });

    test('a user reset destroys the tunnel stream', async () => {
      const { stream, received } = fakeStream();
      proxy.connectImpl = async () => stream;
      const client = await WireClient.open(proxy.port);
      await authenticate(client);
      client.write(ipv4Request(0x01, 443));
      assert.equal(await takeReply(client), 0x00);
      client.write('some');
      await until(() => received.length > 0);
      const streamClosed = new Promise((resolve) => stream.once('close', resolve));
      client.socket.resetAndDestroy();
      await streamClosed;
      assert.equal((stream.errored as NodeJS.ErrnoException | null)?.code, 'ECONNRESET');
      assert.equal(stream.writableEnded, false, 'the stream was not ended cleanly');
      await proxy.settled();
      assert.equal(proxy.lines('socks5 relay reset')[0]?.cutBy, 'user');
    });
  });

  describe('pending connect', () => {
    /** A connect() that waits to be cancelled and records why. */
    function waitForCancel(): { cancelled: Promise<unknown> } {
      let heard: (reason: unknown) => void = () => undefined;
      const cancelled = new Promise<unknown>((resolve) => {
        heard = resolve;
      });
      proxy.connectImpl = (_group, _target, cancellation) =>
        new Promise((_resolve, reject) => {
          cancellation.onCancel((reason) => {
            heard(reason);
            reject(reason);
          });
        });
      return { cancelled };
    }

    test('a user who disconnects while connect() is pending cancels it', async () => {
      const { cancelled } = waitForCancel();
      const client = await WireClient.open(proxy.port);
      await authenticate(client);
      client.write(ipv4Request(0x01, 443));
      await connectCalled(proxy);
      assert.equal(proxy.calls[0]!.cancellation.cancelled, false);
      client.socket.resetAndDestroy();
      await client.closed;
      const reason = await cancelled;
      assert.ok(reason instanceof PosternError);
      assert.equal(reason.reason, Reason.CANCELLED);
      await proxy.settled();
      assert.equal(proxy.lines('socks5 connect cancelled: user left').length, 1);
      assert.equal(proxy.lines('socks5 connect refused').length, 0);
    });

    test('a stream that opens after the user left is destroyed', async () => {
      const { stream } = fakeStream();
      let release: (() => void) | undefined;
      proxy.connectImpl = async () => {
        await new Promise<void>((resolve) => {
          release = resolve;
        });
        return stream;
      };
      const client = await WireClient.open(proxy.port);
      await authenticate(client);
      client.write(ipv4Request(0x01, 443));
      await connectCalled(proxy);
      client.socket.resetAndDestroy();
      await client.closed;
      await until(() => proxy.calls[0]!.cancellation.cancelled);
      release!();
      await proxy.settled();
      assert.ok(stream.destroyed);
      assert.equal(proxy.lines('socks5 user left before connect finished').length, 1);
    });

    test('a stream already destroyed when connect() resolves gets a failure reply', async () => {
      const { stream } = fakeStream();
      const streamErrors: Error[] = [];
      stream.on('error', (error) => streamErrors.push(error));
      stream.destroy(
        new PosternError('POSTERN_ERR_STREAM_RESET', 'gone', { reason: Reason.HOST_UNREACHABLE }),
      );
      proxy.connectImpl = async () => stream;
      const client = await WireClient.open(proxy.port);
      await authenticate(client);
      client.write(ipv4Request(0x01, 443));
      assert.equal(await takeReply(client), 0x04);
      await client.closedByProxy();
      assert.equal(streamErrors.length, 1);
      assert.equal(proxy.lines('socks5 stream closed before reply').length, 1);
    });

    test('a user who closes while connect() is pending does not abort it; the connection still ends', async () => {
      let release: (() => void) | undefined;
      proxy.connectImpl = async (group, target, cancellation) => {
        await new Promise<void>((resolve) => {
          release = resolve;
        });
        return dialLocal(group, target, cancellation);
      };
      const client = await WireClient.open(proxy.port);
      await authenticate(client);
      client.write(ipv4Request(0x01, echoPort));
      await connectCalled(proxy);
      await client.destroy();
      release!();
      await proxy.settled();
      assert.equal(
        proxy.calls[0]!.cancellation.cancelled,
        false,
        'a FIN is a half-close, not a cancel',
      );
    });
  });

  describe('hostile input', () => {
    test('an HTTP request on the SOCKS port is closed without an answer', async () => {
      const client = await WireClient.open(proxy.port);
      client.write('GET / HTTP/1.1\r\nHost: example.com\r\n\r\n');
      assert.equal((await client.rest()).length, 0);
      await client.closedByProxy();
      assert.equal(proxy.lines('socks5 bad version').length, 1);
    });

    test('a wrong version in the request is closed without a reply', async () => {
      const client = await WireClient.open(proxy.port);
      await authenticate(client);
      client.write([0x04, 0x01, 0x00, 0x01, 127, 0, 0, 1, 0, 80]);
      assert.equal((await client.rest()).length, 0);
      await client.closedByProxy();
    });

    test('megabytes of junk after a greeting are answered once and closed', async () => {
      const client = await WireClient.open(proxy.port);
      client.write(Buffer.concat([Buffer.from([0x05, 0xff]), Buffer.alloc(8 * 1024 * 1024, 0xaa)]));
      assert.deepEqual([...(await client.take(2))], [0x05, 0xff]);
      await client.closedByProxy();
    });

    test('random bytes never crash the server and always end the connection', async () => {
      await fc.assert(
        fc.asyncProperty(fc.uint8Array({ minLength: 1, maxLength: 64 }), async (bytes) => {
          const client = await WireClient.open(proxy.port);
          client.socket.end(Buffer.from(bytes));
          await client.rest();
          await client.destroy();
        }),
        { numRuns: 100 },
      );
      await proxy.settled();
    });

    test('a user who leaves mid-handshake is logged at debug only', async () => {
      const client = await WireClient.open(proxy.port);
      client.write([0x05, 0x03, 0x02]);
      await client.destroy();
      await proxy.settled();
      const left = proxy.lines('socks5 user left during handshake');
      assert.equal(left.length, 1);
      assert.equal(left[0]!.level, 20);
    });
  });

  test('the server stays usable after all of this', async () => {
    const socket = await socksConnect('127.0.0.1', echoPort);
    await echoRoundTrip(socket, 'still here');
  });
});

describe('serveSocks5 with no-auth', () => {
  const echo = new LocalServer((socket) => socket.pipe(socket));
  const proxy = new TestProxy({ noAuthGroup: 'open-group' });
  let echoPort = 0;

  before(async () => {
    echoPort = await echo.listen();
    await proxy.listen();
  });

  after(async () => {
    await proxy.close();
    await echo.close();
  });

  test('method 0x00 selects the no-auth group', async () => {
    const { socket } = await SocksClient.createConnection({
      proxy: { host: '127.0.0.1', port: proxy.port, type: 5 },
      command: 'connect',
      destination: { host: '127.0.0.1', port: echoPort },
    });
    socket.write('no auth');
    const [chunk] = (await once(socket, 'data')) as [Buffer];
    assert.equal(chunk.toString(), 'no auth');
    socket.destroy();
    await once(socket, 'close');
    assert.equal(proxy.calls.at(-1)!.group, 'open-group');
  });

  test('a client offering both methods is asked for credentials, which choose the group', async () => {
    const client = await WireClient.open(proxy.port);
    client.write([0x05, 0x02, 0x00, 0x02]);
    assert.deepEqual([...(await client.take(2))], [0x05, 0x02]);
    client.write(GOOD_AUTH);
    assert.deepEqual([...(await client.take(2))], [0x01, 0x00]);
    client.write(ipv4Request(0x01, echoPort));
    assert.equal(await takeReply(client), 0x00);
    await client.destroy();
    await proxy.settled();
    assert.equal(proxy.calls.at(-1)!.group, 'group-a');
  });

  test('a client offering only no-auth gets 0x00', async () => {
    const client = await WireClient.open(proxy.port);
    client.write(GREETING_NOAUTH);
    assert.deepEqual([...(await client.take(2))], [0x05, 0x00]);
    await client.destroy();
    await proxy.settled();
  });
});

describe('serveSocks5 handshake deadline', () => {
  const TIMEOUT_MS = 100;
  const echo = new LocalServer((socket) => socket.pipe(socket));
  const proxy = new TestProxy({ handshakeTimeoutMs: TIMEOUT_MS });
  let echoPort = 0;

  before(async () => {
    echoPort = await echo.listen();
    await proxy.listen();
  });

  beforeEach(() => proxy.reset());

  after(async () => {
    await proxy.close();
    await echo.close();
  });

  test('a silent user is closed at the deadline', async () => {
    const client = await WireClient.open(proxy.port);
    const started = performance.now();
    assert.equal((await client.rest()).length, 0);
    await client.closedByProxy();
    assert.ok(performance.now() - started >= TIMEOUT_MS - 10, 'not before the deadline');
    await proxy.settled();
    assert.equal(proxy.lines('socks5 handshake timeout').length, 1);
  });

  for (const [name, bytes] of [
    ['255 methods announced, 1 sent', [0x05, 0xff, 0x02]],
    ['a 255-byte username announced, 3 sent', [...GREETING_USERPASS, 0x01, 0xff, 0x61, 0x62, 0x63]],
  ] as const) {
    test(`an absurd length never completed (${name}) is closed at the deadline`, async () => {
      const client = await WireClient.open(proxy.port);
      client.write([...bytes]);
      await client.rest();
      await client.closedByProxy();
      await proxy.settled();
      assert.equal(proxy.lines('socks5 handshake timeout').length, 1);
    });
  }

  test('a request that stalls inside a 255-byte domain name is closed at the deadline', async () => {
    const client = await WireClient.open(proxy.port);
    await authenticate(client);
    client.write([0x05, 0x01, 0x00, 0x03, 0xff, 0x61]);
    await client.rest();
    await client.closedByProxy();
    await proxy.settled();
    assert.equal(proxy.lines('socks5 handshake timeout').length, 1);
    assert.equal(proxy.calls.length, 0);
  });

  test('an established connection has no deadline: idle well past it, it still works', async () => {
    const client = await WireClient.open(proxy.port);
    await authenticate(client);
    client.write(ipv4Request(0x01, echoPort));
    assert.equal(await takeReply(client), 0x00);
    // Proving an absence needs time to pass: idle for several handshake deadlines.
    await new Promise((resolve) => setTimeout(resolve, TIMEOUT_MS * 4));
    client.write('still alive');
    assert.equal((await client.take(11)).toString(), 'still alive');
    await client.destroy();
    assert.equal(proxy.lines('socks5 handshake timeout').length, 0);
  });
});
