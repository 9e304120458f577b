/**
 * Target servers on 127.0.0.1, in a process of their own:
 * - echo: returns every byte (round trips, connection rate, idle streams);
 * - source: reads an 8-byte length, sends that many payload bytes (0: until the peer leaves);
 * - sink: checks everything against the payload until FIN, then answers with the verdict.
 * Its `openStreams` is the number of sockets it holds, the baseline for idle-stream memory.
 */
import { once } from 'node:events';
import { type AddressInfo, createServer, type Server, type Socket } from 'node:net';
import { HeldSockets } from './held-sockets.js';
import { serveParent } from './ipc.js';
import {
  decodeLength,
  ENDLESS,
  encodeVerdict,
  PayloadCheck,
  payloadChunk,
  writePayload,
} from './payload.js';

export interface TargetReady {
  echoPort: number;
  sourcePort: number;
  sinkPort: number;
}

const sockets = new HeldSockets();

function serveEcho(socket: Socket): void {
  socket.pipe(socket);
}

function serveSource(socket: Socket): void {
  const onReadable = () => {
    const header = socket.read(8) as Buffer | null;
    if (!header) return;
    socket.off('readable', onReadable);
    const total = decodeLength(header);
    writePayload(socket, total === ENDLESS ? Number.POSITIVE_INFINITY : total);
    // Anything else the peer sends is ignored.
    socket.resume();
  };
  socket.on('readable', onReadable);
}

function serveSink(socket: Socket): void {
  const check = new PayloadCheck();
  socket.on('data', (chunk: Buffer) => check.update(chunk));
  socket.once('end', () => socket.end(encodeVerdict(check)));
}

async function listen(serve: (socket: Socket) => void): Promise<Server> {
  const server = createServer({ allowHalfOpen: true }, (socket) => {
    sockets.track(socket).setNoDelay(true);
    serve(socket);
  });
  server.listen({ host: '127.0.0.1', port: 0, backlog: 4096 });
  await once(server, 'listening');
  return server;
}

function portOf(server: Server): number {
  return (server.address() as AddressInfo).port;
}

void serveParent<TargetReady>(async () => {
  // Builds the payload pool now rather than inside the first timed transfer.
  payloadChunk(0, 1);
  const servers = [await listen(serveEcho), await listen(serveSource), await listen(serveSink)];
  const [echo, source, sink] = servers as [Server, Server, Server];
  return {
    ready: { echoPort: portOf(echo), sourcePort: portOf(source), sinkPort: portOf(sink) },
    openStreams: () => sockets.size,
    handlers: {
      idle: () => sockets.idle('the targets to close their sockets'),
      /** Connections the kernel accepted may not have reached this process yet. */
      holding: (body) => {
        const { count } = body as { count: number };
        return sockets.holding(count, `the targets to hold ${count} sockets`);
      },
    },
    async close() {
      sockets.destroyAll();
      await Promise.all(
        servers.map((server) => new Promise<void>((resolve) => server.close(() => resolve()))),
      );
    },
  };
});
