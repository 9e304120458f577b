/**
 * End to end through a real gateway and a real client: users speak SOCKS5 (the real `curl`
 * and the npm `socks` client) to the gateway, the tunnel carries the bytes, the client dials
 * local HTTP, HTTPS and raw TCP targets on 127.0.0.1 and ::1.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import type { Socket } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { connect as tlsConnect } from 'node:tls';
import type { Gateway } from '../src/gateway/gateway.js';
import {
  fingerprintOf,
  loadServerCertificate,
  type ServerCertificate,
} from '../src/tls/certificates.js';
import {
  GROUP,
  PASSWORD,
  readAll,
  socksConnect,
  startEchoServer,
  startTcpServer,
  startTunnel,
  type TestServer,
} from './helpers/e2e.js';
import {
  CurlFailed,
  curlThroughGateway,
  type HttpTarget,
  httpGetOver,
  nextReleasedStream,
  sha256,
  startHttpServer,
  startHttpsServer,
  writeTempFile,
} from './helpers/targets.js';

/** curl's exit code for "peer certificate cannot be authenticated with known CA certificates". */
const CURL_SSL_CACERT = 60;

describe('SOCKS5 end to end', { timeout: 60_000 }, () => {
  let tunnel: Awaited<ReturnType<typeof startTunnel>>;
  let gateway: Gateway;
  /** Answers every request with this server's token and the path it was asked for. */
  let web: HttpTarget;
  let webV6: HttpTarget;
  const webToken = randomBytes(16).toString('hex');
  const webV6Token = randomBytes(16).toString('hex');

  before(async () => {
    tunnel = await startTunnel();
    gateway = tunnel.gateway;
    web = await startHttpServer((req, res) => res.end(`${webToken} ${req.url}`));
    webV6 = await startHttpServer((req, res) => res.end(`${webV6Token} ${req.url}`), '::1');
  });

  after(async () => {
    await tunnel.client.close();
    await tunnel.gateway.close();
    await web.close();
    await webV6.close();
  });

  /** The next stream the gateway releases for `host:port`. */
  const streamTo = (host: string, port: number) =>
    nextReleasedStream(gateway, (s) => s.target.host === host && s.target.port === port);

  test('curl --socks5-hostname gets the body of a local HTTP server by IP address', async () => {
    const released = streamTo('127.0.0.1', web.port);
    const body = await curlThroughGateway(gateway, `http://127.0.0.1:${web.port}/some/path?q=1`);
    assert.equal(body.toString(), `${webToken} /some/path?q=1`);
    await released;
  });

  test('curl --socks5-hostname sends the name "localhost" to the client, which resolves it', async () => {
    const released = streamTo('localhost', web.port);
    const body = await curlThroughGateway(gateway, `http://localhost:${web.port}/by-name`);
    assert.equal(body.toString(), `${webToken} /by-name`);
    await released;
  });

  test('the npm socks client carries an HTTP request to a local HTTP server', async () => {
    const socket = await socksConnect(gateway, '127.0.0.1', web.port);
    const response = await httpGetOver(socket, `127.0.0.1:${web.port}`, '/via-socks-client');
    assert.equal(response.status, 200);
    assert.equal(response.body.toString(), `${webToken} /via-socks-client`);
  });

  describe('a CONNECT to a local TLS server', () => {
    let certificate: ServerCertificate;
    let secureWeb: HttpTarget;
    let caFile: Awaited<ReturnType<typeof writeTempFile>>;
    const secureBody = randomBytes(256 * 1024);

    before(async () => {
      certificate = await loadServerCertificate({});
      secureWeb = await startHttpsServer(certificate, (_req, res) => res.end(secureBody));
      caFile = await writeTempFile('target-ca.pem', certificate.cert);
    });

    after(async () => {
      await secureWeb.close();
      await caFile.remove();
    });

    test('curl verifies the target certificate with --cacert and gets every byte', async () => {
      const body = await curlThroughGateway(gateway, `https://127.0.0.1:${secureWeb.port}/`, [
        '--cacert',
        caFile.path,
      ]);
      assert.equal(body.length, secureBody.length);
      assert.equal(sha256(body), sha256(secureBody));
      // The certificate curl saw is the target's own: without the CA it cannot be trusted.
      await assert.rejects(
        curlThroughGateway(gateway, `https://127.0.0.1:${secureWeb.port}/`),
        (err) => err instanceof CurlFailed && err.exitCode === CURL_SSL_CACERT,
      );
    });

    test('tls.connect over the SOCKS5 socket verifies the target and gets every byte', async () => {
      const raw = await socksConnect(gateway, '127.0.0.1', secureWeb.port);
      const secure = tlsConnect({ socket: raw, ca: certificate.cert, servername: 'localhost' });
      await once(secure, 'secureConnect');
      assert.equal(secure.authorized, true);
      assert.equal(fingerprintOf(secure.getPeerCertificate().raw), certificate.fingerprint);
      const response = await httpGetOver(secure, `localhost:${secureWeb.port}`, '/');
      assert.equal(response.status, 200);
      assert.equal(sha256(response.body), sha256(secureBody));
    });
  });

  test('an IPv6 target on ::1 is reached by curl and by the socks client (ATYP IPv6)', async () => {
    const curlReleased = streamTo('::1', webV6.port);
    const body = await curlThroughGateway(gateway, `http://[::1]:${webV6.port}/curl-v6`);
    assert.equal(body.toString(), `${webV6Token} /curl-v6`);
    await curlReleased;

    const socksReleased = streamTo('::1', webV6.port);
    const socket = await socksConnect(gateway, '::1', webV6.port);
    const response = await httpGetOver(socket, `[::1]:${webV6.port}`, '/socks-v6');
    assert.equal(response.status, 200);
    assert.equal(response.body.toString(), `${webV6Token} /socks-v6`);
    await socksReleased;
  });

  describe('half-close', () => {
    let replier: TestServer;
    const reply = randomBytes(1024 * 1024);

    before(async () => {
      // Reads the whole request, then answers with its hash and 1 MiB, then ends.
      replier = await startTcpServer((socket) => {
        socket.on('error', (err) => socket.destroy(err));
        void readAll(socket).then((request) => {
          socket.write(Buffer.from(sha256(request), 'hex'));
          socket.end(reply);
        });
      });
    });

    after(() => replier.close());

    test('a user that shuts its write side still receives the full reply', async () => {
      const request = randomBytes(300 * 1024);
      const socket: Socket = await socksConnect(gateway, '127.0.0.1', replier.port);
      const received = readAll(socket);
      socket.end(request);
      const response = await received;
      assert.equal(response.length, 32 + reply.length);
      assert.equal(response.subarray(0, 32).toString('hex'), sha256(request));
      assert.equal(sha256(response.subarray(32)), sha256(reply));
    });
  });

  describe('authentication', () => {
    let echo: TestServer;

    before(async () => {
      echo = await startEchoServer();
    });

    after(() => echo.close());

    test('a wrong password and an unknown group user are refused; others are still served', async () => {
      await assert.rejects(
        socksConnect(gateway, '127.0.0.1', echo.port, { userId: GROUP, password: 'not-it' }),
        /Socks5 Authentication failed/,
      );
      await assert.rejects(
        socksConnect(gateway, '127.0.0.1', echo.port, {
          userId: 'no-such-group',
          password: PASSWORD,
        }),
        /Socks5 Authentication failed/,
      );
      const socket = await socksConnect(gateway, '127.0.0.1', echo.port);
      const payload = randomBytes(64 * 1024);
      const echoed = readAll(socket);
      socket.end(payload);
      assert.equal(sha256(await echoed), sha256(payload));
    });
  });
});
