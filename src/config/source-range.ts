/**
 * The syntax of a source range (`gateway.proxy.<kind>.allowed_sources`): an IP address
 * (`127.0.0.1`, `::1`) or a CIDR range (`10.0.0.0/8`, `fd00::/8`). IPv4 and IPv6 alike; an
 * IPv4 range also matches the IPv4-mapped IPv6 form (`::ffff:10.1.2.3`) a dual-stack socket
 * reports (see `src/gateway/source-filter.ts`).
 */
import { isIP } from 'node:net';
import type { Read } from './duration.js';

/** One parsed entry: the network address, its prefix length, and its family. */
export interface SourceRange {
  address: string;
  prefix: number;
  family: 'ipv4' | 'ipv6';
}

const PREFIX = /^\d{1,3}$/;

/** Reads `ADDRESS` or `ADDRESS/PREFIX` without throwing; a bare address is a /32 or /128. */
export function readSourceRange(text: string): Read<SourceRange> {
  const shown = JSON.stringify(text);
  const trimmed = text.trim();
  const [address = '', prefixText, ...extra] = trimmed.split('/');
  const family = isIP(address);
  // A zone index (`fe80::1%eth0`) names an interface, not a range; isIP accepts it, we do not.
  if (extra.length > 0 || family === 0 || address.includes('%')) {
    return {
      ok: false,
      problem: `${shown} is not an IP address or CIDR range (write e.g. 127.0.0.1, 10.0.0.0/8, ::1 or fd00::/8)`,
    };
  }
  const maxPrefix = family === 4 ? 32 : 128;
  if (prefixText === undefined) {
    return { ok: true, value: { address, prefix: maxPrefix, family: familyName(family) } };
  }
  if (!PREFIX.test(prefixText) || Number(prefixText) > maxPrefix) {
    return {
      ok: false,
      problem: `${shown} has an invalid prefix length: an IPv${family} range takes /0 to /${maxPrefix}`,
    };
  }
  return {
    ok: true,
    value: { address, prefix: Number(prefixText), family: familyName(family) },
  };
}

function familyName(family: number): 'ipv4' | 'ipv6' {
  return family === 4 ? 'ipv4' : 'ipv6';
}
