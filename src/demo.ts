/**
 * `postern demo`: a gateway, a client whose policy allows loopback, and a small web server, in
 * one process on 127.0.0.1, with ready-to-paste curl lines. Ctrl-C stops it cleanly.
 */
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Client } from './client/client.js';
import { Gateway } from './gateway/gateway.js';
import type { Logger } from './observability/logger.js';
import { stopOnSignal } from './run.js';

const GROUP = 'demo';

export interface Demo {
  gateway: Gateway;
  client: Client;
  web: Server;
  password: string;
  curlLines: string[];
  close(): Promise<void>;
}

function startWebServer(): Promise<Server> {
  const server = createServer((req, res) => {
    const body = `Hello from behind the tunnel! You asked for ${req.method} ${req.url}\n`;
    res.writeHead(200, { 'content-type': 'text/plain; charset=utf-8' });
    res.end(body);
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve(server));
  });
}

/** Starts the demo and resolves once the client's tunnel is up. */
export async function startDemo(logger: Logger): Promise<Demo> {
  const password = randomBytes(9).toString('base64url');
  const web = await startWebServer();
  const webPort = (web.address() as AddressInfo).port;
  const gateway = await Gateway.start(
    {
      listen_addr: '127.0.0.1:0',
      heartbeat: { interval: 10_000, timeout: 30_000 },
      handshake_timeout: 10_000,
      drain_timeout: 5_000,
      open_timeout: 15_000,
      proxy: { socks5: { listen_addr: '127.0.0.1:0' }, http: { listen_addr: '127.0.0.1:0' } },
      groups: [{ id: GROUP, password }],
    },
    logger.child({ role: 'gateway' }),
  );
  const tunnelPort = gateway.addresses.tunnel.port;
  const socksPort = gateway.addresses.socks5!.port;
  const httpPort = gateway.addresses.http!.port;
  const connected = new Promise<void>((resolve) => {
    const check = () => {
      if (gateway.registry.hasGroup(GROUP)) {
        gateway.registry.off('change', check);
        resolve();
      }
    };
    gateway.registry.on('change', check);
  });
  const client = new Client(
    {
      id: 'demo-client',
      group_id: GROUP,
      group_password: password,
      replicas: 1,
      gateway: {
        urls: [`wss://127.0.0.1:${tunnelPort}/tunnel`],
        tls_fingerprint: gateway.certificate.fingerprint,
      },
      heartbeat: { interval: 10_000, timeout: 30_000 },
      reconnect: { initial_delay: 500, max_delay: 30_000 },
      allowed_hosts: ['127.0.0.1', '::1', 'localhost'],
      forbidden_hosts: [],
      dial_timeout: 10_000,
      drain_timeout: 5_000,
    },
    logger.child({ role: 'client' }),
  );
  await connected;
  const credentials = `${GROUP}:${password}`;
  const proxy = `${credentials}@127.0.0.1:${socksPort}`;
  return {
    gateway,
    client,
    web,
    password,
    curlLines: [
      `curl --socks5-hostname ${proxy} http://127.0.0.1:${webPort}/`,
      `curl --socks5-hostname ${proxy} http://localhost:${webPort}/hello`,
      `curl -x http://${credentials}@127.0.0.1:${httpPort} http://127.0.0.1:${webPort}/`,
    ],
    async close() {
      await client.close();
      await gateway.close();
      web.close();
      await once(web, 'close');
    },
  };
}

export async function runDemo(logger: Logger): Promise<void> {
  const demo = await startDemo(logger);
  process.stdout.write(
    [
      '',
      'Postern demo is running: gateway, client and a web server on 127.0.0.1.',
      "The client's traffic leaves through the tunnel; try:",
      '',
      ...demo.curlLines.map((line) => `  ${line}`),
      '',
      'Press Ctrl-C to stop.',
      '',
    ].join('\n'),
  );
  await stopOnSignal([demo], logger);
}
