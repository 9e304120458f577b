/**
 * Which cipher a tunnel's TLS connection uses. The gateway chooses (the client only offers), so
 * this is a server option.
 */
import { constants } from 'node:crypto';
import { DEFAULT_CIPHERS } from 'node:tls';

const PREFERRED = 'TLS_AES_128_GCM_SHA256';

/**
 * Node's built-in cipher list with AES-128-GCM moved to the front. Node (OpenSSL) lists
 * AES-256-GCM first; both are TLS 1.3 AEADs, and with AES instructions AES-128-GCM needs 10
 * rounds instead of 14 (docs/performance.md, "TLS cipher"). A list the operator set with
 * `node --tls-cipher-list` (or in NODE_OPTIONS) is used as it is, in its own order.
 */
export function tunnelCipherList(
  current: string = DEFAULT_CIPHERS,
  builtIn: string = constants.defaultCoreCipherList,
): string {
  const ciphers = current.split(':');
  if (current !== builtIn || !ciphers.includes(PREFERRED)) return current;
  return [PREFERRED, ...ciphers.filter((cipher) => cipher !== PREFERRED)].join(':');
}

/**
 * TLS options for a server that ends tunnels: its own cipher order, not the client's, except
 * that a client which puts ChaCha20-Poly1305 first (typically one without AES instructions)
 * gets it, as Go's TLS stack does.
 */
export function tunnelServerTlsOptions(): {
  ciphers: string;
  honorCipherOrder: true;
  secureOptions: number;
} {
  return {
    ciphers: tunnelCipherList(),
    honorCipherOrder: true,
    secureOptions: constants.SSL_OP_PRIORITIZE_CHACHA,
  };
}
