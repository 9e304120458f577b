/**
 * The client under test, alone in its process: production defaults, pinned to the benchmark
 * gateway's certificate, allowed to reach 127.0.0.1 only. Ready once every tunnel is connected.
 * Started with one argument: the GatewayReady JSON the gateway process announced.
 */
import { once } from 'node:events';
import { Client } from '../src/client/client.js';
import { configSchema } from '../src/config/schema.js';
import { silentLogger } from '../src/observability/logger.js';
import { BENCH_GROUP, type GatewayReady } from './doors.js';
import { serveParent } from './ipc.js';
import { waitUntil } from './wait.js';

export interface ClientReady {
  tunnels: number;
}

void serveParent<ClientReady>(async () => {
  const gateway = JSON.parse(process.argv[2] ?? '') as GatewayReady;
  const settings = configSchema.parse({
    client: {
      id: 'bench-client',
      group_id: BENCH_GROUP.id,
      group_password: BENCH_GROUP.password,
      gateway: {
        addr: `wss://127.0.0.1:${gateway.tunnelPort}/tunnel`,
        tls_fingerprint: gateway.fingerprint,
      },
      allowed_hosts: ['127.0.0.1'],
    },
  }).client!;
  const client = new Client(settings, silentLogger());
  try {
    await Promise.all(
      client.tunnels.map((tunnel) =>
        tunnel.session
          ? undefined
          : once(tunnel, 'connected', { signal: AbortSignal.timeout(30_000) }),
      ),
    );
  } catch (error) {
    await client.close();
    throw error;
  }
  const openStreams = () =>
    client.tunnels.reduce((sum, tunnel) => sum + (tunnel.session?.openStreamCount ?? 0), 0);
  return {
    ready: { tunnels: client.tunnels.length },
    openStreams,
    handlers: {
      idle: () => waitUntil(() => openStreams() === 0, 'the client to close its streams'),
    },
    close: () => client.close(),
  };
});
