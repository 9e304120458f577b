import { createHash, createPrivateKey, type KeyObject, X509Certificate } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { generate } from 'selfsigned';
import { PosternError } from '../errors.js';

/** The gateway's TLS identity, ready for `https.createServer({ cert, key })`. */
export interface ServerCertificate {
  /** PEM certificate (the leaf first, then any chain certificates from the file). */
  cert: string;
  /** PEM private key matching the leaf. */
  key: string;
  /** SHA-256 fingerprint of the leaf, as {@link fingerprintOf} formats it. */
  fingerprint: string;
  /** True when the leaf is signed by its own key (generated, or a self-signed file). */
  selfSigned: boolean;
}

const GENERATED_COMMON_NAME = 'postern-gateway';

const FINGERPRINT_PREFIX = 'sha256:';
const GENERATED_VALIDITY_DAYS = 365;
const MS_PER_DAY = 24 * 60 * 60 * 1000;

/**
 * The SHA-256 fingerprint of a certificate's DER encoding, written `sha256:` + 64 lowercase hex
 * digits. It equals `openssl x509 -noout -fingerprint -sha256` without the colons. For a PEM
 * bundle, the first certificate (the leaf) is the one fingerprinted.
 *
 * @throws PosternError `POSTERN_ERR_TLS` when the input is not a certificate.
 */
export function fingerprintOf(certPem: string | Buffer): string {
  const certificate = parseCertificate(certPem, 'the certificate');
  return FINGERPRINT_PREFIX + createHash('sha256').update(certificate.raw).digest('hex');
}

/**
 * Loads the gateway's certificate and key from PEM files, or, when neither path is given,
 * generates a self-signed development certificate for `CN=postern-gateway` with subject
 * alternative names `localhost`, `127.0.0.1`, `::1` and this machine's host name, valid one year.
 *
 * @throws PosternError `POSTERN_ERR_TLS` naming the file when a file cannot be read or parsed,
 *   when the key does not belong to the certificate, or when only one of the two paths is given.
 */
export async function loadServerCertificate(paths: {
  cert?: string;
  key?: string;
}): Promise<ServerCertificate> {
  const { cert: certPath, key: keyPath } = paths;
  if (certPath === undefined && keyPath === undefined) {
    return generateSelfSigned();
  }
  if (certPath === undefined || keyPath === undefined) {
    const missing = certPath === undefined ? 'certificate' : 'key';
    throw new PosternError(
      'POSTERN_ERR_TLS',
      `TLS needs both a certificate file and a key file; the ${missing} file is missing`,
    );
  }
  const [certPem, keyPem] = await Promise.all([
    readPemFile(certPath, 'certificate'),
    readPemFile(keyPath, 'key'),
  ]);
  const certificate = parseCertificate(certPem, `certificate file ${certPath}`);
  const privateKey = parsePrivateKey(keyPem, keyPath);
  if (!certificate.checkPrivateKey(privateKey)) {
    throw new PosternError(
      'POSTERN_ERR_TLS',
      `TLS key file ${keyPath} does not match the certificate in ${certPath}`,
    );
  }
  return {
    cert: certPem,
    key: keyPem,
    fingerprint: fingerprintOf(certificate.raw),
    selfSigned: isSelfSigned(certificate),
  };
}

async function generateSelfSigned(): Promise<ServerCertificate> {
  const notBeforeDate = new Date();
  const notAfterDate = new Date(notBeforeDate.getTime() + GENERATED_VALIDITY_DAYS * MS_PER_DAY);
  const dnsNames = [...new Set(['localhost', hostname()])];
  // EC P-256 keeps generation in the milliseconds; RSA 2048 can take far longer.
  const generated = await generate([{ name: 'commonName', value: GENERATED_COMMON_NAME }], {
    keyType: 'ec',
    curve: 'P-256',
    algorithm: 'sha256',
    notBeforeDate,
    notAfterDate,
    extensions: [
      { name: 'basicConstraints', cA: false },
      { name: 'keyUsage', digitalSignature: true, critical: true },
      { name: 'extKeyUsage', serverAuth: true },
      {
        name: 'subjectAltName',
        altNames: [
          ...dnsNames.map((value) => ({ type: 2 as const, value })),
          { type: 7, ip: '127.0.0.1' },
          { type: 7, ip: '::1' },
        ],
      },
    ],
  });
  return {
    cert: generated.cert,
    key: generated.private,
    fingerprint: fingerprintOf(generated.cert),
    selfSigned: true,
  };
}

async function readPemFile(path: string, what: 'certificate' | 'key'): Promise<string> {
  try {
    return await readFile(path, 'utf8');
  } catch (cause) {
    throw new PosternError('POSTERN_ERR_TLS', `cannot read TLS ${what} file ${path}`, { cause });
  }
}

function parseCertificate(pem: string | Buffer, source: string): X509Certificate {
  try {
    return new X509Certificate(pem);
  } catch (cause) {
    throw new PosternError('POSTERN_ERR_TLS', `${source} is not a valid X.509 certificate`, {
      cause,
    });
  }
}

function parsePrivateKey(pem: string, path: string): KeyObject {
  try {
    return createPrivateKey(pem);
  } catch (cause) {
    throw new PosternError(
      'POSTERN_ERR_TLS',
      `TLS key file ${path} is not a valid unencrypted private key`,
      { cause },
    );
  }
}

// Not `checkIssued`: OpenSSL's issuer check also demands keyCertSign, which a leaf lacks.
function isSelfSigned(certificate: X509Certificate): boolean {
  return certificate.issuer === certificate.subject && certificate.verify(certificate.publicKey);
}
