/**
 * The gateway under test, alone in its process: production defaults from the configuration
 * schema, tunnel, SOCKS5 and HTTP front doors on 127.0.0.1, one group, logs off.
 */
import { configSchema } from '../src/config/schema.js';
import { Gateway } from '../src/gateway/gateway.js';
import { silentLogger } from '../src/observability/logger.js';
import { BENCH_GROUP, type GatewayReady } from './doors.js';
import { serveParent } from './ipc.js';
import { waitUntil } from './wait.js';

void serveParent<GatewayReady>(async () => {
  const settings = configSchema.parse({
    gateway: {
      listen_addr: '127.0.0.1:0',
      proxy: {
        socks5: { listen_addr: '127.0.0.1:0' },
        http: { listen_addr: '127.0.0.1:0' },
      },
      groups: [{ ...BENCH_GROUP }],
    },
  }).gateway!;
  const gateway = await Gateway.start(settings, silentLogger());
  const openStreams = () => gateway.registry.openStreamCount;
  return {
    ready: {
      tunnelPort: gateway.addresses.tunnel.port,
      socks5Port: gateway.addresses.socks5?.port,
      httpPort: gateway.addresses.http?.port,
      fingerprint: gateway.certificate.fingerprint,
    },
    openStreams,
    handlers: {
      /** Resolves once every stream of the previous workload has closed. */
      idle: () => waitUntil(() => openStreams() === 0, 'the gateway to close its streams'),
    },
    close: () => gateway.close(),
  };
});
