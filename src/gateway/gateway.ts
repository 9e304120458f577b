/**
 * The gateway: the tunnel endpoint clients dial, the registry of their sessions, and the
 * front doors users connect to. It owns its listeners and closes them in order on shutdown.
 */
import type { AddressInfo } from 'node:net';
import { parseListenAddr } from '../config/duration.js';
import type { Logger } from '../observability/logger.js';
import { loadServerCertificate, type ServerCertificate } from '../tls/certificates.js';
import { FailureLimiter, GroupAuthority } from './auth.js';
import { HttpProxyListener } from './http-listener.js';
import { SessionRegistry } from './registry.js';
import { Socks5Listener } from './socks5-listener.js';
import { TunnelEndpoint } from './tunnel-endpoint.js';

export interface GatewaySettings {
  listen_addr: string;
  tls_cert?: string | undefined;
  tls_key?: string | undefined;
  auth_username?: string | undefined;
  auth_password?: string | undefined;
  heartbeat: { interval: number; timeout: number };
  handshake_timeout: number;
  drain_timeout: number;
  open_timeout: number;
  proxy: {
    socks5?: { listen_addr?: string | undefined } | undefined;
    http?: { listen_addr?: string | undefined } | undefined;
    https?:
      | {
          listen_addr?: string | undefined;
          /** Certificate for the HTTPS proxy; without it, the gateway's own. */
          tls_cert?: string | undefined;
          tls_key?: string | undefined;
        }
      | undefined;
  };
  groups: readonly { id: string; password: string }[];
}

export interface GatewayAddresses {
  tunnel: AddressInfo;
  socks5: AddressInfo | undefined;
  http: AddressInfo | undefined;
  https: AddressInfo | undefined;
}

/** A user-facing listener: SOCKS5, HTTP proxy or HTTPS proxy. Closing waits for its users. */
interface FrontDoor {
  close(): Promise<void>;
}

export class Gateway {
  readonly certificate: ServerCertificate;
  readonly registry: SessionRegistry;
  readonly addresses: GatewayAddresses;
  #tunnel: TunnelEndpoint;
  #frontDoors: readonly FrontDoor[];
  #log: Logger;
  #closing: Promise<void> | undefined;

  private constructor(
    parts: {
      certificate: ServerCertificate;
      registry: SessionRegistry;
      tunnel: TunnelEndpoint;
      frontDoors: readonly FrontDoor[];
      addresses: GatewayAddresses;
    },
    logger: Logger,
  ) {
    this.certificate = parts.certificate;
    this.registry = parts.registry;
    this.#tunnel = parts.tunnel;
    this.#frontDoors = parts.frontDoors;
    this.addresses = parts.addresses;
    this.#log = logger;
  }

  /** Loads or generates the certificate and opens every listener. */
  static async start(settings: GatewaySettings, logger: Logger): Promise<Gateway> {
    const certificate = await loadServerCertificate({
      cert: settings.tls_cert,
      key: settings.tls_key,
    });
    const registry = new SessionRegistry();
    const authority = new GroupAuthority({
      authUsername: settings.auth_username,
      authPassword: settings.auth_password,
      groups: settings.groups,
    });
    const limiter = new FailureLimiter();
    const tunnelAddr = parseListenAddr(settings.listen_addr);
    const tunnel = new TunnelEndpoint({
      ...tunnelAddr,
      certificate,
      heartbeatIntervalMs: settings.heartbeat.interval,
      heartbeatTimeoutMs: settings.heartbeat.timeout,
      handshakeTimeoutMs: settings.handshake_timeout,
      drainTimeoutMs: settings.drain_timeout,
      authority,
      limiter,
      registry,
      logger: logger.child({ component: 'tunnel' }),
    });
    const tunnelAddress = await tunnel.listen();
    const frontDoors: FrontDoor[] = [];
    /** Listens, after recording the door, so that a failure closes every door opened so far. */
    const listen = (door: FrontDoor & { listen(): Promise<AddressInfo> }) => {
      frontDoors.push(door);
      return door.listen();
    };
    const common = {
      authority,
      limiter,
      registry,
      openTimeoutMs: settings.open_timeout,
      handshakeTimeoutMs: settings.handshake_timeout,
    };
    const addresses: GatewayAddresses = {
      tunnel: tunnelAddress,
      socks5: undefined,
      http: undefined,
      https: undefined,
    };
    try {
      const { socks5, http, https } = settings.proxy;
      if (socks5?.listen_addr !== undefined) {
        const listener = new Socks5Listener({
          ...parseListenAddr(socks5.listen_addr),
          ...common,
          logger: logger.child({ component: 'socks5' }),
        });
        addresses.socks5 = await listen(listener);
      }
      if (http?.listen_addr !== undefined) {
        const listener = new HttpProxyListener({
          ...parseListenAddr(http.listen_addr),
          ...common,
          logger: logger.child({ component: 'http' }),
        });
        addresses.http = await listen(listener);
      }
      if (https?.listen_addr !== undefined) {
        const own =
          https.tls_cert === undefined && https.tls_key === undefined
            ? certificate
            : await loadServerCertificate({ cert: https.tls_cert, key: https.tls_key });
        const listener = new HttpProxyListener({
          ...parseListenAddr(https.listen_addr),
          ...common,
          tls: { cert: own.cert, key: own.key },
          logger: logger.child({ component: 'https' }),
        });
        addresses.https = await listen(listener);
      }
    } catch (err) {
      await Promise.all(frontDoors.map((door) => door.close()));
      await tunnel.close();
      throw err;
    }
    const gateway = new Gateway({ certificate, registry, tunnel, frontDoors, addresses }, logger);
    logger.info(
      {
        tunnel: formatAddress(tunnelAddress),
        socks5: addresses.socks5 && formatAddress(addresses.socks5),
        http: addresses.http && formatAddress(addresses.http),
        https: addresses.https && formatAddress(addresses.https),
        fingerprint: certificate.fingerprint,
        selfSigned: certificate.selfSigned,
      },
      'gateway listening',
    );
    return gateway;
  }

  /**
   * Stops in order: stop accepting users and tunnels, drain sessions (streams finish or are
   * reset after the drain timeout), close the WebSockets. Idempotent.
   */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      this.#log.info('gateway shutting down');
      // Stop accepting users first; their open streams end as the tunnel drains and closes.
      const frontDoorsClosed = Promise.all(this.#frontDoors.map((door) => door.close()));
      await this.#tunnel.close();
      await frontDoorsClosed;
      this.#log.info('gateway stopped');
    })();
    return this.#closing;
  }
}

export function formatAddress(address: AddressInfo): string {
  return address.family === 'IPv6'
    ? `[${address.address}]:${address.port}`
    : `${address.address}:${address.port}`;
}
