/**
 * The gateway: the tunnel endpoint clients dial, the registry of their sessions, and the
 * front doors users connect to. It owns its listeners and closes them in order on shutdown.
 */
import type { AddressInfo } from 'node:net';
import { parseListenAddr } from '../config/duration.js';
import { PosternError } from '../errors.js';
import type { Logger } from '../observability/logger.js';
import { loadServerCertificate, type ServerCertificate } from '../tls/certificates.js';
import { FailureLimiter, GroupAuthority } from './auth.js';
import { HttpProxyListener } from './http-listener.js';
import { SessionRegistry } from './registry.js';
import { Socks5Listener } from './socks5-listener.js';
import { SourceFilter, SourceGuard } from './source-filter.js';
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
    socks5?: ProxyListenerSettings | undefined;
    http?: ProxyListenerSettings | undefined;
    https?:
      | (ProxyListenerSettings & {
          /** Certificate for the HTTPS proxy; without it, the gateway's own. */
          tls_cert?: string | undefined;
          tls_key?: string | undefined;
        })
      | undefined;
  };
  groups: readonly { id: string; password: string }[];
}

/** What every proxy front door has: where it listens and who may use it. */
export interface ProxyListenerSettings {
  listen_addr?: string | undefined;
  /** IP addresses and CIDR ranges that may connect; absent: every source. */
  allowed_sources?: readonly string[] | undefined;
  /** The group of users who present no credentials; needs `allowed_sources` and a declared group. */
  no_auth_group?: string | undefined;
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
        const log = logger.child({ component: 'socks5' });
        const listener = new Socks5Listener({
          ...parseListenAddr(socks5.listen_addr),
          ...common,
          ...accessFor('socks5', socks5, settings.groups, log),
          logger: log,
        });
        addresses.socks5 = await listen(listener);
      }
      if (http?.listen_addr !== undefined) {
        const log = logger.child({ component: 'http' });
        const listener = new HttpProxyListener({
          ...parseListenAddr(http.listen_addr),
          ...common,
          ...accessFor('http', http, settings.groups, log),
          logger: log,
        });
        addresses.http = await listen(listener);
      }
      if (https?.listen_addr !== undefined) {
        const own =
          https.tls_cert === undefined && https.tls_key === undefined
            ? certificate
            : await loadServerCertificate({ cert: https.tls_cert, key: https.tls_key });
        const log = logger.child({ component: 'https' });
        const listener = new HttpProxyListener({
          ...parseListenAddr(https.listen_addr),
          ...common,
          ...accessFor('https', https, settings.groups, log),
          tls: { cert: own.cert, key: own.key },
          logger: log,
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

/**
 * The source guard and no-auth group of one front door, checked again here (the schema checks
 * them for files, variables and flags) because a gateway can also be started from code.
 *
 * @throws PosternError POSTERN_ERR_CONFIG for a no-auth group without allowed sources or that
 *   is not declared, and for an allowed source that is not an IP address or CIDR range.
 */
function accessFor(
  kind: 'socks5' | 'http' | 'https',
  settings: ProxyListenerSettings,
  groups: GatewaySettings['groups'],
  logger: Logger,
): { guard: SourceGuard | undefined; noAuthGroup: string | undefined } {
  const key = `gateway.proxy.${kind}`;
  const sources = settings.allowed_sources;
  const group = settings.no_auth_group;
  if (group !== undefined && (sources === undefined || sources.length === 0)) {
    throw new PosternError(
      'POSTERN_ERR_CONFIG',
      `${key}.no_auth_group needs a non-empty ${key}.allowed_sources: without it the listener would be an open proxy`,
    );
  }
  if (group !== undefined && !groups.some((declared) => declared.id === group)) {
    throw new PosternError(
      'POSTERN_ERR_CONFIG',
      `${key}.no_auth_group: group "${group}" is not declared in gateway.groups`,
    );
  }
  let guard: SourceGuard | undefined;
  if (sources !== undefined) {
    try {
      guard = new SourceGuard(new SourceFilter(sources), logger);
    } catch (err) {
      if (!(err instanceof PosternError)) throw err;
      throw new PosternError('POSTERN_ERR_CONFIG', `${key}.${err.message}`, { cause: err });
    }
  }
  if (group !== undefined) {
    logger.info(
      { group, allowedSources: sources },
      'users without credentials from allowed sources are served as this group',
    );
  }
  return { guard, noAuthGroup: group };
}

export function formatAddress(address: AddressInfo): string {
  return address.family === 'IPv6'
    ? `[${address.address}]:${address.port}`
    : `${address.address}:${address.port}`;
}
