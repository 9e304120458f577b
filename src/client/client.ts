/**
 * The client: `replicas` tunnels to each configured gateway, one access policy, and the open
 * handler that dials targets for the streams the gateways open.
 */
import type { Logger } from '../observability/logger.js';
import { gatewayTrustFrom } from '../tls/verify.js';
import { handleOpen } from './open-handler.js';
import { AccessPolicy } from './policy.js';
import { ClientTunnel } from './tunnel.js';

export interface ClientSettings {
  id: string;
  group_id: string;
  group_password: string;
  replicas: number;
  gateway: {
    urls: readonly string[];
    tls_cert?: string | undefined;
    tls_fingerprint?: string | undefined;
    auth_username?: string | undefined;
    auth_password?: string | undefined;
  };
  heartbeat: { interval: number; timeout: number };
  reconnect: { initial_delay: number; max_delay: number };
  allowed_hosts: readonly string[];
  forbidden_hosts: readonly string[];
  dial_timeout: number;
  drain_timeout: number;
}

/** How long the client waits for HELLO_OK after the WebSocket opens. */
const HANDSHAKE_TIMEOUT_MS = 10_000;

export class Client {
  readonly id: string;
  readonly tunnels: readonly ClientTunnel[];
  #log: Logger;
  #closing: Promise<void> | undefined;

  constructor(settings: ClientSettings, logger: Logger) {
    this.id = settings.id;
    this.#log = logger;
    const policy = AccessPolicy.parse({
      allowed_hosts: [...settings.allowed_hosts],
      forbidden_hosts: [...settings.forbidden_hosts],
    });
    const trust = gatewayTrustFrom({
      tls_cert: settings.gateway.tls_cert,
      tls_fingerprint: settings.gateway.tls_fingerprint,
    });
    const tunnels: ClientTunnel[] = [];
    for (const url of settings.gateway.urls) {
      for (let replica = 0; replica < settings.replicas; replica++) {
        const tunnelLog = logger.child({ gateway: url, replica });
        tunnels.push(
          new ClientTunnel({
            url,
            replica,
            clientId: settings.id,
            groupId: settings.group_id,
            groupPassword: settings.group_password,
            authUsername: settings.gateway.auth_username,
            authPassword: settings.gateway.auth_password,
            trust,
            heartbeatIntervalMs: settings.heartbeat.interval,
            heartbeatTimeoutMs: settings.heartbeat.timeout,
            handshakeTimeoutMs: HANDSHAKE_TIMEOUT_MS,
            initialDelayMs: settings.reconnect.initial_delay,
            maxDelayMs: settings.reconnect.max_delay,
            drainTimeoutMs: settings.drain_timeout,
            logger: tunnelLog,
            onOpen: (open) => {
              void handleOpen(open, {
                policy,
                dialTimeoutMs: settings.dial_timeout,
                logger: tunnelLog,
              });
            },
          }),
        );
      }
    }
    this.tunnels = tunnels;
    logger.info(
      {
        client: settings.id,
        group: settings.group_id,
        gateways: settings.gateway.urls,
        replicas: settings.replicas,
      },
      'client started',
    );
  }

  /** Sessions established by all tunnels so far; more than the tunnel count means reconnects. */
  get connects(): number {
    return this.tunnels.reduce((sum, tunnel) => sum + tunnel.connects, 0);
  }

  /** Stops reconnecting and drains every tunnel. Idempotent. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      await Promise.all(this.tunnels.map((tunnel) => tunnel.close()));
      this.#log.info('client stopped');
    })();
    return this.#closing;
  }
}
