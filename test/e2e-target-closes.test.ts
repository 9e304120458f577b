/**
 * Targets that close before the user does, through both front doors: a web server without
 * keep-alive closes its socket after the reply; some servers shut only their write side and go
 * on reading. Each test has a tunnel of its own, so its stream is the session's first and gets
 * the wide window at once: the whole reply fits in flight, and the target can finish and close
 * while the user has read nothing yet.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { connect, type Socket } from 'node:net';
import { afterEach, beforeEach, describe, test } from 'node:test';
import { GROUP, PASSWORD, readAll, startTcpServer, startTunnel } from './helpers/e2e.js';
import { socks5Connect } from './helpers/raw-socks5.js';
import { nextReleasedStream, sha256 } from './helpers/targets.js';

type Tunnel = Awaited<ReturnType<typeof startTunnel>>;

/** An HTTP CONNECT on a raw socket; bytes after the 200 head stay unread in the socket. */
async function httpConnect(proxyPort: number, port: number): Promise<Socket> {
  const socket = connect({ host: '127.0.0.1', port: proxyPort });
  const credentials = Buffer.from(`${GROUP}:${PASSWORD}`).toString('base64');
  socket.write(
    `CONNECT 127.0.0.1:${port} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\n` +
      `Proxy-Authorization: Basic ${credentials}\r\n\r\n`,
  );
  let received = Buffer.alloc(0);
  for (;;) {
    const end = received.indexOf('\r\n\r\n');
    if (end >= 0) {
      assert.match(received.toString('latin1'), /^HTTP\/1\.1 200 /);
      const rest = received.subarray(end + 4);
      if (rest.length > 0) socket.unshift(rest);
      return socket;
    }
    const chunk = socket.read() as Buffer | null;
    if (chunk) received = Buffer.concat([received, chunk]);
    else await once(socket, 'readable');
  }
}

const doors: { name: string; open(tunnel: Tunnel, port: number): Promise<Socket> }[] = [
  {
    name: 'SOCKS5',
    async open(tunnel, port) {
      const proxyPort = tunnel.gateway.addresses.socks5!.port;
      const outcome = await socks5Connect(
        proxyPort,
        { userId: GROUP, password: PASSWORD },
        '127.0.0.1',
        port,
      );
      assert.equal(outcome.reply, 0);
      return outcome.socket;
    },
  },
  {
    name: 'HTTP CONNECT',
    open: (tunnel, port) => httpConnect(tunnel.gateway.addresses.http!.port, port),
  },
];

for (const door of doors) {
  describe(`a target that closes first, through ${door.name}`, { timeout: 60_000 }, () => {
    let tunnel: Tunnel;

    beforeEach(async () => {
      tunnel = await startTunnel({
        proxy: { socks5: { listen_addr: '127.0.0.1:0' }, http: { listen_addr: '127.0.0.1:0' } },
      });
    });

    afterEach(() => tunnel.close());

    test('a user that reads only after the target closed its socket gets every byte and a clean end', async () => {
      const reply = randomBytes(3 * 1024 * 1024);
      let targetClosed!: Promise<unknown>;
      const sender = await startTcpServer((socket) => {
        socket.on('error', (err) => socket.destroy(err));
        targetClosed = once(socket, 'close');
        // Both ways closed once the kernel has every byte, as close(2) after a reply.
        socket.end(reply, () => socket.destroy());
      });
      try {
        const released = nextReleasedStream(tunnel.gateway, (s) => s.target.port === sender.port);
        const socket = await door.open(tunnel, sender.port);
        await targetClosed;
        assert.equal(sha256(await readAll(socket)), sha256(reply));
        socket.end();
        const stream = await released;
        assert.equal(stream.errored, null, 'the stream ended with a FIN each way, not a reset');
      } finally {
        await sender.close();
      }
    });

    test('a target that shuts its write side first still receives all the user sends after that', async () => {
      const banner = randomBytes(1024);
      const upload = randomBytes(1024 * 1024);
      let uploadReceived!: Promise<Buffer>;
      const receiver = await startTcpServer((socket) => {
        socket.on('error', (err) => socket.destroy(err));
        uploadReceived = readAll(socket);
        socket.end(banner);
      });
      try {
        const socket = await door.open(tunnel, receiver.port);
        // The user keeps its write side open after the target's FIN, as the target does.
        socket.allowHalfOpen = true;
        assert.equal(sha256(await readAll(socket)), sha256(banner));
        socket.end(upload);
        assert.equal(sha256(await uploadReceived), sha256(upload));
        if (!socket.closed) await once(socket, 'close');
      } finally {
        await receiver.close();
      }
    });
  });
}
