/**
 * Which cipher a tunnel's TLS connection uses. The gateway chooses (the client only offers), so
 * this is a server option.
 */
import { DEFAULT_CIPHERS } from 'node:tls';

const PREFERRED = 'TLS_AES_128_GCM_SHA256';

/**
 * Node's cipher list with AES-128-GCM moved to the front. Node (OpenSSL) lists AES-256-GCM first;
 * both are TLS 1.3 AEADs, and with AES instructions AES-128-GCM needs 10 rounds instead of 14:
 * about 1.5× the raw throughput (`openssl speed -evp aes-128-gcm` against `aes-256-gcm`), and
 * about 3% less CPU per byte for a whole Node TLS transfer, whose syscalls and copies cost more
 * than the cipher (docs/performance.md). Go's TLS stack makes the same choice. A list set with
 * `node --tls-cipher-list` is honoured: without AES-128-GCM in it, it is used unchanged.
 */
export function tunnelCipherList(defaults: string = DEFAULT_CIPHERS): string {
  const ciphers = defaults.split(':');
  if (!ciphers.includes(PREFERRED)) return defaults;
  return [PREFERRED, ...ciphers.filter((cipher) => cipher !== PREFERRED)].join(':');
}

/** TLS options for a server that ends tunnels: its own cipher order, not the client's. */
export function tunnelServerTlsOptions(): { ciphers: string; honorCipherOrder: true } {
  return { ciphers: tunnelCipherList(), honorCipherOrder: true };
}
