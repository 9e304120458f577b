import { X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { Socket } from 'node:net';
import { type ConnectionOptions, TLSSocket } from 'node:tls';
import { assertNever, PosternError } from '../errors.js';
import { fingerprintOf } from './certificates.js';

/**
 * How a client decides that it reached the real gateway.
 *
 * - `ca`: the chain must lead to `caPem` (which replaces the system roots) and the certificate
 *   must name the host dialled. With `fingerprint` set, the leaf must also carry that pin.
 * - `fingerprint`: the leaf's SHA-256 fingerprint must equal the pin; chain and host name are
 *   not checked, because the pin names the one certificate accepted (the self-signed case).
 * - `system`: the chain must lead to a system root and the certificate must name the host.
 */
export type GatewayTrust =
  | { kind: 'ca'; caPem: string; fingerprint?: string }
  | { kind: 'fingerprint'; fingerprint: string }
  | { kind: 'system' };

/** The TLS options {@link tlsOptionsFor} sets; narrow so they spread into `ws` client options. */
export type GatewayTlsOptions = Pick<ConnectionOptions, 'ca' | 'rejectUnauthorized'>;

const FINGERPRINT_HEX = /^[0-9a-f]{64}$/;

/**
 * Builds the trust for a client from its configuration keys. `tls_cert` is a CA (or the
 * gateway's own self-signed certificate) in a PEM file, read here; `tls_fingerprint` is a pin.
 * Both set: the CA is verified and the pin is checked too. Neither: system trust.
 *
 * @throws PosternError `POSTERN_ERR_TLS` when the `tls_cert` file cannot be read, or
 *   `POSTERN_ERR_CONFIG` when `tls_fingerprint` is not a SHA-256 fingerprint.
 */
export function gatewayTrustFrom(options: {
  tls_cert?: string;
  tls_fingerprint?: string;
}): GatewayTrust {
  const fingerprint =
    options.tls_fingerprint === undefined ? undefined : parseFingerprint(options.tls_fingerprint);
  if (options.tls_cert !== undefined) {
    const caPem = readCaFile(options.tls_cert);
    return fingerprint === undefined ? { kind: 'ca', caPem } : { kind: 'ca', caPem, fingerprint };
  }
  if (fingerprint !== undefined) {
    return { kind: 'fingerprint', fingerprint };
  }
  return { kind: 'system' };
}

/**
 * Normalises a pinned fingerprint to the form {@link fingerprintOf} produces. Accepts
 * `sha256:` + hex, bare hex, and OpenSSL's colon-separated upper-case form.
 *
 * @throws PosternError `POSTERN_ERR_CONFIG` naming `tls_fingerprint` when it is not 32 bytes of hex.
 */
export function parseFingerprint(text: string): string {
  const hex = text
    .trim()
    .replace(/^sha256:/i, '')
    .replaceAll(':', '')
    .toLowerCase();
  if (!FINGERPRINT_HEX.test(hex)) {
    throw new PosternError(
      'POSTERN_ERR_CONFIG',
      `tls_fingerprint must be a SHA-256 fingerprint (sha256: followed by 64 hex digits), got "${text}"`,
    );
  }
  return `sha256:${hex}`;
}

/**
 * TLS options for the `wss://` connection to the gateway, to spread into the `ws` client options.
 *
 * For `ca` and `system` trust, `rejectUnauthorized` stays `true`: Node verifies the chain and the
 * host name during the handshake.
 *
 * For `fingerprint` trust, `rejectUnauthorized` is `false`, because Node has no verify callback
 * and does not call `checkServerIdentity` when the chain fails, so a self-signed gateway could
 * not be reached otherwise. **Such a connection is unverified until {@link verifyPeer} passes.**
 * The caller must call `verifyPeer(trust, response.socket)` in the `ws` client's `'upgrade'`
 * event and terminate the WebSocket if it throws. `'upgrade'` fires before `'open'`, and the
 * tunnel sends credentials only after `'open'`, so no secret reaches an unverified peer.
 *
 * @example
 * ```ts
 * const ws = new WebSocket(url, { ...tlsOptionsFor(trust) });
 * ws.on('upgrade', (response) => {
 *   try {
 *     verifyPeer(trust, response.socket);
 *   } catch (err) {
 *     failure = err; // report this, not the generic error `ws` emits next
 *     ws.terminate();
 *   }
 * });
 * ```
 */
export function tlsOptionsFor(trust: GatewayTrust): GatewayTlsOptions {
  switch (trust.kind) {
    case 'ca':
      return { ca: trust.caPem, rejectUnauthorized: true };
    case 'fingerprint':
      return { rejectUnauthorized: false };
    case 'system':
      return { rejectUnauthorized: true };
    default:
      return assertNever(trust);
  }
}

/**
 * Checks the gateway's certificate on an established TLS socket; call it on every connection,
 * whatever the trust (see {@link tlsOptionsFor}). It requires a TLS socket, requires Node's own
 * verification to have passed for `ca` and `system` trust, and compares the leaf's fingerprint
 * with the pin when there is one.
 *
 * @throws PosternError `POSTERN_ERR_TLS` when the socket is not TLS, is not authorised, or its
 *   certificate does not carry the pinned fingerprint.
 */
export function verifyPeer(trust: GatewayTrust, socket: Socket): void {
  if (!(socket instanceof TLSSocket)) {
    throw new PosternError('POSTERN_ERR_TLS', 'the gateway connection is not TLS (use wss://)');
  }
  if (trust.kind !== 'fingerprint' && !socket.authorized) {
    throw new PosternError(
      'POSTERN_ERR_TLS',
      `the gateway certificate is not trusted: ${String(socket.authorizationError)}`,
    );
  }
  const pin = trust.kind === 'system' ? undefined : trust.fingerprint;
  if (pin === undefined) {
    return;
  }
  const peerCertificate = socket.getPeerCertificate();
  // An empty object means the peer sent no certificate.
  if (peerCertificate.raw === undefined) {
    throw new PosternError('POSTERN_ERR_TLS', 'the gateway presented no certificate');
  }
  const actual = fingerprintOf(peerCertificate.raw);
  if (actual !== pin) {
    throw new PosternError(
      'POSTERN_ERR_TLS',
      `the gateway certificate fingerprint ${actual} does not match the pinned ${pin}`,
    );
  }
}

function readCaFile(path: string): string {
  let caPem: string;
  try {
    caPem = readFileSync(path, 'utf8');
  } catch (cause) {
    throw new PosternError('POSTERN_ERR_TLS', `cannot read TLS CA file ${path} (tls_cert)`, {
      cause,
    });
  }
  try {
    new X509Certificate(caPem);
  } catch (cause) {
    throw new PosternError(
      'POSTERN_ERR_TLS',
      `TLS CA file ${path} (tls_cert) does not hold a PEM certificate`,
      { cause },
    );
  }
  return caPem;
}
