import assert from 'node:assert/strict';
import { createPrivateKey, X509Certificate } from 'node:crypto';
import { once } from 'node:events';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer as createHttpsServer, type Server as HttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { Socket } from 'node:net';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import {
  type ConnectionOptions,
  connect as connectTls,
  createServer as createTlsServer,
  type TLSSocket,
  type Server as TlsServer,
} from 'node:tls';
import { WebSocket, WebSocketServer } from 'ws';
import { isPosternError, type PosternError } from '../src/errors.js';
import {
  fingerprintOf,
  loadServerCertificate,
  type ServerCertificate,
} from '../src/tls/certificates.js';
import { tunnelCipherList } from '../src/tls/ciphers.js';
import {
  type GatewayTrust,
  gatewayTrustFrom,
  parseFingerprint,
  tlsOptionsFor,
  verifyPeer,
} from '../src/tls/verify.js';
import { startGateway } from './helpers/e2e.js';

function isTlsError(err: unknown): boolean {
  return isPosternError(err, 'POSTERN_ERR_TLS');
}

/** OpenSSL's form of the fingerprint, as an independent oracle for `fingerprintOf`. */
function opensslStyleFingerprint(pem: string): string {
  const colonHex = new X509Certificate(pem).fingerprint256;
  return `sha256:${colonHex.replaceAll(':', '').toLowerCase()}`;
}

async function listenOnLoopback(server: TlsServer | HttpsServer): Promise<number> {
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return (server.address() as AddressInfo).port;
}

async function closeServer(server: TlsServer | HttpsServer): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    server.close((err) => (err ? reject(err) : resolve()));
  });
}

/** Resolves with the socket once the handshake passes; rejects with Node's verification error. */
function connectToLoopback(port: number, options: ConnectionOptions): Promise<TLSSocket> {
  return new Promise((resolve, reject) => {
    const socket = connectTls({ host: '127.0.0.1', port, ...options });
    socket.once('error', reject);
    socket.once('secureConnect', () => {
      socket.off('error', reject);
      resolve(socket);
    });
  });
}

async function destroySocket(socket: TLSSocket): Promise<void> {
  if (socket.closed) return;
  const closed = once(socket, 'close');
  socket.destroy();
  await closed;
}

describe('tls certificates', () => {
  let generated: ServerCertificate;
  let other: ServerCertificate;
  let dir: string;

  before(async () => {
    [generated, other] = await Promise.all([loadServerCertificate({}), loadServerCertificate({})]);
    dir = await mkdtemp(join(tmpdir(), 'postern-tls-'));
  });

  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('generates a self-signed certificate for postern-gateway with loopback and host names', async () => {
    const started = performance.now();
    const fresh = await loadServerCertificate({});
    const elapsedMs = performance.now() - started;
    const certificate = new X509Certificate(fresh.cert);

    assert.equal(fresh.selfSigned, true);
    assert.match(certificate.subject, /^CN=postern-gateway$/m);
    const altNames = (certificate.subjectAltName ?? '').split(', ');
    assert.ok(altNames.includes('DNS:localhost'), certificate.subjectAltName);
    assert.ok(altNames.includes(`DNS:${hostname()}`), certificate.subjectAltName);
    assert.ok(altNames.includes('IP Address:127.0.0.1'), certificate.subjectAltName);
    assert.ok(
      altNames.some((name) => /^IP Address:(::1|0:0:0:0:0:0:0:1)$/i.test(name)),
      certificate.subjectAltName,
    );
    const validDays =
      (Date.parse(certificate.validTo) - Date.parse(certificate.validFrom)) / 86_400_000;
    assert.ok(validDays >= 364 && validDays <= 366, `valid for ${validDays} days`);
    assert.ok(certificate.checkPrivateKey(createPrivateKey(fresh.key)));
    assert.ok(elapsedMs < 1000, `generation took ${elapsedMs} ms`);
  });

  it('fingerprints the DER certificate as sha256: and 64 lowercase hex digits', () => {
    assert.match(generated.fingerprint, /^sha256:[0-9a-f]{64}$/);
    assert.equal(generated.fingerprint, fingerprintOf(generated.cert));
    assert.equal(generated.fingerprint, opensslStyleFingerprint(generated.cert));
    assert.equal(fingerprintOf(new X509Certificate(generated.cert).raw), generated.fingerprint);
    assert.notEqual(generated.fingerprint, other.fingerprint);
  });

  it('rejects something that is not a certificate', () => {
    assert.throws(() => fingerprintOf('not a certificate'), isTlsError);
  });

  it('loads a certificate and key from PEM files', async () => {
    const certPath = join(dir, 'load-cert.pem');
    const keyPath = join(dir, 'load-key.pem');
    await writeFile(certPath, generated.cert);
    await writeFile(keyPath, generated.key);

    const loaded = await loadServerCertificate({ cert: certPath, key: keyPath });

    assert.equal(loaded.cert, generated.cert);
    assert.equal(loaded.key, generated.key);
    assert.equal(loaded.fingerprint, generated.fingerprint);
    assert.equal(loaded.selfSigned, true);
  });

  it('refuses a key that belongs to another certificate, naming the key file', async () => {
    const certPath = join(dir, 'mismatch-cert.pem');
    const keyPath = join(dir, 'mismatch-key.pem');
    await writeFile(certPath, generated.cert);
    await writeFile(keyPath, other.key);

    await assert.rejects(loadServerCertificate({ cert: certPath, key: keyPath }), (err) => {
      assert.ok(isTlsError(err));
      assert.ok((err as PosternError).message.includes(keyPath));
      return true;
    });
  });

  it('names an unreadable file and keeps the cause', async () => {
    const missing = join(dir, 'missing-cert.pem');
    const keyPath = join(dir, 'present-key.pem');
    await writeFile(keyPath, generated.key);

    await assert.rejects(loadServerCertificate({ cert: missing, key: keyPath }), (err) => {
      assert.ok(isTlsError(err));
      assert.ok((err as PosternError).message.includes(missing));
      assert.equal(((err as PosternError).cause as NodeJS.ErrnoException).code, 'ENOENT');
      return true;
    });
  });

  it('names a certificate file that holds no certificate', async () => {
    const certPath = join(dir, 'garbage-cert.pem');
    const keyPath = join(dir, 'garbage-key.pem');
    await writeFile(certPath, 'garbage');
    await writeFile(keyPath, generated.key);

    await assert.rejects(loadServerCertificate({ cert: certPath, key: keyPath }), (err) => {
      assert.ok(isTlsError(err));
      assert.ok((err as PosternError).message.includes(certPath));
      assert.ok((err as PosternError).cause instanceof Error);
      return true;
    });
  });

  it('refuses a certificate without a key', async () => {
    const certPath = join(dir, 'lonely-cert.pem');
    await writeFile(certPath, generated.cert);
    await assert.rejects(loadServerCertificate({ cert: certPath }), isTlsError);
  });
});

describe('gateway trust from client options', () => {
  let gateway: ServerCertificate;
  let dir: string;

  before(async () => {
    gateway = await loadServerCertificate({});
    dir = await mkdtemp(join(tmpdir(), 'postern-trust-'));
  });

  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('uses system trust when nothing is configured', () => {
    assert.deepEqual(gatewayTrustFrom({}), { kind: 'system' });
    assert.deepEqual(tlsOptionsFor({ kind: 'system' }), { rejectUnauthorized: true });
  });

  it('pins a fingerprint given in OpenSSL colon form', () => {
    const colonForm = new X509Certificate(gateway.cert).fingerprint256;
    const trust = gatewayTrustFrom({ tls_fingerprint: colonForm });
    assert.deepEqual(trust, { kind: 'fingerprint', fingerprint: gateway.fingerprint });
    assert.deepEqual(tlsOptionsFor(trust), { rejectUnauthorized: false });
  });

  it('verifies the CA and checks the pin when both are configured', async () => {
    const certPath = join(dir, 'both.pem');
    await writeFile(certPath, gateway.cert);
    const trust = gatewayTrustFrom({ tls_cert: certPath, tls_fingerprint: gateway.fingerprint });
    assert.deepEqual(trust, { kind: 'ca', caPem: gateway.cert, fingerprint: gateway.fingerprint });
    assert.deepEqual(tlsOptionsFor(trust), { ca: gateway.cert, rejectUnauthorized: true });
  });

  it('rejects a malformed fingerprint as a configuration error', () => {
    for (const bad of ['sha256:abc', 'md5:00', `sha256:${'g'.repeat(64)}`, '']) {
      assert.throws(
        () => parseFingerprint(bad),
        (err) => isPosternError(err, 'POSTERN_ERR_CONFIG'),
      );
    }
  });

  it('names an unreadable CA file', () => {
    const missing = join(dir, 'missing-ca.pem');
    assert.throws(
      () => gatewayTrustFrom({ tls_cert: missing }),
      (err) => isTlsError(err) && (err as PosternError).message.includes(missing),
    );
  });
});

describe('tls client verification against a real gateway certificate', () => {
  let gateway: ServerCertificate;
  let stranger: ServerCertificate;
  let server: TlsServer;
  let port: number;
  let dir: string;
  let gatewayCertPath: string;
  let strangerCertPath: string;

  before(async () => {
    [gateway, stranger] = await Promise.all([loadServerCertificate({}), loadServerCertificate({})]);
    dir = await mkdtemp(join(tmpdir(), 'postern-verify-'));
    gatewayCertPath = join(dir, 'gateway.pem');
    strangerCertPath = join(dir, 'stranger.pem');
    await writeFile(gatewayCertPath, gateway.cert);
    await writeFile(strangerCertPath, stranger.cert);
    server = createTlsServer({ cert: gateway.cert, key: gateway.key }, (socket) => {
      socket.end();
    });
    port = await listenOnLoopback(server);
  });

  after(async () => {
    await closeServer(server);
    await rm(dir, { recursive: true, force: true });
  });

  async function connectWith(trust: GatewayTrust, extra: ConnectionOptions = {}) {
    return connectToLoopback(port, { ...tlsOptionsFor(trust), ...extra });
  }

  it('connects with the gateway certificate as CA, on 127.0.0.1 by its IP SAN', async () => {
    const trust = gatewayTrustFrom({ tls_cert: gatewayCertPath });
    const socket = await connectWith(trust);
    try {
      assert.equal(socket.authorized, true);
      verifyPeer(trust, socket);
    } finally {
      await destroySocket(socket);
    }
  });

  it('rejects a CA-trusted certificate presented under a name it does not carry', async () => {
    const trust = gatewayTrustFrom({ tls_cert: gatewayCertPath });
    await assert.rejects(connectWith(trust, { servername: 'elsewhere.example' }), {
      code: 'ERR_TLS_CERT_ALTNAME_INVALID',
    });
  });

  it('rejects a gateway whose certificate the configured CA did not sign', async () => {
    const trust = gatewayTrustFrom({ tls_cert: strangerCertPath });
    await assert.rejects(connectWith(trust), { code: 'DEPTH_ZERO_SELF_SIGNED_CERT' });
  });

  it('rejects a self-signed gateway under system trust', async () => {
    await assert.rejects(connectWith({ kind: 'system' }), { code: 'DEPTH_ZERO_SELF_SIGNED_CERT' });
  });

  it('accepts the gateway when the pinned fingerprint matches', async () => {
    const trust = gatewayTrustFrom({ tls_fingerprint: gateway.fingerprint });
    const socket = await connectWith(trust);
    try {
      assert.equal(socket.authorized, false, 'the pin, not the chain, vouches for the peer');
      verifyPeer(trust, socket);
    } finally {
      await destroySocket(socket);
    }
  });

  it('throws POSTERN_ERR_TLS when the pinned fingerprint does not match', async () => {
    const trust = gatewayTrustFrom({ tls_fingerprint: stranger.fingerprint });
    const socket = await connectWith(trust);
    try {
      assert.throws(() => verifyPeer(trust, socket), isTlsError);
    } finally {
      await destroySocket(socket);
    }
  });

  it('checks the pin as well as the CA when both are configured', async () => {
    const trust = gatewayTrustFrom({
      tls_cert: gatewayCertPath,
      tls_fingerprint: stranger.fingerprint,
    });
    const socket = await connectWith(trust);
    try {
      assert.equal(socket.authorized, true);
      assert.throws(() => verifyPeer(trust, socket), isTlsError);
    } finally {
      await destroySocket(socket);
    }
  });

  it('refuses an unauthorised socket under CA trust even if verification was turned off', async () => {
    const trust = gatewayTrustFrom({ tls_cert: strangerCertPath });
    const socket = await connectToLoopback(port, { ca: stranger.cert, rejectUnauthorized: false });
    try {
      assert.throws(() => verifyPeer(trust, socket), isTlsError);
    } finally {
      await destroySocket(socket);
    }
  });

  it('refuses a connection that is not TLS', () => {
    const trust = gatewayTrustFrom({ tls_fingerprint: gateway.fingerprint });
    assert.throws(() => verifyPeer(trust, new Socket()), isTlsError);
  });
});

describe('pinned fingerprint over a ws WebSocket', () => {
  let gateway: ServerCertificate;
  let stranger: ServerCertificate;
  let httpsServer: HttpsServer;
  let wsServer: WebSocketServer;
  let port: number;
  const receivedByGateway: string[] = [];

  before(async () => {
    [gateway, stranger] = await Promise.all([loadServerCertificate({}), loadServerCertificate({})]);
    httpsServer = createHttpsServer({ cert: gateway.cert, key: gateway.key });
    wsServer = new WebSocketServer({ server: httpsServer });
    wsServer.on('connection', (socket) => {
      socket.on('message', (data) => {
        const text = data.toString();
        receivedByGateway.push(text);
        socket.send(`echo:${text}`);
      });
    });
    port = await listenOnLoopback(httpsServer);
  });

  after(async () => {
    for (const client of wsServer.clients) client.terminate();
    await new Promise<void>((resolve, reject) => {
      wsServer.close((err) => (err ? reject(err) : resolve()));
    });
    httpsServer.closeAllConnections();
    await closeServer(httpsServer);
  });

  interface PinnedOutcome {
    opened: boolean;
    reply: string | undefined;
    verifyError: unknown;
    socketError: Error | undefined;
  }

  /** The client pattern: verify on 'upgrade', send the secret only once 'open' fires. */
  async function dialWithPin(trust: GatewayTrust, secret: string): Promise<PinnedOutcome> {
    const outcome: PinnedOutcome = {
      opened: false,
      reply: undefined,
      verifyError: undefined,
      socketError: undefined,
    };
    const client = new WebSocket(`wss://127.0.0.1:${port}`, { ...tlsOptionsFor(trust) });
    // Not events.once: that would reject on the 'error' ws emits after a terminate.
    const closed = new Promise<void>((resolve) => client.once('close', () => resolve()));
    client.on('upgrade', (response) => {
      try {
        verifyPeer(trust, response.socket);
      } catch (err) {
        outcome.verifyError = err;
        client.terminate();
      }
    });
    client.on('error', (err) => {
      outcome.socketError = err;
    });
    client.on('open', () => {
      outcome.opened = true;
      client.send(secret);
    });
    client.on('message', (data) => {
      outcome.reply = data.toString();
      client.close();
    });
    await closed;
    return outcome;
  }

  it('opens the WebSocket and carries the secret when the pin matches', async () => {
    const trust = gatewayTrustFrom({ tls_fingerprint: gateway.fingerprint });
    const outcome = await dialWithPin(trust, 'secret-right-pin');
    assert.equal(outcome.verifyError, undefined);
    assert.equal(outcome.socketError, undefined);
    assert.equal(outcome.opened, true);
    assert.equal(outcome.reply, 'echo:secret-right-pin');
    assert.ok(receivedByGateway.includes('secret-right-pin'));
  });

  it('terminates before open and never sends the secret when the pin is wrong', async () => {
    const trust = gatewayTrustFrom({ tls_fingerprint: stranger.fingerprint });
    const outcome = await dialWithPin(trust, 'secret-wrong-pin');
    assert.ok(isTlsError(outcome.verifyError), String(outcome.verifyError));
    assert.match(String(outcome.socketError), /closed before the connection was established/);
    assert.equal(outcome.opened, false);
    assert.equal(outcome.reply, undefined);
    assert.ok(!receivedByGateway.includes('secret-wrong-pin'));
  });
});

describe('tunnel cipher choice', () => {
  const builtIn = 'TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256:HIGH';

  it("moves AES-128-GCM to the front of Node's built-in list and keeps the rest in order", () => {
    assert.equal(
      tunnelCipherList(builtIn, builtIn),
      'TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256:HIGH',
    );
  });

  it('uses a list the operator set as it is, order included', () => {
    const chosen = 'TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256';
    assert.equal(tunnelCipherList(chosen, builtIn), chosen);
  });

  /** The protocol and cipher a real gateway's tunnel listener agrees on with `ciphers` offered. */
  async function negotiated(ciphers: string): Promise<{ protocol: string | null; cipher: string }> {
    const gateway = await startGateway();
    let socket: TLSSocket | undefined;
    try {
      socket = await connectToLoopback(gateway.addresses.tunnel.port, {
        rejectUnauthorized: false,
        ciphers,
      });
      return { protocol: socket.getProtocol(), cipher: socket.getCipher().name };
    } finally {
      socket?.destroy();
      await gateway.close();
    }
  }

  it('a real gateway picks AES-128-GCM for a client that prefers AES-256-GCM', async () => {
    const { protocol, cipher } = await negotiated('TLS_AES_256_GCM_SHA384:TLS_AES_128_GCM_SHA256');
    assert.equal(protocol, 'TLSv1.3');
    assert.equal(cipher, 'TLS_AES_128_GCM_SHA256');
  });

  it('a real gateway gives ChaCha20-Poly1305 to a client that puts it first', async () => {
    const { cipher } = await negotiated('TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256');
    assert.equal(cipher, 'TLS_CHACHA20_POLY1305_SHA256');
  });
});
