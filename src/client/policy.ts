import dns from 'node:dns';
import net from 'node:net';
import { PosternError } from '../errors.js';
import { Reason } from '../tunnel/constants.js';

/** An address a request resolved to, in canonical form (IPv4-mapped IPv6 becomes IPv4). */
export interface ResolvedAddress {
  readonly address: string;
  readonly family: 4 | 6;
}

/** Allowed with the addresses to dial, or refused with a reason code and a sentence for the user. */
export type PolicyDecision =
  | { readonly allowed: true; readonly addresses: readonly ResolvedAddress[] }
  | {
      readonly allowed: false;
      readonly reason: typeof Reason.FORBIDDEN | typeof Reason.DNS_FAILURE;
      readonly message: string;
      /** The resolver's error, for a DNS failure. */
      readonly cause?: unknown;
    };

/** Resolves a name to every address; `dns.promises.lookup` by default, replaceable in tests. */
export type LookupFunction = (
  hostname: string,
  options: { all: true; verbatim: true },
) => Promise<dns.LookupAddress[]>;

export interface AccessPolicyOptions {
  allowed_hosts: readonly string[];
  forbidden_hosts: readonly string[];
}

interface PortRange {
  readonly first: number;
  readonly last: number;
}

type HostPattern =
  | { readonly kind: 'any' }
  | { readonly kind: 'name'; readonly name: string }
  | { readonly kind: 'subdomains'; readonly suffix: string }
  | { readonly kind: 'network'; readonly addresses: net.BlockList };

interface PolicyEntry {
  /** The entry as the operator wrote it, quoted in refusal messages. */
  readonly text: string;
  readonly host: HostPattern;
  /** Undefined when the entry names no port: every port. */
  readonly ports: PortRange | undefined;
}

/** Resolver error codes that mean "this name has no usable answer". */
const DNS_FAILURE_CODES = new Set(['ENOTFOUND', 'EAI_AGAIN', 'EAI_NONAME', 'ENODATA', 'EAI_FAIL']);

const ALLOW_HINT = '(allow it explicitly in client.allowed_hosts)';

interface ProtectedRange {
  /** Reads after "is": `127.0.0.1 is a loopback address`. */
  readonly description: string;
  readonly addresses: net.BlockList;
}

function blockListOf(cidrs: readonly string[]): net.BlockList {
  const list = new net.BlockList();
  for (const cidr of cidrs) {
    const [address, prefix] = cidr.split('/') as [string, string];
    list.addSubnet(address, Number(prefix), net.isIPv6(address) ? 'ipv6' : 'ipv4');
  }
  return list;
}

/** Refused unless allowed_hosts names them by IP or CIDR. Most specific first, for the message. */
const PROTECTED_RANGES: readonly ProtectedRange[] = [
  {
    description: 'a cloud metadata address',
    addresses: blockListOf(['169.254.169.254/32', '100.100.100.200/32', 'fd00:ec2::254/128']),
  },
  { description: 'a loopback address', addresses: blockListOf(['127.0.0.0/8', '::1/128']) },
  { description: 'an unspecified address', addresses: blockListOf(['0.0.0.0/8', '::/128']) },
  { description: 'a link-local address', addresses: blockListOf(['169.254.0.0/16', 'fe80::/10']) },
];
const LOOPBACK = PROTECTED_RANGES[1]!;

/**
 * The client's access policy (DESIGN §4), applied before every dial.
 *
 * Entry syntax, each optionally followed by `:PORT` or `:FIRST-LAST` (ports 1-65535):
 * - `*`: every host (`*:25` is port 25 on any host).
 * - `db.internal`: that exact name, case-insensitive, trailing dot ignored.
 * - `*.example.com`: every subdomain at any depth, not `example.com` itself.
 * - `10.1.2.3`, `10.0.0.0/8`: an IPv4 address or CIDR range.
 * - `fd00::1`, `fd00::/8`: an IPv6 address or CIDR range, without a port (`::1:22` is the
 *   address `::1:22`, not port 22).
 * - `[fd00::1]:22`, `[fd00::/8]:443-444`: with a port, an IPv6 address or CIDR goes in brackets,
 *   the prefix length inside them.
 *
 * Rules: forbidden_hosts always wins; an empty allowed_hosts allows everything not forbidden; a
 * non-empty one allows a request whose name matches an entry, or whose every address does.
 * Loopback, unspecified, link-local and cloud metadata addresses are refused unless an
 * allowed_hosts IP or CIDR entry contains them (`*` and wildcard names do not count), or, for
 * loopback only, the request is for `localhost` and allowed_hosts has the exact entry `localhost`.
 *
 * Every rule applies to the requested name and to every address it resolves to; one refused
 * address refuses the whole request, since a mixed answer is the signature of DNS rebinding. The
 * decision carries the addresses that passed: dial those, and never resolve the name again.
 * IPv4-mapped IPv6 addresses are checked as IPv4; IPv6 zone ids are dropped.
 */
export class AccessPolicy {
  readonly #allowed: readonly PolicyEntry[];
  readonly #forbidden: readonly PolicyEntry[];

  private constructor(allowed: readonly PolicyEntry[], forbidden: readonly PolicyEntry[]) {
    this.#allowed = allowed;
    this.#forbidden = forbidden;
  }

  /**
   * Validates every entry.
   * @throws PosternError `POSTERN_ERR_CONFIG` naming the key, index and entry of the first bad one.
   */
  static parse(options: AccessPolicyOptions): AccessPolicy {
    return new AccessPolicy(
      parseEntries('client.allowed_hosts', options.allowed_hosts),
      parseEntries('client.forbidden_hosts', options.forbidden_hosts),
    );
  }

  /**
   * Decides whether `host:port` may be dialled, resolving `host` unless it is an IP literal
   * (`[::1]` included). Resolves to a refusal for a forbidden target or a DNS failure; rejects
   * only on an unexpected resolver error.
   */
  async check(
    host: string,
    port: number,
    lookup: LookupFunction = dns.promises.lookup,
  ): Promise<PolicyDecision> {
    const name = normalizeRequestedHost(host);
    const literal = toResolvedAddress(name);
    const target = formatTarget(literal?.address ?? name, port);
    if (!Number.isInteger(port) || port < 1 || port > 65535) {
      return refuse(`${target}: port ${port} is outside 1-65535`);
    }
    // Name rules come first, so that a refused name costs no DNS query.
    const forbiddenName = this.#forbidden.find((entry) => matchesName(entry, name, port));
    if (forbiddenName !== undefined) {
      return refuse(`${target} matches forbidden_hosts entry "${forbiddenName.text}"`);
    }
    const nameAllowed =
      this.#allowed.length === 0 || this.#allowed.some((entry) => matchesName(entry, name, port));
    if (!nameAllowed && !this.#allowed.some((entry) => entry.host.kind === 'network')) {
      return refuse(`${target} matches no allowed_hosts entry`);
    }

    let addresses: readonly ResolvedAddress[];
    if (literal !== undefined) {
      addresses = [literal];
    } else {
      const resolution = await resolve(name, lookup);
      if (!resolution.ok) return resolution.decision;
      addresses = resolution.addresses;
    }

    for (const resolved of addresses) {
      const via =
        literal === undefined ? `${target} resolves to ${resolved.address}, which` : target;
      const forbidden = this.#forbidden.find((entry) => matchesAddress(entry, resolved, port));
      if (forbidden !== undefined) {
        return refuse(`${via} matches forbidden_hosts entry "${forbidden.text}"`);
      }
      const range = PROTECTED_RANGES.find((candidate) => inRange(candidate.addresses, resolved));
      if (range !== undefined && !this.#unlocks(range, name, resolved, port)) {
        const subject =
          literal === undefined
            ? `${target} resolves to ${resolved.address},`
            : `${resolved.address} is`;
        return refuse(`${subject} ${range.description} ${ALLOW_HINT}`);
      }
    }

    if (!nameAllowed) {
      const outside = addresses.find(
        (resolved) => !this.#allowed.some((entry) => matchesAddress(entry, resolved, port)),
      );
      if (outside !== undefined) {
        return refuse(
          literal === undefined
            ? `${target} matches no allowed_hosts entry, and neither does its address ${outside.address}`
            : `${target} matches no allowed_hosts entry`,
        );
      }
    }
    return { allowed: true, addresses };
  }

  #unlocks(range: ProtectedRange, name: string, resolved: ResolvedAddress, port: number): boolean {
    return this.#allowed.some(
      (entry) =>
        matchesAddress(entry, resolved, port) ||
        (range === LOOPBACK &&
          name === 'localhost' &&
          entry.host.kind === 'name' &&
          entry.host.name === 'localhost' &&
          portMatches(entry.ports, port)),
    );
  }
}

function refuse(message: string): PolicyDecision {
  return { allowed: false, reason: Reason.FORBIDDEN, message };
}

type Resolution =
  | { readonly ok: true; readonly addresses: readonly ResolvedAddress[] }
  | { readonly ok: false; readonly decision: PolicyDecision };

async function resolve(name: string, lookup: LookupFunction): Promise<Resolution> {
  const dnsFailure = (message: string, cause?: unknown): Resolution => ({
    ok: false,
    decision: { allowed: false, reason: Reason.DNS_FAILURE, message, cause },
  });
  if (name === '') return dnsFailure('cannot resolve an empty host name');
  let answers: dns.LookupAddress[];
  try {
    answers = await lookup(name, { all: true, verbatim: true });
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== undefined && DNS_FAILURE_CODES.has(code)) {
      return dnsFailure(`cannot resolve ${name} (${code})`, err);
    }
    throw err;
  }
  if (answers.length === 0) return dnsFailure(`${name} resolves to no address`);
  const addresses = answers.map((answer) => {
    const resolved = toResolvedAddress(answer.address);
    if (resolved === undefined) {
      throw new TypeError(`lookup(${name}) returned "${answer.address}", not an IP address`);
    }
    return resolved;
  });
  return { ok: true, addresses };
}

/** Lower case, brackets around an IPv6 literal and one trailing dot removed. */
function normalizeRequestedHost(host: string): string {
  const lower = host.toLowerCase();
  if (lower.startsWith('[') && lower.endsWith(']') && net.isIPv6(lower.slice(1, -1))) {
    return lower.slice(1, -1);
  }
  return lower.endsWith('.') ? lower.slice(0, -1) : lower;
}

/** Canonical form of an IP literal, or undefined when `text` is not one. */
function toResolvedAddress(text: string): ResolvedAddress | undefined {
  switch (net.isIP(text)) {
    case 4:
      return { address: text, family: 4 };
    case 6: {
      const canonical = new net.SocketAddress({ address: text, family: 'ipv6' }).address;
      const mapped = canonical.startsWith('::ffff:') ? canonical.slice('::ffff:'.length) : '';
      return net.isIPv4(mapped)
        ? { address: mapped, family: 4 }
        : { address: canonical, family: 6 };
    }
    default:
      return undefined;
  }
}

function formatTarget(host: string, port: number): string {
  return net.isIPv6(host) ? `[${host}]:${port}` : `${host}:${port}`;
}

/**
 * `BlockList.check` parses a string address into a SocketAddress on every call, and one dial is
 * checked against every protected range and policy entry: one parse per address will do.
 */
const socketAddresses = new WeakMap<ResolvedAddress, net.SocketAddress>();

function inRange(addresses: net.BlockList, resolved: ResolvedAddress): boolean {
  let socketAddress = socketAddresses.get(resolved);
  if (socketAddress === undefined) {
    socketAddress = new net.SocketAddress({
      address: resolved.address,
      family: resolved.family === 4 ? 'ipv4' : 'ipv6',
    });
    socketAddresses.set(resolved, socketAddress);
  }
  return addresses.check(socketAddress);
}

function portMatches(ports: PortRange | undefined, port: number): boolean {
  return ports === undefined || (port >= ports.first && port <= ports.last);
}

function matchesName(entry: PolicyEntry, name: string, port: number): boolean {
  if (!portMatches(entry.ports, port)) return false;
  switch (entry.host.kind) {
    case 'any':
      return true;
    case 'name':
      return name === entry.host.name;
    case 'subdomains':
      return name.length > entry.host.suffix.length && name.endsWith(entry.host.suffix);
    case 'network':
      return false;
  }
}

function matchesAddress(entry: PolicyEntry, resolved: ResolvedAddress, port: number): boolean {
  return (
    entry.host.kind === 'network' &&
    portMatches(entry.ports, port) &&
    inRange(entry.host.addresses, resolved)
  );
}

function parseEntries(key: string, texts: readonly string[]): PolicyEntry[] {
  return texts.map((text, index) => {
    const parsed = parseEntry(text);
    if (typeof parsed === 'string') {
      throw new PosternError('POSTERN_ERR_CONFIG', `${key}[${index}]: "${text}" ${parsed}`);
    }
    return parsed;
  });
}

const NOT_A_HOST = 'is not a valid host, address or CIDR';

/** The entry, or what is wrong with it (a phrase that follows the quoted entry). */
function parseEntry(text: string): PolicyEntry | string {
  const split = splitPort(text);
  if (split === undefined) return NOT_A_HOST;
  let ports: PortRange | undefined;
  if (split.port !== undefined) {
    ports = parsePortRange(split.port);
    if (ports === undefined) {
      return `has an invalid port "${split.port}" (use 1-65535 or a range such as 8000-8080)`;
    }
  }
  const host = split.bracketed ? parseNetwork(split.host) : parseHostPattern(split.host);
  return host === undefined ? NOT_A_HOST : { text, host, ports };
}

/**
 * `[HOST]:PORT`, `HOST:PORT` or `HOST`. With two or more colons and no brackets the whole entry
 * is an IPv6 address or CIDR, because a port after it would be ambiguous.
 */
function splitPort(
  text: string,
): { host: string; port: string | undefined; bracketed: boolean } | undefined {
  if (text.startsWith('[')) {
    const close = text.indexOf(']');
    if (close < 0) return undefined;
    const rest = text.slice(close + 1);
    if (rest !== '' && !rest.startsWith(':')) return undefined;
    return {
      host: text.slice(1, close),
      port: rest === '' ? undefined : rest.slice(1),
      bracketed: true,
    };
  }
  const colons = text.split(':').length - 1;
  if (colons !== 1) return { host: text, port: undefined, bracketed: false };
  const colon = text.indexOf(':');
  return { host: text.slice(0, colon), port: text.slice(colon + 1), bracketed: false };
}

function parsePortRange(text: string): PortRange | undefined {
  const match = /^(\d{1,5})(?:-(\d{1,5}))?$/.exec(text);
  if (match === null) return undefined;
  const first = Number(match[1]);
  const last = match[2] === undefined ? first : Number(match[2]);
  if (first < 1 || last > 65535 || first > last) return undefined;
  return { first, last };
}

function parseHostPattern(text: string): HostPattern | undefined {
  if (text === '*') return { kind: 'any' };
  const network = parseNetwork(text);
  if (network !== undefined) return network;
  const name = normalizeEntryName(text);
  if (name.startsWith('*.')) {
    const parent = name.slice(2);
    return isHostName(parent) ? { kind: 'subdomains', suffix: `.${parent}` } : undefined;
  }
  return isHostName(name) ? { kind: 'name', name } : undefined;
}

function normalizeEntryName(text: string): string {
  const lower = text.toLowerCase();
  return lower.endsWith('.') ? lower.slice(0, -1) : lower;
}

/** DNS labels (letters, digits, `-`, `_`); the last label is not all digits, so not an IP. */
function isHostName(name: string): boolean {
  if (name.length === 0 || name.length > 253) return false;
  const labels = name.split('.');
  const label = /^(?!-)[a-z0-9_-]{1,63}(?<!-)$/;
  return labels.every((part) => label.test(part)) && !/^\d+$/.test(labels[labels.length - 1]!);
}

/** An IP address or `ADDRESS/PREFIX`, as a BlockList; undefined when `text` is neither. */
function parseNetwork(text: string): HostPattern | undefined {
  const [address = '', prefix, ...extra] = text.split('/');
  if (extra.length > 0 || address.includes('%')) return undefined;
  const family = net.isIP(address);
  if (family === 0) return undefined;
  const type = family === 4 ? 'ipv4' : 'ipv6';
  const addresses = new net.BlockList();
  if (prefix === undefined) {
    addresses.addAddress(address, type);
    return { kind: 'network', addresses };
  }
  const maxPrefix = family === 4 ? 32 : 128;
  if (!/^\d{1,3}$/.test(prefix) || Number(prefix) > maxPrefix) return undefined;
  addresses.addSubnet(address, Number(prefix), type);
  return { kind: 'network', addresses };
}
