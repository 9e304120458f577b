/**
 * What a gateway offers to a device pointed at it: the proxy listeners a user can dial, the host
 * to dial them at, and the credentials of one group. Shared by every profile format
 * (`clash.ts`, `pac.ts`). Pure (no I/O): it works from a configuration or from a running
 * gateway's bound addresses alike.
 */
import { isIPv4, isIPv6 } from 'node:net';
import { parseListenAddr, readHostPort } from '../config/duration.js';
import type { GatewayConfig } from '../config/schema.js';
import { PosternError } from '../errors.js';

/** A proxy front door, in the order profiles prefer them: TLS to the proxy first. */
export type ProxyKind = 'https' | 'http' | 'socks5';

export const PROXY_KINDS: readonly ProxyKind[] = ['https', 'http', 'socks5'];

/** One listener as a device must dial it. An IPv6 `host` is written without brackets. */
export interface ProfileListener {
  kind: ProxyKind;
  host: string;
  port: number;
}

/** Group credentials: the user name a proxy user gives is the group id. */
export interface ProfileCredentials {
  username: string;
  password: string;
}

/** Everything a profile is built from. */
export interface ProfileInput {
  group: string;
  credentials: ProfileCredentials;
  /** Non-empty, in {@link PROXY_KINDS} order. */
  listeners: readonly ProfileListener[];
}

/** A listener that is configured but left out of profiles, and why. */
export interface SkippedListener {
  kind: ProxyKind;
  reason: string;
}

/** A listener as bound or configured, before the dial host is decided. */
export interface BoundListener {
  kind: ProxyKind;
  host: string;
  port: number;
}

function profileError(message: string): PosternError {
  return new PosternError('POSTERN_ERR_CONFIG', message);
}

/** True for addresses that mean "every interface", which no device can dial. */
export function isWildcardHost(host: string): boolean {
  const bare = host.replace(/^\[(.*)\]$/, '$1');
  if (isIPv4(bare)) return bare === '0.0.0.0';
  if (isIPv6(bare)) return /^[0:]+$/.test(bare);
  return bare === '';
}

/**
 * Checks a `--host` value: a host name or an IP address (IPv6 with or without brackets), not a
 * wildcard, no port. Returns it without brackets.
 */
export function readPublicHost(text: string): string {
  const bare = text.trim().replace(/^\[(.*)\]$/, '$1');
  if (isWildcardHost(bare)) {
    throw profileError(
      `--host ${JSON.stringify(text)} is a wildcard address; give the name or address devices dial`,
    );
  }
  if (isIPv6(bare)) return bare;
  const read = readHostPort(`${bare}:1`, { emptyHost: undefined, minPort: 1 });
  if (!read.ok || read.value.host !== bare) {
    throw profileError(
      `--host ${JSON.stringify(text)} must be a host name or an IP address, without a port`,
    );
  }
  return bare;
}

/**
 * The proxy listeners a gateway configuration opens, and the ones left out of profiles:
 *
 * - port 0 is chosen by the system at start, so a profile cannot name it;
 * - an HTTPS proxy without a certificate file (`gateway.proxy.https.tls_cert`, else
 *   `gateway.tls_cert`) serves a certificate generated at each start, which no device can verify.
 */
export function configuredListeners(gateway: GatewayConfig): {
  listeners: BoundListener[];
  skipped: SkippedListener[];
} {
  const listeners: BoundListener[] = [];
  const skipped: SkippedListener[] = [];
  for (const kind of PROXY_KINDS) {
    const listenAddr = gateway.proxy[kind].listen_addr;
    if (listenAddr === undefined) continue;
    const { host, port } = parseListenAddr(listenAddr);
    const key = `gateway.proxy.${kind}.listen_addr`;
    if (port === 0) {
      skipped.push({
        kind,
        reason: `${key} is ${listenAddr}: port 0 is chosen at start, so a profile cannot name it`,
      });
      continue;
    }
    if (
      kind === 'https' &&
      gateway.proxy.https.tls_cert === undefined &&
      gateway.tls_cert === undefined
    ) {
      skipped.push({
        kind,
        reason:
          'the HTTPS proxy has no certificate file (gateway.proxy.https.tls_cert or gateway.tls_cert), ' +
          'so it serves one generated at each start that no device can verify',
      });
      continue;
    }
    listeners.push({ kind, host, port });
  }
  return { listeners, skipped };
}

/**
 * Decides the host each listener of the `usable` kinds is dialed at: `publicHost` when given,
 * else the bound host. Listeners of other kinds are ignored, wildcard or not.
 *
 * @throws PosternError when no listener is usable, or a usable listener binds a wildcard address
 *   and no `publicHost` is given.
 */
export function dialableListeners(
  bound: readonly BoundListener[],
  publicHost: string | undefined,
  usable: readonly ProxyKind[] = PROXY_KINDS,
): ProfileListener[] {
  const chosen = bound.filter((listener) => usable.includes(listener.kind));
  if (chosen.length === 0) {
    const keys = usable.map((kind) => `gateway.proxy.${kind}.listen_addr`).join(' or ');
    const socks5 = usable.includes('socks5')
      ? ''
      : '; browsers cannot authenticate to a SOCKS5 proxy, so a PAC file cannot use one';
    throw profileError(
      `the gateway has no proxy listener this profile can point at; set ${keys} (with a fixed port)${socks5}`,
    );
  }
  const host = publicHost === undefined ? undefined : readPublicHost(publicHost);
  const sorted = chosen.sort((a, b) => PROXY_KINDS.indexOf(a.kind) - PROXY_KINDS.indexOf(b.kind));
  return sorted.map((listener) => {
    if (host !== undefined) return { ...listener, host };
    if (isWildcardHost(listener.host)) {
      throw profileError(
        `the ${listener.kind} proxy listens on every interface (${listener.host}); ` +
          'a profile cannot point at that address, so pass --host with the name or address devices dial',
      );
    }
    return { ...listener };
  });
}

/**
 * The credentials of `group`: `password` when given, else the password of the group as declared
 * in `gateway.groups`. Only the named group's password is ever read.
 *
 * @throws PosternError when there is no password, or `password` contradicts the declared one
 *   (the profile would be refused with 407 / SOCKS5 auth failure).
 */
export function groupCredentials(
  gateway: Pick<GatewayConfig, 'groups'>,
  group: string,
  password: string | undefined,
): ProfileCredentials {
  if (group === '' || group.includes(':')) {
    throw profileError(`--group ${JSON.stringify(group)} must be a non-empty group id without ":"`);
  }
  const declared = gateway.groups.find((entry) => entry.id === group);
  if (password !== undefined) {
    if (password === '') throw profileError('--password must not be empty');
    if (declared !== undefined && declared.password !== password) {
      throw profileError(
        `--password differs from the password of group "${group}" in gateway.groups; ` +
          'the gateway would refuse this profile (omit --password to use the declared one)',
      );
    }
    return { username: group, password };
  }
  if (declared === undefined) {
    throw profileError(
      `group "${group}" is not declared in gateway.groups, so its password is not known here; ` +
        'pass --password (the password its clients bound)',
    );
  }
  return { username: group, password: declared.password };
}

/** The listeners of a running gateway, from the addresses it actually bound. */
export function boundListeners(addresses: {
  socks5: { address: string; port: number } | undefined;
  http: { address: string; port: number } | undefined;
  https: { address: string; port: number } | undefined;
}): BoundListener[] {
  return PROXY_KINDS.flatMap((kind) => {
    const address = addresses[kind];
    return address === undefined ? [] : [{ kind, host: address.address, port: address.port }];
  });
}

/** `host:port`, with an IPv6 host in brackets. */
export function hostPort(listener: Pick<ProfileListener, 'host' | 'port'>): string {
  return isIPv6(listener.host)
    ? `[${listener.host}]:${listener.port}`
    : `${listener.host}:${listener.port}`;
}

/** `text` in double quotes with every control, line-separator and non-ASCII character escaped, safe inside a one-line comment. */
export function quoted(text: string): string {
  return JSON.stringify(text).replace(
    /[^\x20-\x7e]/g,
    (char) => `\\u${char.charCodeAt(0).toString(16).padStart(4, '0')}`,
  );
}
