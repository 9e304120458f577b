/**
 * The gateway: the tunnel endpoint clients dial, the registry of their sessions, and the
 * front doors users connect to. It owns its listeners and closes them in order on shutdown.
 */
import type { AddressInfo } from 'node:net';
import { parseListenAddr } from '../config/duration.js';
import type { Logger } from '../observability/logger.js';
import { loadServerCertificate, type ServerCertificate } from '../tls/certificates.js';
import { FailureLimiter, GroupAuthority } from './auth.js';
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
  proxy: { socks5?: { listen_addr?: string | undefined } | undefined };
  groups: readonly { id: string; password: string }[];
}

export interface GatewayAddresses {
  tunnel: AddressInfo;
  socks5: AddressInfo | undefined;
}

export class Gateway {
  readonly certificate: ServerCertificate;
  readonly registry: SessionRegistry;
  readonly addresses: GatewayAddresses;
  #tunnel: TunnelEndpoint;
  #socks5: Socks5Listener | undefined;
  #log: Logger;
  #closing: Promise<void> | undefined;

  private constructor(
    parts: {
      certificate: ServerCertificate;
      registry: SessionRegistry;
      tunnel: TunnelEndpoint;
      socks5: Socks5Listener | undefined;
      addresses: GatewayAddresses;
    },
    logger: Logger,
  ) {
    this.certificate = parts.certificate;
    this.registry = parts.registry;
    this.#tunnel = parts.tunnel;
    this.#socks5 = parts.socks5;
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
    let socks5: Socks5Listener | undefined;
    let socks5Address: AddressInfo | undefined;
    const socks5Addr = settings.proxy.socks5?.listen_addr;
    if (socks5Addr !== undefined) {
      socks5 = new Socks5Listener({
        ...parseListenAddr(socks5Addr),
        authority,
        limiter,
        registry,
        openTimeoutMs: settings.open_timeout,
        handshakeTimeoutMs: settings.handshake_timeout,
        logger: logger.child({ component: 'socks5' }),
      });
      try {
        socks5Address = await socks5.listen();
      } catch (err) {
        await tunnel.close();
        throw err;
      }
    }
    const gateway = new Gateway(
      {
        certificate,
        registry,
        tunnel,
        socks5,
        addresses: { tunnel: tunnelAddress, socks5: socks5Address },
      },
      logger,
    );
    logger.info(
      {
        tunnel: formatAddress(tunnelAddress),
        socks5: socks5Address && formatAddress(socks5Address),
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
      const socks5Closed = this.#socks5?.close();
      await this.#tunnel.close();
      await socks5Closed;
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
