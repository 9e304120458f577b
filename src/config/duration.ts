/**
 * The syntax of configuration values that are more than plain strings:
 *
 * - durations: `500ms`, `20s`, `5m`, `1h`, compounds such as `1m30s`, or a plain number of
 *   milliseconds (`250` or `'250'`); each becomes a whole number of milliseconds;
 * - listen addresses: `host:port`, `[ipv6]:port`, or `:port` for every IPv4 interface.
 */
import { isIPv4, isIPv6 } from 'node:net';
import { PosternError } from '../errors.js';

/** The outcome of reading a value without throwing, for validators that collect every problem. */
export type Read<T> = { ok: true; value: T } | { ok: false; problem: string };

/** Host used for a listen address written `:port`: every IPv4 interface. */
export const ALL_INTERFACES = '0.0.0.0';

/** Largest delay `setTimeout` honours; a longer one would fire after 1 ms instead. */
export const MAX_DURATION_MS = 2 ** 31 - 1;

const UNIT_MS = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000 } as const;
type Unit = keyof typeof UNIT_MS;

const DURATION_TEXT = /^(?:\d+(?:\.\d+)?(?:ms|s|m|h))+$/;
const DURATION_PART = /(\d+(?:\.\d+)?)(ms|s|m|h)/g;
const DIGITS = /^\d+$/;
const HOST_LABEL = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/i;

/**
 * Reads a duration without throwing. A duration must be at least 1 ms and at most
 * {@link MAX_DURATION_MS}.
 */
export function readDuration(value: string | number): Read<number> {
  const ms = typeof value === 'number' ? value : textToMilliseconds(value.trim());
  if (ms === undefined || !Number.isFinite(ms)) {
    return {
      ok: false,
      problem: `"${String(value)}" is not a duration (write e.g. 500ms, 20s, 5m, 1h, 1m30s, or a number of milliseconds)`,
    };
  }
  const rounded = Math.round(ms);
  if (rounded < 1) {
    return { ok: false, problem: `must be at least 1ms, got ${String(value)}` };
  }
  if (rounded > MAX_DURATION_MS) {
    return {
      ok: false,
      problem: `must be at most ${formatDuration(MAX_DURATION_MS)} (${MAX_DURATION_MS}ms), got ${String(value)}`,
    };
  }
  return { ok: true, value: rounded };
}

/**
 * Parses a duration to milliseconds.
 *
 * @throws PosternError `POSTERN_ERR_CONFIG` when `value` is not a duration in range.
 */
export function parseDuration(value: string | number): number {
  const result = readDuration(value);
  if (!result.ok) throw new PosternError('POSTERN_ERR_CONFIG', `duration ${result.problem}`);
  return result.value;
}

/** Writes milliseconds in the shortest exact form `parseDuration` reads back: `90000` → `1m30s`. */
export function formatDuration(ms: number): string {
  if (!Number.isInteger(ms) || ms <= 0) return `${ms}ms`;
  const parts: string[] = [];
  let rest = ms;
  for (const unit of ['h', 'm', 's', 'ms'] as const satisfies readonly Unit[]) {
    const count = Math.floor(rest / UNIT_MS[unit]);
    if (count > 0) parts.push(`${count}${unit}`);
    rest -= count * UNIT_MS[unit];
  }
  return parts.join('');
}

function textToMilliseconds(text: string): number | undefined {
  if (DIGITS.test(text)) return Number(text);
  if (!DURATION_TEXT.test(text)) return undefined;
  let total = 0;
  for (const [, amount, unit] of text.matchAll(DURATION_PART)) {
    total += Number(amount) * UNIT_MS[unit as Unit];
  }
  return total;
}

/** A `host:port` pair; an IPv6 host is written without brackets. */
export interface HostPort {
  host: string;
  port: number;
}

/**
 * Parses a listen address: `0.0.0.0:8443`, `127.0.0.1:1080`, `[::1]:1080`, `localhost:1080`, or
 * `:1080` for every IPv4 interface. Port 0 asks the system for a free port.
 *
 * @throws PosternError `POSTERN_ERR_CONFIG` when `text` is not such an address.
 */
export function parseListenAddr(text: string): HostPort {
  const result = readHostPort(text, { emptyHost: ALL_INTERFACES, minPort: 0 });
  if (!result.ok) {
    throw new PosternError('POSTERN_ERR_CONFIG', `listen address ${result.problem}`);
  }
  return result.value;
}

/**
 * Reads `host:port` without throwing. An empty host becomes `rules.emptyHost`, or is refused when
 * that is undefined; ports below `rules.minPort` are refused.
 */
export function readHostPort(
  text: string,
  rules: { emptyHost: string | undefined; minPort: number },
): Read<HostPort> {
  const shown = JSON.stringify(text);
  let host: string;
  let portText: string;
  if (text.startsWith('[')) {
    const end = text.indexOf(']');
    host = end < 0 ? '' : text.slice(1, end);
    if (!isIPv6(host)) {
      return { ok: false, problem: `${shown} has no valid IPv6 address in brackets` };
    }
    if (text[end + 1] !== ':') return { ok: false, problem: `${shown} has no :port` };
    portText = text.slice(end + 2);
  } else {
    const colon = text.lastIndexOf(':');
    if (colon < 0) {
      const hint = DIGITS.test(text) ? ` (did you mean ":${text}"?)` : '';
      return { ok: false, problem: `${shown} has no :port${hint}` };
    }
    host = text.slice(0, colon);
    portText = text.slice(colon + 1);
    if (host.includes(':')) {
      return { ok: false, problem: `${shown}: write an IPv6 address in brackets, e.g. [::1]:1080` };
    }
    if (host === '') {
      if (rules.emptyHost === undefined) return { ok: false, problem: `${shown} has no host` };
      host = rules.emptyHost;
    } else if (!isIPv4(host) && !isHostName(host)) {
      return { ok: false, problem: `${shown} has an invalid host "${host}"` };
    }
  }
  const port = Number(portText);
  if (!DIGITS.test(portText) || port < rules.minPort || port > 65535) {
    return {
      ok: false,
      problem: `${shown} has an invalid port "${portText}" (expected ${rules.minPort}-65535)`,
    };
  }
  return { ok: true, value: { host, port } };
}

function isHostName(text: string): boolean {
  const labels = text.split('.');
  // A name made only of digits and dots that is not valid IPv4 (999.1.1.1) is a typo, not a name.
  if (labels.every((label) => DIGITS.test(label))) return false;
  return text.length <= 253 && labels.every((label) => HOST_LABEL.test(label));
}
