/**
 * Two Sessions joined by a real WebSocket over TCP on 127.0.0.1: a gateway side that opens
 * streams and a client side whose `onOpen` the test chooses.
 */
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import WebSocket, { WebSocketServer } from 'ws';
import { createLogger, silentLogger } from '../../src/observability/logger.js';
import { type IncomingOpen, Session } from '../../src/tunnel/session.js';
import { WebSocketTransport } from '../../src/tunnel/transport.js';

export interface SessionPair {
  gateway: Session;
  client: Session;
  /** The raw client WebSocket, for tests that stall or break the wire. */
  clientSocket: WebSocket;
  close(): Promise<void>;
}

export interface SessionPairOptions {
  onOpen?: (open: IncomingOpen) => void;
  heartbeatIntervalMs?: number;
  heartbeatTimeoutMs?: number;
  highWaterMark?: number;
}

const testLogger = () =>
  process.env.POSTERN_TEST_DEBUG
    ? createLogger({ level: 'debug', format: 'json' })
    : silentLogger();

const noHandlers = { frame: () => undefined, drain: () => undefined, close: () => undefined };

export async function createSessionPair(options: SessionPairOptions = {}): Promise<SessionPair> {
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0, perMessageDeflate: false });
  await once(wss, 'listening');
  const { port } = wss.address() as AddressInfo;
  const accepted = once(wss, 'connection') as Promise<[WebSocket]>;
  const clientSocket = new WebSocket(`ws://127.0.0.1:${port}`, { perMessageDeflate: false });
  await once(clientSocket, 'open');
  const [serverSocket] = await accepted;
  const heartbeat = {
    heartbeatIntervalMs: options.heartbeatIntervalMs ?? 60_000,
    heartbeatTimeoutMs: options.heartbeatTimeoutMs ?? 120_000,
    ...(options.highWaterMark !== undefined && { highWaterMark: options.highWaterMark }),
  };
  const gateway = new Session(
    new WebSocketTransport(serverSocket, { ...heartbeat, remoteAddress: 'client' }, noHandlers),
    { role: 'gateway', id: 'g', logger: testLogger() },
  );
  const client = new Session(
    new WebSocketTransport(clientSocket, { ...heartbeat, remoteAddress: 'gateway' }, noHandlers),
    {
      role: 'client',
      id: 'c',
      logger: testLogger(),
      ...(options.onOpen && { onOpen: options.onOpen }),
    },
  );
  return {
    gateway,
    client,
    clientSocket,
    async close() {
      gateway.destroy();
      client.destroy();
      await Promise.all([gateway.closed, client.closed]);
      await new Promise<void>((resolve) => wss.close(() => resolve()));
    },
  };
}
