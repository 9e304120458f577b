import './helpers/fail-on-unhandled.js';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import {
  Agent,
  createServer as createHttpServer,
  request as httpRequest,
  type IncomingMessage,
  type Server,
  type ServerResponse,
} from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { type AddressInfo, connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { connect as tlsConnect } from 'node:tls';
import { WebSocketServer } from 'ws';
import { PosternError } from '../src/errors.js';
import type { Gateway } from '../src/gateway/gateway.js';
import {
  endToEndFields,
  failureFor,
  parseAbsoluteForm,
  parseAuthorityForm,
  parseProxyAuthorization,
  proxyStatus,
} from '../src/gateway/http-proxy.js';
import { loadServerCertificate } from '../src/tls/certificates.js';
import { Reason } from '../src/tunnel/constants.js';
import {
  GROUP,
  PASSWORD,
  startClient,
  startEchoServer,
  startGateway,
  startTcpServer,
  type TestServer,
  waitForSessions,
} from './helpers/e2e.js';
import { startRelay } from './helpers/relay.js';

// ---------------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------------

const HANDSHAKE_TIMEOUT_MS = 1_000;
const UPLOAD_BYTES = 50 * 1024 * 1024;
const DOWNLOAD_BYTES = 20 * 1024 * 1024;
/** Port 1 (tcpmux) needs privilege to bind and no test binds it: a connection is refused. */
const CLOSED_PORT = 1;

interface CurlResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs curl; resolves with its exit code instead of rejecting, so a test can assert on it. */
function curl(args: readonly string[]): Promise<CurlResult> {
  return new Promise((resolve) => {
    execFile(
      'curl',
      ['--silent', '--show-error', '--max-time', '20', ...args],
      { maxBuffer: 8 * 1024 * 1024 },
      (error, stdout, stderr) => {
        const code = error === null ? 0 : ((error as { code?: number }).code ?? -1);
        resolve({ code, stdout, stderr });
      },
    );
  });
}

function basic(username: string, password: string): string {
  return `Basic ${Buffer.from(`${username}:${password}`).toString('base64')}`;
}

function proxyUrl(scheme: 'http' | 'https', port: number, user = GROUP, pass = PASSWORD): string {
  return `${scheme}://${encodeURIComponent(user)}:${encodeURIComponent(pass)}@127.0.0.1:${port}`;
}

interface ResponseHead {
  status: number;
  headers: Map<string, string>;
}

/** The heads in a `curl -D -` (or `-v` `< ` lines) dump, in order. */
function parseHeads(dump: string): ResponseHead[] {
  const heads: ResponseHead[] = [];
  for (const rawLine of dump.split(/\r?\n/)) {
    const line = rawLine.startsWith('< ') ? rawLine.slice(2) : rawLine;
    const status = /^HTTP\/1\.[01] (\d{3})/.exec(line);
    if (status) {
      heads.push({ status: Number(status[1]), headers: new Map() });
      continue;
    }
    const field = /^([A-Za-z0-9-]+): (.*)$/.exec(line);
    if (field && heads.length > 0) heads.at(-1)!.headers.set(field[1]!.toLowerCase(), field[2]!);
  }
  return heads;
}

/** `curl -D -` output: the last head and the body after it. */
function splitDump(stdout: string): { head: ResponseHead; heads: ResponseHead[]; body: string } {
  const heads = parseHeads(stdout.slice(0, stdout.lastIndexOf('\r\n\r\n')));
  const body = stdout.slice(stdout.lastIndexOf('\r\n\r\n') + 4);
  assert.ok(heads.length > 0, `no response head in:\n${stdout}`);
  return { head: heads.at(-1)!, heads, body };
}

async function sha256File(path: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

/** Writes `bytes` random bytes to `path` with backpressure; returns their SHA-256. */
async function writeRandomFile(path: string, bytes: number): Promise<string> {
  const hash = createHash('sha256');
  const file = createWriteStream(path);
  for (let written = 0; written < bytes; ) {
    const chunk = randomBytes(Math.min(1024 * 1024, bytes - written));
    hash.update(chunk);
    written += chunk.length;
    if (!file.write(chunk)) await once(file, 'drain');
  }
  file.end();
  await once(file, 'finish');
  return hash.digest('hex');
}

/** An HTTP or HTTPS server on 127.0.0.1 that counts its connections and closes them all. */
class WebTarget {
  readonly server: Server;
  connections = 0;
  #sockets = new Set<Socket>();
  #extraClose: () => void;

  constructor(server: Server, extraClose: () => void = () => undefined) {
    this.server = server;
    this.#extraClose = extraClose;
    server.on('connection', (socket: Socket) => {
      this.connections += 1;
      this.#sockets.add(socket);
      socket.once('close', () => this.#sockets.delete(socket));
    });
  }

  get port(): number {
    return (this.server.address() as AddressInfo).port;
  }

  async listen(): Promise<this> {
    this.server.listen(0, '127.0.0.1');
    await once(this.server, 'listening');
    return this;
  }

  async close(): Promise<void> {
    this.#extraClose();
    for (const socket of this.#sockets) socket.destroy();
    this.server.close();
    await once(this.server, 'close');
  }
}

/** 64 KiB of random bytes; the chunked download repeats it. */
const DOWNLOAD_BLOCK = randomBytes(64 * 1024);

function expectedDownloadHash(bytes: number): string {
  const hash = createHash('sha256');
  for (let sent = 0; sent < bytes; sent += DOWNLOAD_BLOCK.length) {
    hash.update(DOWNLOAD_BLOCK.subarray(0, Math.min(DOWNLOAD_BLOCK.length, bytes - sent)));
  }
  return hash.digest('hex');
}

/** What the web target received on `/upload`. */
interface UploadReport {
  bytes: number;
  sha256: string;
  transferEncoding: string | null;
  expect: string | null;
}

async function serveWeb(req: IncomingMessage, res: ServerResponse): Promise<void> {
  const url = new URL(req.url ?? '/', 'http://target');
  switch (url.pathname) {
    case '/upload': {
      const hash = createHash('sha256');
      let bytes = 0;
      for await (const chunk of req) {
        hash.update(chunk as Buffer);
        bytes += (chunk as Buffer).length;
      }
      const report: UploadReport = {
        bytes,
        sha256: hash.digest('hex'),
        transferEncoding: req.headers['transfer-encoding'] ?? null,
        expect: req.headers.expect ?? null,
      };
      res.end(JSON.stringify(report));
      return;
    }
    case '/chunked': {
      const bytes = Number(url.searchParams.get('bytes'));
      res.writeHead(200, { 'Content-Type': 'application/octet-stream' });
      for (let sent = 0; sent < bytes; sent += DOWNLOAD_BLOCK.length) {
        const block = DOWNLOAD_BLOCK.subarray(0, Math.min(DOWNLOAD_BLOCK.length, bytes - sent));
        if (!res.write(block)) await once(res, 'drain');
      }
      res.end();
      return;
    }
    case '/hop':
      res.writeHead(200, {
        Connection: 'X-Hop-Secret',
        'X-Hop-Secret': 'only for the proxy',
        'Proxy-Authenticate': 'Basic realm="target"',
        'X-End-To-End': 'kept',
      });
      res.end('hop');
      return;
    case '/cut':
      res.writeHead(200, { 'Content-Length': '1000' });
      res.write(Buffer.alloc(500, 0x61), () => res.socket?.destroy());
      return;
    case '/cut-chunked':
      res.writeHead(200, { 'Content-Type': 'text/plain' });
      res.write(Buffer.alloc(500, 0x62), () => res.socket?.destroy());
      return;
    default:
      res.writeHead(200, { 'Content-Type': 'application/json' });
      res.end(JSON.stringify({ method: req.method, url: req.url, rawHeaders: req.rawHeaders }));
  }
}

function startWebTarget(): Promise<WebTarget> {
  const server = createHttpServer((req, res) => {
    void serveWeb(req, res);
  });
  // The target decides about 100 Continue; the proxy must pass its decision on.
  server.on('checkContinue', (req, res) => {
    if (req.url === '/refuse') {
      res.writeHead(417, { 'Content-Type': 'text/plain' });
      res.end('no body wanted');
      return;
    }
    res.writeContinue();
    void serveWeb(req, res);
  });
  const sockets = new WebSocketServer({ server, path: '/ws' });
  sockets.on('connection', (socket) => {
    socket.on('message', (data, isBinary) => socket.send(data, { binary: isBinary }));
  });
  return new WebTarget(server, () => {
    for (const client of sockets.clients) client.terminate();
    sockets.close();
  }).listen();
}

/** Sends `bytes` on a raw connection and collects everything until the proxy closes it. */
function rawExchange(
  port: number,
  bytes: Buffer | string,
  options: { end: boolean },
): Promise<{ text: string; error: Error | undefined }> {
  return new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port });
    const chunks: Buffer[] = [];
    let error: Error | undefined;
    socket.on('data', (chunk: Buffer) => chunks.push(chunk));
    socket.on('error', (err) => {
      error = err;
    });
    socket.once('close', () => resolve({ text: Buffer.concat(chunks).toString('latin1'), error }));
    if (options.end) socket.end(bytes);
    else socket.write(bytes);
  });
}

/** Opens a CONNECT tunnel on a raw socket; resolves once the proxy said 200. */
async function rawConnect(proxyPort: number, target: string, proxyCa?: string): Promise<Socket> {
  const socket =
    proxyCa === undefined
      ? connect({ host: '127.0.0.1', port: proxyPort })
      : tlsConnect({ host: '127.0.0.1', port: proxyPort, ca: proxyCa });
  socket.write(
    `CONNECT ${target} HTTP/1.1\r\nHost: ${target}\r\nProxy-Authorization: ${basic(GROUP, PASSWORD)}\r\n\r\n`,
  );
  let received = '';
  while (!received.includes('\r\n\r\n')) {
    const [chunk] = (await once(socket, 'data')) as [Buffer];
    received += chunk.toString('latin1');
  }
  assert.match(received, /^HTTP\/1\.1 200 /);
  assert.equal(received.endsWith('\r\n\r\n'), true, 'no byte after the 200 head');
  return socket;
}

/** Reads exactly `length` bytes from a flowing socket. */
async function readExactly(socket: Socket, length: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let total = 0;
  while (total < length) {
    const [chunk] = (await once(socket, 'data')) as [Buffer];
    chunks.push(chunk);
    total += chunk.length;
  }
  return Buffer.concat(chunks);
}

/** A GET through the proxy with Node's client: the proxy connection comes from `agent`. */
function getThroughProxy(
  agent: Agent,
  proxyPort: number,
  url: string,
): Promise<{ status: number; body: string; reused: boolean }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({
      agent,
      host: '127.0.0.1',
      port: proxyPort,
      path: url,
      headers: { Host: new URL(url).host, 'Proxy-Authorization': basic(GROUP, PASSWORD) },
    });
    req.once('error', reject);
    req.once('response', (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.once('end', () =>
        resolve({
          status: res.statusCode ?? 0,
          body: Buffer.concat(chunks).toString(),
          reused: req.reusedSocket,
        }),
      );
      res.once('error', reject);
    });
    req.end();
  });
}

// ---------------------------------------------------------------------------------------------
// Pure parts
// ---------------------------------------------------------------------------------------------

describe('http proxy parsing', () => {
  test('absolute-form targets give host, port, Host authority and origin-form path', () => {
    assert.deepEqual(parseAbsoluteForm('http://Example.com/a/../b?q=1'), {
      host: 'Example.com',
      port: 80,
      authority: 'Example.com',
      path: '/a/../b?q=1',
    });
    assert.deepEqual(parseAbsoluteForm('http://[::1]:8080?x'), {
      host: '::1',
      port: 8080,
      authority: '[::1]:8080',
      path: '/?x',
    });
    assert.deepEqual(parseAbsoluteForm('ws://h:81/socket'), {
      host: 'h',
      port: 81,
      authority: 'h:81',
      path: '/socket',
    });
    for (const bad of ['/relative', 'https://h/', 'ftp://h/', 'http://u:p@h/', 'http://h:0/']) {
      assert.equal(typeof parseAbsoluteForm(bad), 'string', bad);
    }
  });

  test('authority-form targets need a port in range', () => {
    assert.deepEqual(parseAuthorityForm('db.internal:5432'), { host: 'db.internal', port: 5432 });
    assert.deepEqual(parseAuthorityForm('[fd00::1]:443'), { host: 'fd00::1', port: 443 });
    for (const bad of ['host', 'host:70000', '[nope]:1', 'a b:1', `${'a'.repeat(254)}:1`]) {
      assert.equal(typeof parseAuthorityForm(bad), 'string', bad);
    }
  });

  test('Basic credentials: case-insensitive scheme, password may hold colons', () => {
    assert.deepEqual(parseProxyAuthorization(basic('team', 'a:b')), {
      username: 'team',
      password: 'a:b',
    });
    assert.deepEqual(parseProxyAuthorization(`bAsIc ${Buffer.from('g:').toString('base64')}`), {
      username: 'g',
      password: '',
    });
    assert.equal(parseProxyAuthorization('Bearer abc'), null);
    assert.equal(
      parseProxyAuthorization(`Basic ${Buffer.from('nocolon').toString('base64')}`),
      null,
    );
  });

  test('hop-by-hop fields and those Connection names are removed, the rest kept in order', () => {
    const raw = [
      'Host',
      'h',
      'Connection',
      'keep-alive, X-Secret',
      'X-Secret',
      's',
      'Keep-Alive',
      't=5',
      'Proxy-Authorization',
      'Basic x',
      'Proxy-Connection',
      'keep-alive',
      'TE',
      'trailers',
      'Transfer-Encoding',
      'chunked',
      'Upgrade',
      'websocket',
      'Accept',
      'a',
      'Accept',
      'b',
    ];
    assert.deepEqual(endToEndFields(raw), ['Host', 'h', 'Accept', 'a', 'Accept', 'b']);
    assert.deepEqual(endToEndFields(raw, new Set(['upgrade'])), [
      'Host',
      'h',
      'Upgrade',
      'websocket',
      'Accept',
      'a',
      'Accept',
      'b',
    ]);
  });

  test('each tunnel failure maps to its status and RFC 9209 error type', () => {
    const cases: [unknown, number, string][] = [
      [
        new PosternError('POSTERN_ERR_NO_ROUTE', 'none', { reason: Reason.INTERNAL_ERROR }),
        503,
        'destination_unavailable',
      ],
      [open(Reason.FORBIDDEN), 403, 'destination_ip_prohibited'],
      [open(Reason.CONNECTION_REFUSED), 502, 'connection_refused'],
      [open(Reason.HOST_UNREACHABLE), 502, 'destination_ip_unroutable'],
      [open(Reason.NETWORK_UNREACHABLE), 502, 'destination_ip_unroutable'],
      [open(Reason.DNS_FAILURE), 502, 'dns_error'],
      [open(Reason.DIAL_TIMEOUT), 504, 'connection_timeout'],
      [open(Reason.INTERNAL_ERROR), 502, 'proxy_internal_error'],
      [
        new PosternError('POSTERN_ERR_STREAM_RESET', 'reset', { reason: Reason.FORBIDDEN }),
        502,
        'connection_terminated',
      ],
      [
        Object.assign(new Error('socket hang up'), { code: 'ECONNRESET' }),
        502,
        'connection_terminated',
      ],
      [
        Object.assign(new Error('too big'), { code: 'HPE_HEADER_OVERFLOW' }),
        502,
        'http_response_header_section_size',
      ],
      [
        Object.assign(new Error('bad'), { code: 'HPE_INVALID_CONSTANT' }),
        502,
        'http_protocol_error',
      ],
      [new Error('odd'), 502, 'proxy_internal_error'],
    ];
    for (const [error, status, type] of cases) {
      const failure = failureFor(error);
      assert.deepEqual([failure.status, failure.error], [status, type], String(error));
    }
  });

  test('Proxy-Status details are a valid structured-field string', () => {
    const value = proxyStatus({ status: 502, error: 'dns_error', details: 'say "hi"\\\n\u00e9' });
    assert.equal(value, 'postern; error=dns_error; details="say \\"hi\\"\\\\??"');
  });
});

function open(reason: Reason): PosternError {
  return new PosternError('POSTERN_ERR_OPEN_FAILED', `open failed (${reason})`, { reason });
}

// ---------------------------------------------------------------------------------------------
// End to end: real curl, a real gateway and clients, real targets on 127.0.0.1
// ---------------------------------------------------------------------------------------------

const STRICT_GROUP = 'strict';
const EMPTY_GROUP = 'empty';

describe('HTTP and HTTPS proxy through the tunnel', () => {
  let gateway: Gateway;
  let closeClients: () => Promise<void>;
  let web: WebTarget;
  let tls: WebTarget;
  let echo: TestServer;
  let dir: string;
  let gatewayCertFile: string;
  let targetCertFile: string;
  let httpPort: number;
  let httpsPort: number;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'postern-http-proxy-'));
    gateway = await startGateway({
      handshake_timeout: HANDSHAKE_TIMEOUT_MS,
      proxy: { http: { listen_addr: '127.0.0.1:0' }, https: { listen_addr: '127.0.0.1:0' } },
      groups: [
        { id: GROUP, password: PASSWORD },
        { id: STRICT_GROUP, password: 'strict-secret' },
        { id: EMPTY_GROUP, password: 'x' },
      ],
    });
    const team = startClient(gateway);
    // Its policy allows one documentation address only, so every loopback target is forbidden.
    const strict = startClient(gateway, {
      id: 'client-strict',
      group_id: STRICT_GROUP,
      group_password: 'strict-secret',
      allowed_hosts: ['192.0.2.1'],
    });
    closeClients = async () => {
      await Promise.all([team.close(), strict.close()]);
    };
    await Promise.all([waitForSessions(gateway, 1), waitForSessions(gateway, 1, STRICT_GROUP)]);
    httpPort = gateway.addresses.http!.port;
    httpsPort = gateway.addresses.https!.port;
    web = await startWebTarget();
    const certificate = await loadServerCertificate({});
    tls = await new WebTarget(
      createHttpsServer({ cert: certificate.cert, key: certificate.key }, (req, res) => {
        void serveWeb(req, res);
      }) as unknown as Server,
    ).listen();
    echo = await startEchoServer();
    gatewayCertFile = join(dir, 'gateway.pem');
    targetCertFile = join(dir, 'target.pem');
    await writeFile(gatewayCertFile, gateway.certificate.cert);
    await writeFile(targetCertFile, certificate.cert);
  });

  after(async () => {
    await closeClients();
    await gateway.close();
    await Promise.all([web.close(), tls.close(), echo.close()]);
    await rm(dir, { recursive: true, force: true });
  });

  const http = () => proxyUrl('http', httpPort);

  test('GET in absolute form reaches the target with Host and Via, without proxy fields', async () => {
    const { code, stdout, stderr } = await curl([
      '-x',
      http(),
      '-H',
      'Connection: X-Hop',
      '-H',
      'X-Hop: for the proxy only',
      '-H',
      'X-End-To-End: kept',
      `http://127.0.0.1:${web.port}/echo?q=1`,
    ]);
    assert.equal(code, 0, stderr);
    const seen = JSON.parse(stdout) as { method: string; url: string; rawHeaders: string[] };
    assert.equal(seen.method, 'GET');
    assert.equal(seen.url, '/echo?q=1');
    const fields = new Map<string, string[]>();
    for (let i = 0; i < seen.rawHeaders.length; i += 2) {
      const name = seen.rawHeaders[i]!.toLowerCase();
      fields.set(name, [...(fields.get(name) ?? []), seen.rawHeaders[i + 1]!]);
    }
    assert.deepEqual(fields.get('host'), [`127.0.0.1:${web.port}`]);
    assert.deepEqual(fields.get('via'), ['1.1 postern']);
    assert.deepEqual(fields.get('x-end-to-end'), ['kept']);
    for (const gone of ['proxy-authorization', 'proxy-connection', 'x-hop']) {
      assert.equal(fields.has(gone), false, `${gone} was forwarded`);
    }
  });

  test('hop-by-hop fields of the response stay with the proxy', async () => {
    const { code, stdout, stderr } = await curl([
      '-D',
      '-',
      '-x',
      http(),
      `http://127.0.0.1:${web.port}/hop`,
    ]);
    assert.equal(code, 0, stderr);
    const { head, body } = splitDump(stdout);
    assert.equal(head.status, 200);
    assert.equal(body, 'hop');
    assert.equal(head.headers.get('x-end-to-end'), 'kept');
    assert.equal(head.headers.get('via'), '1.1 postern');
    assert.equal(head.headers.has('x-hop-secret'), false);
    assert.equal(head.headers.has('proxy-authenticate'), false);
  });

  test('a 50 MiB POST is streamed to the target intact, with a length and chunked', async () => {
    const file = join(dir, 'upload.bin');
    const expected = await writeRandomFile(file, UPLOAD_BYTES);
    const url = `http://127.0.0.1:${web.port}/upload`;
    const withLength = await curl(['-x', http(), '-X', 'POST', '-T', file, url]);
    assert.equal(withLength.code, 0, withLength.stderr);
    const lengthReport = JSON.parse(withLength.stdout) as UploadReport;
    assert.deepEqual(
      { bytes: lengthReport.bytes, sha256: lengthReport.sha256 },
      { bytes: UPLOAD_BYTES, sha256: expected },
    );
    // curl asks for 100 Continue before a large body; the target gave it through the proxy.
    assert.equal(lengthReport.expect, '100-continue');
    const chunked = await curl([
      '-x',
      http(),
      '-X',
      'POST',
      '-H',
      'Transfer-Encoding: chunked',
      '-T',
      file,
      url,
    ]);
    assert.equal(chunked.code, 0, chunked.stderr);
    const chunkedReport = JSON.parse(chunked.stdout) as UploadReport;
    assert.deepEqual(
      {
        bytes: chunkedReport.bytes,
        sha256: chunkedReport.sha256,
        te: chunkedReport.transferEncoding,
      },
      { bytes: UPLOAD_BYTES, sha256: expected, te: 'chunked' },
    );
  });

  test('a chunked 20 MiB response arrives chunked and intact', async () => {
    const file = join(dir, 'download.bin');
    const { code, stdout, stderr } = await curl([
      '-D',
      '-',
      '-o',
      file,
      '-x',
      http(),
      `http://127.0.0.1:${web.port}/chunked?bytes=${DOWNLOAD_BYTES}`,
    ]);
    assert.equal(code, 0, stderr);
    const [head] = parseHeads(stdout);
    assert.equal(head?.status, 200);
    assert.equal(head?.headers.get('transfer-encoding'), 'chunked');
    assert.equal(await sha256File(file), expectedDownloadHash(DOWNLOAD_BYTES));
  });

  test('HTTPS to a local TLS server through CONNECT', async () => {
    const { code, stdout, stderr } = await curl([
      '-x',
      http(),
      '--cacert',
      targetCertFile,
      `https://127.0.0.1:${tls.port}/secure`,
    ]);
    assert.equal(code, 0, stderr);
    assert.equal((JSON.parse(stdout) as { url: string }).url, '/secure');
  });

  test('several requests to two hosts share one proxy connection and reuse tunnel streams', async () => {
    const before = web.connections;
    const urls = [
      `http://127.0.0.1:${web.port}/echo?n=1`,
      `http://localhost:${web.port}/echo?n=2`,
      `http://127.0.0.1:${web.port}/echo?n=3`,
      `http://localhost:${web.port}/echo?n=4`,
    ];
    const { code, stdout, stderr } = await curl([
      '-x',
      http(),
      '--write-out',
      '|%{num_connects}|%{http_code}\n',
      ...urls,
    ]);
    assert.equal(code, 0, stderr);
    const outcomes = [...stdout.matchAll(/"url":"([^"]+)".*\|(\d+)\|(\d+)$/gm)].map((match) => [
      match[1],
      Number(match[2]),
      Number(match[3]),
    ]);
    // Only the first transfer opened a connection to the proxy.
    assert.deepEqual(outcomes, [
      ['/echo?n=1', 1, 200],
      ['/echo?n=2', 0, 200],
      ['/echo?n=3', 0, 200],
      ['/echo?n=4', 0, 200],
    ]);
    // One kept-alive tunnel stream per host: the target saw two connections for four requests.
    assert.equal(web.connections - before, 2);
  });

  test('missing and wrong credentials get 407 with Proxy-Authenticate, on GET and CONNECT', async () => {
    const url = `http://127.0.0.1:${web.port}/echo`;
    for (const proxy of [
      `http://127.0.0.1:${httpPort}`,
      proxyUrl('http', httpPort, GROUP, 'wrong'),
    ]) {
      const get = await curl(['-D', '-', '-x', proxy, url]);
      assert.equal(get.code, 0, get.stderr);
      const { head, body } = splitDump(get.stdout);
      assert.equal(head.status, 407, proxy);
      assert.equal(head.headers.get('proxy-authenticate'), 'Basic realm="postern"');
      assert.match(head.headers.get('proxy-status') ?? '', /^postern; error=http_request_denied;/);
      assert.match(body, /^407 Proxy Authentication Required: .+\n$/);
      const tunnel = await curl(['-v', '-p', '-x', proxy, url]);
      assert.equal(tunnel.code, 56, tunnel.stderr);
      const connectHead = parseHeads(tunnel.stderr).at(-1);
      assert.equal(connectHead?.status, 407, tunnel.stderr);
      assert.equal(connectHead?.headers.get('proxy-authenticate'), 'Basic realm="postern"');
    }
    // An unknown group is wrong credentials too.
    const unknown = await curl([
      '-o',
      '/dev/null',
      '--write-out',
      '%{http_code}',
      '-x',
      proxyUrl('http', httpPort, 'nobody', 'x'),
      url,
    ]);
    assert.equal(unknown.stdout, '407');
  });

  test('every failure says what happened: status, Proxy-Status and a one-line body', async () => {
    const cases = [
      {
        name: 'forbidden by the client policy',
        proxy: proxyUrl('http', httpPort, STRICT_GROUP, 'strict-secret'),
        url: `http://127.0.0.1:${web.port}/echo`,
        status: 403,
        error: 'destination_ip_prohibited',
      },
      {
        name: 'connection refused',
        proxy: http(),
        url: `http://127.0.0.1:${CLOSED_PORT}/`,
        status: 502,
        error: 'connection_refused',
      },
      {
        name: 'no client in the group',
        proxy: proxyUrl('http', httpPort, EMPTY_GROUP, 'x'),
        url: `http://127.0.0.1:${web.port}/echo`,
        status: 503,
        error: 'destination_unavailable',
      },
    ];
    for (const { name, proxy, url, status, error } of cases) {
      const get = await curl(['-D', '-', '-x', proxy, url]);
      assert.equal(get.code, 0, get.stderr);
      const { head, body } = splitDump(get.stdout);
      assert.equal(head.status, status, name);
      assert.match(
        head.headers.get('proxy-status') ?? '',
        new RegExp(`^postern; error=${error}; details=".+"$`),
        name,
      );
      assert.equal(head.headers.get('content-type'), 'text/plain; charset=utf-8');
      assert.match(body, new RegExp(`^${status} [A-Za-z ]+: [^\\n]+\\n$`), name);
      const tunnel = await curl(['-v', '-p', '-x', proxy, url]);
      assert.equal(tunnel.code, 56, `${name}: ${tunnel.stderr}`);
      const connectHead = parseHeads(tunnel.stderr).at(-1);
      assert.equal(connectHead?.status, status, `${name} (CONNECT)`);
      assert.match(
        connectHead?.headers.get('proxy-status') ?? '',
        new RegExp(`^postern; error=${error};`),
      );
    }
  });

  test('Expect: 100-continue is the target’s to answer', async () => {
    const file = join(dir, 'small.bin');
    const expected = await writeRandomFile(file, 64 * 1024);
    /** POSTs the file with `Expect: 100-continue`, dumping every response head curl sees. */
    const postExpecting100 = (path: string) =>
      curl([
        '-D',
        '-',
        '-x',
        http(),
        '-H',
        'Expect: 100-continue',
        '--expect100-timeout',
        '60',
        '--data-binary',
        `@${file}`,
        `http://127.0.0.1:${web.port}${path}`,
      ]);
    const accepted = await postExpecting100('/upload');
    assert.equal(accepted.code, 0, accepted.stderr);
    const { heads, body } = splitDump(accepted.stdout);
    assert.deepEqual(
      heads.map((head) => head.status),
      [100, 200],
    );
    const report = JSON.parse(body) as UploadReport;
    assert.deepEqual([report.sha256, report.expect], [expected, '100-continue']);
    // The target refuses without 100: the proxy must not have invited the body itself.
    const refused = await postExpecting100('/refuse');
    assert.equal(refused.code, 0, refused.stderr);
    const outcome = splitDump(refused.stdout);
    assert.deepEqual(
      outcome.heads.map((head) => head.status),
      [417],
    );
    assert.equal(outcome.body, 'no body wanted');
  });

  test('a WebSocket upgrade goes through and carries frames both ways', async () => {
    const key = randomBytes(16).toString('base64');
    const req = httpRequest({
      agent: false,
      host: '127.0.0.1',
      port: httpPort,
      path: `http://127.0.0.1:${web.port}/ws`,
      headers: {
        Host: `127.0.0.1:${web.port}`,
        Connection: 'Upgrade',
        Upgrade: 'websocket',
        'Sec-WebSocket-Key': key,
        'Sec-WebSocket-Version': '13',
        'Proxy-Authorization': basic(GROUP, PASSWORD),
      },
    });
    req.end();
    const [res, socket] = (await once(req, 'upgrade')) as [IncomingMessage, Socket, Buffer];
    try {
      assert.equal(res.statusCode, 101);
      const accept = createHash('sha1')
        .update(`${key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`)
        .digest('base64');
      assert.equal(res.headers['sec-websocket-accept'], accept);
      const payload = Buffer.from('hello through the proxy');
      const mask = randomBytes(4);
      const masked = payload.map((byte, index) => byte ^ mask[index % 4]!);
      socket.write(Buffer.concat([Buffer.from([0x81, 0x80 | payload.length]), mask, masked]));
      const frame = await readExactly(socket, 2 + payload.length);
      assert.deepEqual([frame[0], frame[1]], [0x81, payload.length]);
      assert.equal(frame.subarray(2).toString(), payload.toString());
    } finally {
      socket.destroy();
    }
  });

  const earlyAnswers = [
    {
      ending: 'closes',
      // As nginx without keep-alive does with a body it does not want: the reply, then FIN, and
      // the rest of the body read away until the client closes.
      answer: (socket: Socket) =>
        socket.end('HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nearly'),
      size: 1024 * 1024,
    },
    {
      ending: 'keeps the connection',
      // As nginx does on a kept-alive connection: the reply at once, then the body read and
      // thrown away. Node's HTTP client stops passing on 'drain' once the reply is complete, so a
      // body larger than the tunnel's window stalled behind it.
      answer: (socket: Socket) => socket.write('HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nearly'),
      size: 4 * 1024 * 1024,
    },
  ];
  for (const { ending, answer, size } of earlyAnswers) {
    test(`a target that answers before reading the body and ${ending} leaves the user connection usable`, async () => {
      const early = await startTcpServer((socket) => {
        socket.on('error', () => socket.destroy());
        socket.once('data', () => answer(socket));
        socket.resume();
      });
      try {
        const file = join(dir, `unwanted-${size}.bin`);
        await writeRandomFile(file, size);
        const url = `http://127.0.0.1:${early.port}/`;
        // Two POSTs on one proxy connection: the second waits for the first body to be read away.
        const { code, stdout, stderr } = await curl([
          '-x',
          http(),
          // The target sends no 100 Continue: curl is not to wait for one and give up the body.
          '-H',
          'Expect:',
          '--max-time',
          '10',
          '--data-binary',
          `@${file}`,
          '-w',
          ' %{http_code} %{num_connects}\n',
          url,
          url,
        ]);
        assert.equal(code, 0, stderr);
        assert.equal(stdout, 'early 200 1\nearly 200 0\n');
      } finally {
        await early.close();
      }
    });
  }

  test('a response cut by the target is cut for the user too, never a clean end', async () => {
    const withLength = await curl(['-x', http(), `http://127.0.0.1:${web.port}/cut`]);
    assert.equal(withLength.code, 18, withLength.stderr);
    assert.equal(withLength.stdout, 'a'.repeat(500));
    const chunked = await curl(['-x', http(), `http://127.0.0.1:${web.port}/cut-chunked`]);
    assert.ok([18, 56].includes(chunked.code), `curl exit ${chunked.code}: ${chunked.stderr}`);
  });

  // A bound, so that a target never freed fails this test rather than the whole file.
  test('a user who leaves in the middle of a response frees the target’s connection', {
    timeout: 15_000,
  }, async () => {
    // The target streams without end; only the user's leaving can stop it.
    let targetSocket: Socket | undefined;
    const endless = await startTcpServer((socket) => {
      targetSocket = socket;
      socket.on('error', () => socket.destroy());
      socket.once('data', () => {
        socket.write('HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n\r\n');
        const chunk = Buffer.alloc(16 * 1024, 0x62);
        const more = () => {
          while (!socket.destroyed && socket.write(chunk));
        };
        socket.on('drain', more);
        more();
      });
    });
    const user = connect({ host: '127.0.0.1', port: httpPort });
    try {
      const url = `http://127.0.0.1:${endless.port}/endless`;
      user.write(
        `GET ${url} HTTP/1.1\r\nHost: 127.0.0.1:${endless.port}\r\nProxy-Authorization: ${basic(GROUP, PASSWORD)}\r\n\r\n`,
      );
      const head = (await readExactly(user, 64 * 1024)).toString('latin1');
      assert.match(head, /^HTTP\/1\.1 200 /);
      assert.ok(targetSocket, 'the target was reached');
      const target = targetSocket;
      // Not once(): the target may see an error (its writes reset) before it closes.
      const targetClosed = new Promise((resolve) => target.once('close', resolve));
      user.destroy();
      await targetClosed;
    } finally {
      user.destroy();
      await endless.close();
    }
  });

  test('curl --proxy https:// speaks TLS to the proxy itself', async () => {
    const https = proxyUrl('https', httpsPort);
    const plain = await curl([
      '--proxy',
      https,
      '--proxy-cacert',
      gatewayCertFile,
      `http://127.0.0.1:${web.port}/plain`,
    ]);
    assert.equal(plain.code, 0, plain.stderr);
    assert.equal((JSON.parse(plain.stdout) as { url: string }).url, '/plain');
    const nested = await curl([
      '--proxy',
      https,
      '--proxy-cacert',
      gatewayCertFile,
      '--cacert',
      targetCertFile,
      `https://127.0.0.1:${tls.port}/nested`,
    ]);
    assert.equal(nested.code, 0, nested.stderr);
    assert.equal((JSON.parse(nested.stdout) as { url: string }).url, '/nested');
    const wrong = await curl([
      '-o',
      '/dev/null',
      '--write-out',
      '%{http_code}',
      '--proxy',
      proxyUrl('https', httpsPort, GROUP, 'nope'),
      '--proxy-cacert',
      gatewayCertFile,
      `http://127.0.0.1:${web.port}/`,
    ]);
    assert.equal(wrong.stdout, '407');
    // Without trusting the proxy's certificate, curl refuses it: TLS is really checked.
    const untrusted = await curl(['--proxy', https, `http://127.0.0.1:${web.port}/`]);
    assert.equal(untrusted.code, 60, untrusted.stderr);
  });

  test('a CONNECT user that shuts its write side still gets the whole reply, HTTP and HTTPS', async () => {
    const reply = randomBytes(1024 * 1024);
    // Reads the whole request, then answers with its hash and 1 MiB, then ends.
    const replier = await startTcpServer((socket) => {
      socket.on('error', (err) => socket.destroy(err));
      const chunks: Buffer[] = [];
      socket.on('data', (chunk: Buffer) => chunks.push(chunk));
      socket.once('end', () => {
        socket.write(createHash('sha256').update(Buffer.concat(chunks)).digest());
        socket.end(reply);
      });
    });
    try {
      for (const [port, ca] of [
        [httpPort, undefined],
        [httpsPort, gateway.certificate.cert],
      ] as const) {
        const user = await rawConnect(port, `127.0.0.1:${replier.port}`, ca);
        const received: Buffer[] = [];
        user.on('data', (chunk: Buffer) => received.push(chunk));
        const request = randomBytes(300 * 1024);
        user.end(request);
        await once(user, 'end');
        const response = Buffer.concat(received);
        const which = ca === undefined ? 'HTTP' : 'HTTPS';
        assert.equal(response.length, 32 + reply.length, which);
        assert.deepEqual(response.subarray(0, 32), createHash('sha256').update(request).digest());
        assert.ok(response.subarray(32).equals(reply), which);
        user.destroy();
      }
    } finally {
      await replier.close();
    }
  });

  test('a target reset inside a CONNECT through the HTTPS proxy cuts that user only', async () => {
    // The user's socket is TLS here, which cannot be reset like TCP: the gateway must cut it
    // another way, not throw.
    const resetting = await startTcpServer((socket) => {
      socket.once('data', () => socket.write('partial', () => socket.resetAndDestroy()));
    });
    try {
      const user = await rawConnect(
        httpsPort,
        `127.0.0.1:${resetting.port}`,
        gateway.certificate.cert,
      );
      const received: Buffer[] = [];
      user.on('data', (chunk: Buffer) => received.push(chunk));
      // Node's TLS client may or may not call a cut without close_notify an error; either way
      // the bytes before the reset arrive and the socket closes.
      user.on('error', () => undefined);
      user.write('go');
      await once(user, 'close');
      assert.equal(Buffer.concat(received).toString(), 'partial');
      const after = await curl([
        '--proxy',
        proxyUrl('https', httpsPort),
        '--proxy-cacert',
        gatewayCertFile,
        `http://127.0.0.1:${web.port}/after-reset`,
      ]);
      assert.equal(after.code, 0, after.stderr);
    } finally {
      await resetting.close();
    }
  });

  test('an idle CONNECT tunnel and an idle kept-alive connection outlive the head deadline', async () => {
    const tunnel = await rawConnect(httpPort, `127.0.0.1:${echo.port}`);
    const agent = new Agent({ keepAlive: true, maxSockets: 1 });
    try {
      const first = await getThroughProxy(agent, httpPort, `http://127.0.0.1:${web.port}/first`);
      assert.equal(first.status, 200);
      // Nothing to await: this proves that nothing happens for 2.5 head deadlines.
      await new Promise((resolve) => setTimeout(resolve, HANDSHAKE_TIMEOUT_MS * 2.5));
      tunnel.write('still here');
      assert.equal((await readExactly(tunnel, 10)).toString(), 'still here');
      const second = await getThroughProxy(agent, httpPort, `http://127.0.0.1:${web.port}/second`);
      assert.deepEqual([second.status, second.reused], [200, true]);
    } finally {
      tunnel.destroy();
      agent.destroy();
    }
  });

  test('hostile input closes only its own connection, with the right status', async () => {
    const bystander = new Agent({ keepAlive: true, maxSockets: 1 });
    try {
      const warmUp = await getThroughProxy(
        bystander,
        httpPort,
        `http://127.0.0.1:${web.port}/warm`,
      );
      assert.equal(warmUp.status, 200);
      const garbage = await rawExchange(httpPort, '\x16\x03\x01\x00garbage\r\n\r\n', { end: true });
      assert.match(garbage.text, /^HTTP\/1\.1 400 Bad Request\r\n/);
      const badConnect = await rawExchange(
        httpPort,
        `CONNECT no-port HTTP/1.1\r\nProxy-Authorization: ${basic(GROUP, PASSWORD)}\r\n\r\n`,
        { end: false },
      );
      assert.match(badConnect.text, /^HTTP\/1\.1 400 Bad Request\r\n/);
      const huge = await rawExchange(
        httpPort,
        `GET http://127.0.0.1:${web.port}/ HTTP/1.1\r\nX-Huge: ${'a'.repeat(1024 * 1024)}\r\n\r\n`,
        { end: true },
      );
      assert.match(huge.text, /^HTTP\/1\.1 431 Request Header Fields Too Large\r\n/);
      const started = Date.now();
      const unfinished = await rawExchange(
        httpPort,
        `GET http://127.0.0.1:${web.port}/ HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: `,
        { end: false },
      );
      assert.match(unfinished.text, /^HTTP\/1\.1 408 Request Timeout\r\n/);
      assert.ok(Date.now() - started >= HANDSHAKE_TIMEOUT_MS - 50, 'closed before the deadline');
      for (const outcome of [garbage, badConnect, huge, unfinished]) {
        assert.match(outcome.text, /\r\nConnection: close\r\n/);
        assert.match(outcome.text, /\r\nProxy-Status: postern; error=http_request_error;/);
      }
      const after = await getThroughProxy(
        bystander,
        httpPort,
        `http://127.0.0.1:${web.port}/after`,
      );
      assert.deepEqual([after.status, after.reused], [200, true]);
      const fresh = await curl(['-x', http(), `http://127.0.0.1:${web.port}/fresh`]);
      assert.equal(fresh.code, 0, fresh.stderr);
    } finally {
      bystander.destroy();
    }
  });
});

describe('HTTP proxy when the client does not answer in time', () => {
  test('the open times out: 504 with connection_timeout, on GET and CONNECT', async (t) => {
    const gateway = await startGateway({
      open_timeout: 300,
      heartbeat: { interval: 1_000, timeout: 60_000 },
      proxy: { http: { listen_addr: '127.0.0.1:0' } },
    });
    t.after(() => gateway.close());
    // The client reaches the gateway through a relay that the test then freezes: the client's
    // answer to the open never arrives, as behind a network that drops every packet.
    const relay = await startRelay(gateway.addresses.tunnel.port);
    const client = startClient(gateway, {
      heartbeat: { interval: 1_000, timeout: 60_000 },
      gateway: {
        urls: [`wss://127.0.0.1:${relay.port}/tunnel`],
        tls_fingerprint: gateway.certificate.fingerprint,
      },
    });
    t.after(async () => {
      await relay.close();
      await client.close();
    });
    await waitForSessions(gateway, 1);
    relay.freeze();
    const proxy = proxyUrl('http', gateway.addresses.http!.port);
    const get = await curl(['-D', '-', '-x', proxy, 'http://127.0.0.1:9/']);
    assert.equal(get.code, 0, get.stderr);
    const { head, body } = splitDump(get.stdout);
    assert.equal(head.status, 504);
    assert.match(head.headers.get('proxy-status') ?? '', /^postern; error=connection_timeout;/);
    assert.match(body, /^504 Gateway Timeout: .+\n$/);
    const tunnel = await curl(['-v', '-p', '-x', proxy, 'http://127.0.0.1:9/']);
    assert.equal(parseHeads(tunnel.stderr).at(-1)?.status, 504, tunnel.stderr);
  });
});

describe('HTTP proxy shutdown', () => {
  test('closing the gateway closes idle kept-alive proxy connections', async () => {
    const gateway = await startGateway({ proxy: { http: { listen_addr: '127.0.0.1:0' } } });
    const agent = new Agent({ keepAlive: true, maxSockets: 1 });
    try {
      // No client is connected: the answer is 503, on a connection that stays open.
      const answer = await getThroughProxy(
        agent,
        gateway.addresses.http!.port,
        'http://127.0.0.1:9/',
      );
      assert.equal(answer.status, 503);
      const [socket] = Object.values(agent.freeSockets).flat();
      assert.ok(socket, 'the proxy connection was kept alive');
      // The agent unrefs a pooled socket; the test waits on it, so it must keep the loop alive.
      socket.ref();
      const closed = once(socket, 'close');
      await gateway.close();
      await closed;
    } finally {
      agent.destroy();
      await gateway.close();
    }
  });
});
