/**
 * A second baseline for bulk throughput: the same path as Postern's (generator → one process → TLS →
 * another process → target, each a Node process of its own) with nothing in it but Node's TLS
 * and `pipe()`: no WebSocket, no frames, no multiplexing, no flow control of its own. What
 * Postern's bulk figures are set against besides the direct baseline.
 *
 * - role `far`: a TLS server; each connection starts with the target's port (u16), and the rest
 *   is piped both ways to 127.0.0.1:port.
 * - role `near` (args: far's port and certificate): a plain server; each connection is piped
 *   both ways into a TLS connection to `far`, which verifies `far`'s certificate.
 */
import { connect, createServer, type Server, type Socket } from 'node:net';
import { createServer as createTlsServer, connect as tlsConnect } from 'node:tls';
import { loadServerCertificate } from '../src/tls/certificates.js';
import { tunnelServerTlsOptions } from '../src/tls/ciphers.js';
import { HeldSockets, join } from './held-sockets.js';
import { serveParent } from './ipc.js';

export interface TlsPipeReady {
  port: number;
  /** PEM certificate of `far`, for `near` to trust. */
  cert: string;
}

const sockets = new HeldSockets(`tls pipe (${process.argv[2]})`);

function serveFar(socket: Socket): void {
  sockets.track(socket);
  // The server is half-open for the relay's sake; a FIN before the header ends the attempt.
  const endedEarly = () => socket.destroy();
  socket.once('end', endedEarly);
  const onReadable = () => {
    const header = socket.read(2) as Buffer | null;
    if (!header) return;
    socket.off('readable', onReadable);
    socket.off('end', endedEarly);
    const target = connect({
      host: '127.0.0.1',
      port: header.readUInt16BE(0),
      noDelay: true,
      allowHalfOpen: true,
    });
    join(socket, sockets.track(target));
  };
  socket.on('readable', onReadable);
}

function listen(server: Server): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host: '127.0.0.1', port: 0, backlog: 4096 }, () => {
      const address = server.address();
      resolve(typeof address === 'object' && address ? address.port : 0);
    });
  });
}

void serveParent<TlsPipeReady>(async () => {
  const [role, farPort, farCert] = process.argv.slice(2);
  let server: Server;
  let cert = '';
  if (role === 'far') {
    const identity = await loadServerCertificate({});
    cert = identity.cert;
    server = createTlsServer(
      { cert: identity.cert, key: identity.key, allowHalfOpen: true, ...tunnelServerTlsOptions() },
      serveFar,
    );
  } else {
    server = createServer({ noDelay: true, allowHalfOpen: true }, (socket) => {
      const far = tlsConnect({
        host: '127.0.0.1',
        port: Number(farPort),
        ca: farCert,
        servername: 'localhost',
      });
      // tls.connect's options have no allowHalfOpen; join() needs both ends half-open.
      far.allowHalfOpen = true;
      far.setNoDelay(true);
      join(sockets.track(socket), sockets.track(far));
    });
  }
  const port = await listen(server);
  return {
    ready: { port, cert },
    openStreams: () => sockets.size,
    handlers: {
      idle: () => sockets.idle(`the TLS pipe (${role}) to close its sockets`),
    },
    async close() {
      sockets.destroyAll();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
});
