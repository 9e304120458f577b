/**
 * The one schema of Postern's configuration: keys, types, defaults and the rules between keys.
 * Parsing with {@link configSchema} yields a {@link PosternConfig} with every default applied.
 * Loading from files, environment and flags lives in `load.ts`.
 */
import { randomBytes } from 'node:crypto';
import { isIPv6 } from 'node:net';
import { hostname } from 'node:os';
import { z } from 'zod';
import {
  ALL_INTERFACES,
  formatDuration,
  type Read,
  readDuration,
  readHostPort,
} from './duration.js';
import { readSourceRange } from './source-range.js';

/** The URL path a client dials when a gateway address has none (`host:port` or `wss://host:port`). */
export const TUNNEL_PATH = '/tunnel';

/** Longest client or group id; the handshake (`src/tunnel/handshake.ts`) accepts no more. */
const MAX_ID_LENGTH = 128;
/** Longest secret; the handshake accepts no more. */
const MAX_SECRET_LENGTH = 1024;

const FINGERPRINT = /^(?:sha256:)?(?<hex>[0-9a-f]{64}|[0-9a-f]{2}(?::[0-9a-f]{2}){31})$/i;

/**
 * Turns a gateway address into the URL a client dials: `host:port` becomes
 * `wss://host:port/tunnel`; a `wss://` URL keeps its path, or gets `/tunnel` when it has none.
 * `ws://` and every other scheme are refused, so a tunnel is never silently without TLS.
 */
function readGatewayUrl(text: string): Read<string> {
  const shown = JSON.stringify(text);
  const scheme = /^([a-z][a-z0-9+.-]*):\/\//i.exec(text)?.[1]?.toLowerCase();
  if (scheme === 'ws') {
    return {
      ok: false,
      problem: `${shown} uses ws://, which has no TLS; the tunnel is always encrypted, write wss://`,
    };
  }
  if (scheme !== undefined && scheme !== 'wss') {
    return { ok: false, problem: `${shown} must be host:port or a wss:// URL` };
  }
  let urlText = text;
  if (scheme === undefined) {
    const address = readHostPort(text, { emptyHost: undefined, minPort: 1 });
    if (!address.ok) return address;
    const { host, port } = address.value;
    urlText = `wss://${isIPv6(host) ? `[${host}]` : host}:${port}${TUNNEL_PATH}`;
  }
  let url: URL;
  try {
    url = new URL(urlText);
  } catch (err) {
    if (!(err instanceof TypeError)) throw err;
    return { ok: false, problem: `${shown} is not a valid URL` };
  }
  if (url.hostname === '') return { ok: false, problem: `${shown} has no host` };
  if (url.username !== '' || url.password !== '') {
    return {
      ok: false,
      problem: `${shown} carries credentials; set client.gateway.auth_username and auth_password instead`,
    };
  }
  if (url.hash !== '') return { ok: false, problem: `${shown} must not have a #fragment` };
  if (url.pathname === '' || url.pathname === '/') url.pathname = TUNNEL_PATH;
  return { ok: true, value: url.href };
}

/**
 * Normalises a certificate pin to `sha256:` + 64 lowercase hex digits. Accepts upper or lower
 * case, colons between byte pairs (OpenSSL's form), and a missing `sha256:` prefix, as
 * `parseFingerprint` in `src/tls/verify.ts` does.
 */
function readFingerprint(text: string): Read<string> {
  const hex = FINGERPRINT.exec(text.trim())?.groups?.hex;
  if (hex === undefined) {
    return {
      ok: false,
      problem: `must be sha256: followed by 64 hex digits (colons between byte pairs allowed), got ${JSON.stringify(text)}`,
    };
  }
  return { ok: true, value: `sha256:${hex.replaceAll(':', '').toLowerCase()}` };
}

/** Adds a zod issue for every failed read, so that validation goes on and reports all problems. */
function fromRead<T>(read: (text: string) => Read<T>) {
  return (text: string, ctx: z.RefinementCtx<string>): T => {
    const result = read(text);
    if (result.ok) return result.value;
    ctx.addIssue({ code: 'custom', message: result.problem, input: text });
    return z.NEVER;
  };
}

const nonEmpty = z.string().min(1, 'must not be empty');
const secret = nonEmpty.max(MAX_SECRET_LENGTH, `must be at most ${MAX_SECRET_LENGTH} characters`);
/** Group ids double as proxy user names, and HTTP Basic credentials cannot carry a colon. */
const groupId = nonEmpty
  .max(MAX_ID_LENGTH, `must be at most ${MAX_ID_LENGTH} characters`)
  .refine((id) => !id.includes(':'), 'must not contain ":"');
const filePath = nonEmpty;

/** Kept as written (it reads best in logs); consumers call `parseListenAddr` from `duration.ts`. */
const listenAddr = z.string().superRefine((text, ctx) => {
  const result = readHostPort(text, { emptyHost: ALL_INTERFACES, minPort: 0 });
  if (!result.ok) ctx.addIssue({ code: 'custom', message: result.problem, input: text });
});

const durationInput = z.custom<string | number>(
  (value) => typeof value === 'string' || typeof value === 'number',
  'expected a duration such as 500ms, 10s, 5m, 1h, or a number of milliseconds',
);
const durationSchema = durationInput.transform((value, ctx) => {
  const result = readDuration(value);
  if (result.ok) return result.value;
  ctx.addIssue({ code: 'custom', message: result.problem, input: value });
  return z.NEVER;
});

/** A duration in milliseconds; `fallback` is written the way a user would write it. */
function duration(fallback: string) {
  return durationSchema.prefault(fallback);
}

/** Runs a cross-key rule even when some keys of the object are invalid, so all problems show. */
const whenObject = {
  when: (payload: { value: unknown }) =>
    typeof payload.value === 'object' && payload.value !== null,
};

type Ctx = z.RefinementCtx<unknown>;

function bothOrNeither(value: Record<string, unknown>, ctx: Ctx, a: string, b: string): void {
  for (const [present, missing] of [
    [a, b],
    [b, a],
  ] as const) {
    if (value[present] !== undefined && value[missing] === undefined) {
      ctx.addIssue({
        code: 'custom',
        path: [missing],
        message: `is required when ${present} is set`,
        input: undefined,
      });
    }
  }
}

function longerThan(
  value: Record<string, unknown>,
  ctx: Ctx,
  rule: { longer: string; shorter: string; allowEqual: boolean },
): void {
  const longer = value[rule.longer];
  const shorter = value[rule.shorter];
  if (typeof longer !== 'number' || typeof shorter !== 'number') return;
  if (longer > shorter || (rule.allowEqual && longer === shorter)) return;
  ctx.addIssue({
    code: 'custom',
    path: [rule.longer],
    message: `must be ${rule.allowEqual ? 'at least' : 'longer than'} ${rule.shorter} (${formatDuration(shorter)}), got ${formatDuration(longer)}`,
    input: longer,
  });
}

const heartbeatSchema = z
  .strictObject({ interval: duration('10s'), timeout: duration('30s') })
  .superRefine(
    (value, ctx) =>
      longerThan(value, ctx, { longer: 'timeout', shorter: 'interval', allowEqual: false }),
    whenObject,
  );

const groupSchema = z.strictObject({ id: groupId, password: secret });

const groupsSchema = z.array(groupSchema).superRefine(
  (groups, ctx) => {
    const firstIndex = new Map<unknown, number>();
    groups.forEach((group: { id?: unknown }, index) => {
      if (typeof group?.id !== 'string') return;
      const first = firstIndex.get(group.id);
      if (first === undefined) {
        firstIndex.set(group.id, index);
        return;
      }
      ctx.addIssue({
        code: 'custom',
        path: [index, 'id'],
        message: `duplicate group id "${group.id}" (first at groups[${first}])`,
        input: group.id,
      });
    });
  },
  { when: (payload) => Array.isArray(payload.value) },
);

const logSchema = z.strictObject({
  level: z.enum(['debug', 'info', 'warn', 'error']).default('info'),
  format: z.enum(['pretty', 'json']).default('pretty'),
});

const sourceRange = z.string().superRefine((text, ctx) => {
  const result = readSourceRange(text);
  if (!result.ok) ctx.addIssue({ code: 'custom', message: result.problem, input: text });
});

/** Keys every proxy listener has: where it listens and who may use it. */
const proxyListenerKeys = {
  listen_addr: listenAddr.optional(),
  // An empty list would read as "nobody" to one operator and "everybody" to another: refused.
  allowed_sources: z
    .array(sourceRange)
    .min(1, 'must list at least one address or CIDR range; remove the key to accept every source')
    .optional(),
  no_auth_group: groupId.optional(),
};

/** `no_auth_group` serves users without a password, so only ever to a listed set of sources. */
function noAuthNeedsSources(value: Record<string, unknown>, ctx: Ctx): void {
  if (value.no_auth_group === undefined || value.allowed_sources !== undefined) return;
  ctx.addIssue({
    code: 'custom',
    path: ['allowed_sources'],
    message: `is required when no_auth_group is set: without it anyone who reaches this listener could use group ${JSON.stringify(value.no_auth_group)} without a password (an open proxy)`,
    input: undefined,
  });
}

/**
 * A no-auth group must be declared with a password: an undeclared group is bound by whichever
 * client announces it first, and that client would receive the listener's users unchecked.
 */
function noAuthGroupsDeclared(value: Record<string, unknown>, ctx: Ctx): void {
  const proxy = value.proxy;
  if (typeof proxy !== 'object' || proxy === null || !Array.isArray(value.groups)) return;
  const declared = new Set(value.groups.map((group: { id?: unknown }) => group?.id));
  for (const kind of ['socks5', 'http', 'https'] as const) {
    const group = (proxy as Record<string, { no_auth_group?: unknown } | undefined>)[kind]
      ?.no_auth_group;
    if (typeof group !== 'string' || declared.has(group)) continue;
    ctx.addIssue({
      code: 'custom',
      path: ['proxy', kind, 'no_auth_group'],
      message: `group ${JSON.stringify(group)} is not declared in gateway.groups; declare it with a password, or the first client to announce it would receive this listener's users`,
      input: group,
    });
  }
}

const gatewaySchema = z
  .strictObject({
    listen_addr: listenAddr.default(':8443'),
    tls_cert: filePath.optional(),
    tls_key: filePath.optional(),
    auth_username: secret.optional(),
    auth_password: secret.optional(),
    heartbeat: heartbeatSchema.prefault({}),
    handshake_timeout: duration('10s'),
    drain_timeout: duration('10s'),
    open_timeout: duration('15s'),
    proxy: z
      .strictObject({
        socks5: z
          .strictObject(proxyListenerKeys)
          .superRefine((value, ctx) => noAuthNeedsSources(value, ctx), whenObject)
          .prefault({}),
        http: z
          .strictObject(proxyListenerKeys)
          .superRefine((value, ctx) => noAuthNeedsSources(value, ctx), whenObject)
          .prefault({}),
        https: z
          .strictObject({
            ...proxyListenerKeys,
            tls_cert: filePath.optional(),
            tls_key: filePath.optional(),
          })
          .superRefine((value, ctx) => {
            bothOrNeither(value, ctx, 'tls_cert', 'tls_key');
            noAuthNeedsSources(value, ctx);
          }, whenObject)
          .prefault({}),
      })
      .prefault({}),
    groups: groupsSchema.default([]),
  })
  .superRefine((value, ctx) => {
    bothOrNeither(value, ctx, 'tls_cert', 'tls_key');
    bothOrNeither(value, ctx, 'auth_username', 'auth_password');
    noAuthGroupsDeclared(value, ctx);
  }, whenObject);

const gatewayAddr = z.string().transform(fromRead(readGatewayUrl));

const clientGatewaySchema = z
  .strictObject({
    addr: z.union([gatewayAddr, z.array(gatewayAddr).min(1, 'must list at least one gateway')]),
    tls_cert: filePath.optional(),
    tls_fingerprint: z.string().transform(fromRead(readFingerprint)).optional(),
    auth_username: secret.optional(),
    auth_password: secret.optional(),
  })
  .superRefine(
    (value, ctx) => bothOrNeither(value, ctx, 'auth_username', 'auth_password'),
    whenObject,
  )
  .transform(({ addr, ...rest }) => ({ urls: typeof addr === 'string' ? [addr] : addr, ...rest }));

const reconnectSchema = z
  .strictObject({ initial_delay: duration('500ms'), max_delay: duration('30s') })
  .superRefine(
    (value, ctx) =>
      longerThan(value, ctx, { longer: 'max_delay', shorter: 'initial_delay', allowEqual: true }),
    whenObject,
  );

/** `${hostname}-${6 hex digits}`: unique per process, recognisable in the gateway's logs. */
function defaultClientId(): string {
  return `${hostname().slice(0, MAX_ID_LENGTH - 7)}-${randomBytes(3).toString('hex')}`;
}

const clientSchema = z.strictObject({
  id: nonEmpty
    .max(MAX_ID_LENGTH, `must be at most ${MAX_ID_LENGTH} characters`)
    .default(defaultClientId),
  group_id: groupId,
  group_password: secret,
  replicas: z
    .number()
    .int('must be a whole number')
    .min(1, 'must be at least 1')
    .max(16, 'must be at most 16')
    .default(1),
  // An absent gateway section is validated as empty, so the missing addr is reported by its name.
  gateway: clientGatewaySchema.prefault({} as z.input<typeof clientGatewaySchema>),
  heartbeat: heartbeatSchema.prefault({}),
  reconnect: reconnectSchema.prefault({}),
  allowed_hosts: z.array(nonEmpty).default([]),
  forbidden_hosts: z.array(nonEmpty).default([]),
  dial_timeout: duration('10s'),
  drain_timeout: duration('10s'),
});

export const configSchema = z
  .strictObject({
    log: logSchema.prefault({}),
    gateway: gatewaySchema.optional(),
    client: clientSchema.optional(),
  })
  .superRefine((value, ctx) => {
    if (value.gateway === undefined && value.client === undefined) {
      ctx.addIssue({
        code: 'custom',
        path: [],
        message: 'needs a gateway section, a client section, or both',
        input: value,
      });
    }
  }, whenObject);

/** A whole configuration, every default applied. */
export type PosternConfig = z.output<typeof configSchema>;
/** The `log` section. */
export type LogConfig = PosternConfig['log'];
/** The `gateway` section; durations are milliseconds, `listen_addr` is as written. */
export type GatewayConfig = NonNullable<PosternConfig['gateway']>;
/** The `client` section; `gateway.addr` arrives normalised as `gateway.urls`. */
export type ClientConfig = NonNullable<PosternConfig['client']>;
