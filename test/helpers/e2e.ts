/**
 * End-to-end fixtures: a real gateway and real clients on 127.0.0.1, TLS tunnel with a
 * generated certificate pinned by fingerprint, and small target servers. Every fixture has a
 * close() the test must call (use t.after).
 */
import { once } from 'node:events';
import { type AddressInfo, createServer, type Server, type Socket } from 'node:net';
import { SocksClient } from 'socks';
import { Client, type ClientSettings } from '../../src/client/client.js';
import { Gateway, type GatewaySettings } from '../../src/gateway/gateway.js';
import { createLogger, type Logger, silentLogger } from '../../src/observability/logger.js';

export const GROUP = 'team';
export const PASSWORD = 'team-secret';

/** Logs go nowhere unless POSTERN_TEST_DEBUG is set. */
export function testLogger(): Logger {
  return process.env.POSTERN_TEST_DEBUG
    ? createLogger({ level: 'debug', format: 'json' })
    : silentLogger();
}

export function gatewaySettings(overrides: Partial<GatewaySettings> = {}): GatewaySettings {
  return {
    listen_addr: '127.0.0.1:0',
    heartbeat: { interval: 1_000, timeout: 5_000 },
    handshake_timeout: 5_000,
    drain_timeout: 2_000,
    open_timeout: 5_000,
    proxy: { socks5: { listen_addr: '127.0.0.1:0' } },
    groups: [{ id: GROUP, password: PASSWORD }],
    ...overrides,
  };
}

export function startGateway(overrides: Partial<GatewaySettings> = {}): Promise<Gateway> {
  return Gateway.start(gatewaySettings(overrides), testLogger());
}

export function tunnelUrl(gateway: Gateway): string {
  return `wss://127.0.0.1:${gateway.addresses.tunnel.port}/tunnel`;
}

export function clientSettings(
  gateway: Gateway,
  overrides: Partial<ClientSettings> = {},
): ClientSettings {
  return {
    id: 'client-a',
    group_id: GROUP,
    group_password: PASSWORD,
    replicas: 1,
    gateway: { urls: [tunnelUrl(gateway)], tls_fingerprint: gateway.certificate.fingerprint },
    heartbeat: { interval: 1_000, timeout: 5_000 },
    reconnect: { initial_delay: 50, max_delay: 500 },
    allowed_hosts: ['127.0.0.1', '::1', 'localhost'],
    forbidden_hosts: [],
    dial_timeout: 3_000,
    drain_timeout: 2_000,
    ...overrides,
  };
}

export function startClient(gateway: Gateway, overrides: Partial<ClientSettings> = {}): Client {
  return new Client(clientSettings(gateway, overrides), testLogger());
}

/** Resolves once `predicate()` holds, re-checking on every registry change. */
export function waitForRegistry(gateway: Gateway, predicate: () => boolean): Promise<void> {
  return new Promise((resolve) => {
    const check = () => {
      if (!predicate()) return;
      gateway.registry.off('change', check);
      resolve();
    };
    gateway.registry.on('change', check);
    check();
  });
}

/** Waits until the gateway holds `count` sessions of the test group. */
export function waitForSessions(gateway: Gateway, count: number, group = GROUP): Promise<void> {
  return waitForRegistry(
    gateway,
    () => gateway.registry.entries().filter((entry) => entry.groupId === group).length === count,
  );
}

/** Starts a gateway and one connected client. */
export async function startTunnel(
  gatewayOverrides: Partial<GatewaySettings> = {},
  clientOverrides: Partial<ClientSettings> = {},
): Promise<{ gateway: Gateway; client: Client; close(): Promise<void> }> {
  const gateway = await startGateway(gatewayOverrides);
  const client = startClient(gateway, clientOverrides);
  await waitForSessions(gateway, 1);
  return {
    gateway,
    client,
    async close() {
      await client.close();
      await gateway.close();
    },
  };
}

export interface TestServer {
  server: Server;
  port: number;
  close(): Promise<void>;
}

/** A TCP server on `host` port 0 that tracks its sockets and destroys them on close. */
export async function startTcpServer(
  onConnection: (socket: Socket) => void,
  host = '127.0.0.1',
): Promise<TestServer> {
  const sockets = new Set<Socket>();
  const server = createServer({ allowHalfOpen: true }, (socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
    onConnection(socket);
  });
  server.listen(0, host);
  await once(server, 'listening');
  return {
    server,
    port: (server.address() as AddressInfo).port,
    async close() {
      for (const socket of sockets) socket.destroy();
      server.close();
      await once(server, 'close');
    },
  };
}

/** Echoes every byte back and ends its side when the peer ends. */
export function startEchoServer(host = '127.0.0.1'): Promise<TestServer> {
  return startTcpServer((socket) => {
    socket.on('error', () => socket.destroy());
    socket.pipe(socket);
  }, host);
}

/**
 * Opens a SOCKS5 CONNECT through the gateway with the npm `socks` client. That client drops bytes
 * that arrive together with the CONNECT reply, so a target that speaks first needs the byte-level
 * client in raw-socks5.ts instead.
 */
export async function socksConnect(
  gateway: Gateway,
  host: string,
  port: number,
  credentials: { userId: string; password: string } = { userId: GROUP, password: PASSWORD },
): Promise<Socket> {
  const { socket } = await SocksClient.createConnection({
    proxy: { host: '127.0.0.1', port: gateway.addresses.socks5!.port, type: 5, ...credentials },
    command: 'connect',
    destination: { host, port },
    timeout: 10_000,
  });
  return socket;
}

/** Collects everything a readable side delivers until it ends. */
export function readAll(stream: NodeJS.ReadableStream): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    stream.on('data', (chunk: Buffer) => chunks.push(chunk));
    stream.once('end', () => resolve(Buffer.concat(chunks)));
    stream.once('error', reject);
  });
}
