/**
 * Loads a configuration from a YAML file, then `POSTERN_*` environment variables, then overrides
 * (command-line flags), and validates the result once, reporting every problem by its key path.
 */
import { readFileSync } from 'node:fs';
import { isMap, isScalar, isSeq, LineCounter, parseDocument } from 'yaml';
import { z } from 'zod';
import { PosternError } from '../errors.js';
import type { Read } from './duration.js';
import {
  type ClientConfig,
  configSchema,
  type GatewayConfig,
  type PosternConfig,
} from './schema.js';

/** One problem, named by its key path (`gateway.groups[1].id`), variable or file. */
export interface ConfigIssue {
  path: string;
  message: string;
}

/** An invalid configuration; `message` lists every issue, one `path: problem` per line. */
export class ConfigError extends PosternError {
  readonly issues: readonly ConfigIssue[];

  constructor(issues: readonly ConfigIssue[], options?: { cause?: unknown }) {
    super(
      'POSTERN_ERR_CONFIG',
      issues.map((issue) => `${issue.path}: ${issue.message}`).join('\n'),
      options,
    );
    this.name = 'ConfigError';
    this.issues = issues;
  }
}

export type OverrideValue = string | string[] | number | undefined;

export interface LoadConfigOptions {
  /** YAML file to read first. */
  file?: string;
  /** Environment to read `POSTERN_*` variables from; `process.env` when omitted. */
  env?: Record<string, string | undefined>;
  /**
   * Values by dotted key path (`client.group_id`), applied last. A string is read like an
   * environment variable (lists split at commas, `gateway.groups` as JSON, numbers parsed);
   * arrays and numbers are taken as they are; `undefined` is ignored.
   */
  overrides?: Record<string, OverrideValue>;
  /**
   * Sections the caller runs (`postern gateway` needs `gateway`): created with their defaults
   * when no source mentions them. Without this, the configuration must have at least one section.
   */
  sections?: readonly ('gateway' | 'client')[];
}

type LeafKind = 'text' | 'number' | 'list' | 'json';

interface Leaf {
  path: string;
  segments: string[];
  kind: LeafKind;
  env: string;
}

const ENV_PREFIX = 'POSTERN_';
const ROOT_PATH = 'config';
const COMMAND_LINE = 'the command line';

const { leaves: LEAVES, objectKeys: OBJECT_KEYS } = describeSchema(configSchema);
const LEAF_BY_PATH = new Map(LEAVES.map((leaf) => [leaf.path, leaf]));
const LEAF_BY_ENV = new Map(LEAVES.map((leaf) => [leaf.env, leaf]));

/** Every environment variable Postern reads, with the key it sets. */
export const ENV_KEYS: readonly { env: string; path: string }[] = LEAVES.map(({ env, path }) => ({
  env,
  path,
}));

/**
 * Builds the configuration: file < environment < overrides, then one validation.
 *
 * @throws ConfigError listing every problem: an unreadable file or YAML syntax error (with its
 *   line), unknown variables or keys, and every value the schema refuses.
 */
export function loadConfig(options: LoadConfigOptions = {}): PosternConfig {
  const issues: ConfigIssue[] = [];
  /** Where each leaf set by a variable or an override came from, to name it in messages. */
  const origins = new Map<string, string>();
  let tree: Record<string, unknown> = {};
  let fileLine: ((segments: readonly PropertyKey[]) => string | undefined) | undefined;
  let cause: unknown;

  if (options.file !== undefined) {
    const read = readConfigFile(options.file);
    if (read.ok) {
      tree = read.tree;
      fileLine = read.lineOf;
    } else {
      issues.push(...read.issues);
      cause = read.cause;
    }
  }
  const fileUnreadable = issues.length > 0;

  const assign = (leaf: Leaf, value: Read<unknown>, origin: string, name: string): void => {
    if (value.ok) {
      setLeaf(tree, leaf.segments, value.value);
      origins.set(leaf.path, origin);
    } else {
      const from = name === origin ? '' : ` (from ${origin})`;
      issues.push({ path: name, message: `${value.problem}${from}` });
    }
  };

  for (const [name, text] of Object.entries(options.env ?? process.env)) {
    // An empty variable counts as unset, as `VAR=` in a shell or compose file intends.
    if (!name.startsWith(ENV_PREFIX) || text === undefined || text === '') continue;
    const leaf = LEAF_BY_ENV.get(name);
    if (leaf === undefined) {
      const hint = suggestion(name, LEAF_BY_ENV.keys());
      issues.push({ path: name, message: `unknown environment variable${hint}` });
    } else {
      assign(leaf, fromText(leaf, text), name, name);
    }
  }

  for (const [path, override] of Object.entries(options.overrides ?? {})) {
    if (override === undefined) continue;
    const leaf = LEAF_BY_PATH.get(path);
    if (leaf === undefined) {
      const hint = suggestion(path, LEAF_BY_PATH.keys());
      issues.push({ path, message: `unknown configuration key${hint}` });
    } else {
      const value = typeof override === 'string' ? fromText(leaf, override) : ok(override);
      assign(leaf, value, COMMAND_LINE, path);
    }
  }

  // Validating what could not be read would only add misleading "is required" messages.
  if (fileUnreadable) throw new ConfigError(issues, { cause });

  for (const section of options.sections ?? []) {
    tree[section] ??= {};
  }
  const result = configSchema.safeParse(tree, { reportInput: true });
  if (result.success && issues.length === 0) return result.data;
  if (!result.success) {
    for (const problem of flattenIssues(result.error.issues, [])) {
      const path = formatPath(problem.segments);
      const origin = originOf(path, origins);
      const where = origin === undefined ? fileLine?.(problem.segments) : `from ${origin}`;
      issues.push({
        path,
        message: where === undefined ? problem.message : `${problem.message} (${where})`,
      });
    }
  }
  throw new ConfigError(issues);
}

/**
 * One line for `postern check-config`, e.g.
 * `ok: gateway on :8443 (socks5 127.0.0.1:1080), client "x" in group "g" -> wss://gw:8443/tunnel (1 replica)`.
 */
export function describeConfig(config: PosternConfig): string {
  const parts: string[] = [];
  if (config.gateway !== undefined) parts.push(describeGateway(config.gateway));
  if (config.client !== undefined) parts.push(describeClient(config.client));
  return `ok: ${parts.join(', ')}`;
}

function describeGateway(gateway: GatewayConfig): string {
  const socks5 = `${gateway.proxy.socks5.listen_addr ?? 'off'}${noAuthNote(gateway.proxy.socks5)}`;
  // The HTTP proxies are named only when on, so the common line stays short.
  const httpProxies = (['http', 'https'] as const)
    .filter((kind) => gateway.proxy[kind].listen_addr !== undefined)
    .map((kind) => `, ${kind} ${gateway.proxy[kind].listen_addr}${noAuthNote(gateway.proxy[kind])}`)
    .join('');
  const groups = gateway.groups.length === 0 ? '' : `, ${plural(gateway.groups.length, 'group')}`;
  return `gateway on ${gateway.listen_addr} (socks5 ${socks5}${httpProxies}${groups})`;
}

/** ` no-auth "office"` for a listener that serves a group without credentials, else ''. */
function noAuthNote(listener: { no_auth_group?: string | undefined }): string {
  return listener.no_auth_group === undefined ? '' : ` no-auth "${listener.no_auth_group}"`;
}

function describeClient(client: ClientConfig): string {
  return `client "${client.id}" in group "${client.group_id}" -> ${client.gateway.urls.join(', ')} (${plural(client.replicas, 'replica')})`;
}

function plural(count: number, noun: string): string {
  return `${count} ${noun}${count === 1 ? '' : 's'}`;
}

function ok<T>(value: T): Read<T> {
  return { ok: true, value };
}

/** Reads a variable's or flag's text the way its key expects. */
function fromText(leaf: Leaf, text: string): Read<unknown> {
  switch (leaf.kind) {
    case 'text':
      return ok(text);
    case 'number':
      return ok(/^-?\d+(?:\.\d+)?$/.test(text.trim()) ? Number(text) : text);
    case 'list':
      return ok(
        text
          .split(',')
          .map((entry) => entry.trim())
          .filter((entry) => entry !== ''),
      );
    case 'json':
      try {
        return ok(JSON.parse(text));
      } catch (err) {
        if (!(err instanceof SyntaxError)) throw err;
        return {
          ok: false,
          problem: `must be JSON, e.g. [{"id":"team","password":"secret"}] (${err.message})`,
        };
      }
  }
}

type FileRead =
  | {
      ok: true;
      tree: Record<string, unknown>;
      lineOf: (segments: readonly PropertyKey[]) => string | undefined;
    }
  | { ok: false; issues: ConfigIssue[]; cause?: unknown };

const FILE_PROBLEMS: Record<string, string> = {
  ENOENT: 'file not found',
  EACCES: 'permission denied',
  EISDIR: 'is a directory, not a file',
};

function readConfigFile(file: string): FileRead {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    if (!(err instanceof Error) || !('code' in err) || typeof err.code !== 'string') throw err;
    const problem = FILE_PROBLEMS[err.code] ?? `cannot be read: ${err.message}`;
    return { ok: false, issues: [{ path: file, message: problem }], cause: err };
  }
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter });
  const yamlProblems = [...doc.errors, ...doc.warnings];
  if (yamlProblems.length > 0) {
    return {
      ok: false,
      issues: yamlProblems.map((problem) => ({
        path: file,
        // The first line reads "<what> at line L, column C:"; the rest is a source excerpt.
        message: `YAML syntax error: ${problem.message.split('\n')[0]!.replace(/:$/, '')}`,
      })),
      cause: yamlProblems[0],
    };
  }
  const data: unknown = doc.toJS() ?? {};
  if (!isRecord(data)) {
    return {
      ok: false,
      issues: [
        { path: file, message: 'must hold a mapping with log, gateway and/or client sections' },
      ],
    };
  }
  const lineOf = (segments: readonly PropertyKey[]): string | undefined => {
    let node: unknown = doc.contents;
    let offset: number | undefined;
    for (const segment of segments) {
      if (isMap(node)) {
        const pair = node.items.find(
          (item) => isScalar(item.key) && String(item.key.value) === segment,
        );
        if (pair === undefined || !isScalar(pair.key)) break;
        offset = pair.key.range?.[0];
        node = pair.value;
      } else if (isSeq(node) && typeof segment === 'number') {
        const item = node.items[segment];
        if (!isMap(item) && !isScalar(item)) break;
        offset = item.range?.[0];
        node = item;
      } else {
        break;
      }
    }
    return offset === undefined ? undefined : `${file}:${lineCounter.linePos(offset).line}`;
  };
  return { ok: true, tree: withoutEmptyValues(data, []), lineOf };
}

/**
 * YAML writes "no value" as `key:`. An empty section means the section with its defaults; an
 * empty key means the key is unset. Unknown keys keep their null so they are still reported.
 */
function withoutEmptyValues(
  record: Record<string, unknown>,
  path: string[],
): Record<string, unknown> {
  const result: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(record)) {
    const childPath = [...path, key];
    const pattern = childPath.join('.');
    if (value === null && OBJECT_KEYS.has(pattern)) result[key] = {};
    else if (value === null && LEAF_BY_PATH.has(pattern)) continue;
    else if (isRecord(value)) result[key] = withoutEmptyValues(value, childPath);
    else result[key] = value;
  }
  return result;
}

/** Sets a leaf, creating the sections on its path; a section of the wrong type is left for the schema to report. */
function setLeaf(tree: Record<string, unknown>, segments: readonly string[], value: unknown): void {
  let node = tree;
  for (const segment of segments.slice(0, -1)) {
    const child = node[segment];
    if (child === undefined || child === null) node[segment] = {};
    else if (!isRecord(child)) return;
    node = node[segment] as Record<string, unknown>;
  }
  node[segments.at(-1)!] = value;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

interface Problem {
  segments: PropertyKey[];
  message: string;
}

/** Turns zod issues into one message per key, in words that name the key and the fix. */
function flattenIssues(
  issues: readonly z.core.$ZodIssue[],
  base: readonly PropertyKey[],
): Problem[] {
  return issues.flatMap((issue): Problem[] => {
    const segments = [...base, ...issue.path];
    switch (issue.code) {
      case 'unrecognized_keys': {
        const known = OBJECT_KEYS.get(objectPattern(segments)) ?? [];
        return issue.keys.map((key) => ({
          segments: [...segments, key],
          message: `unknown key${suggestion(key, known)}`,
        }));
      }
      case 'invalid_union': {
        // A branch that failed only on its type at the top did not match; report the one that did.
        const matching = issue.errors.filter(
          (branch) =>
            !branch.every((inner) => inner.code === 'invalid_type' && inner.path.length === 0),
        );
        if (matching.length === 1) return flattenIssues(matching[0]!, segments);
        if (issue.input === undefined) return [{ segments, message: 'is required' }];
        const expected = issue.errors.flatMap((branch) =>
          branch.flatMap((inner) => (inner.code === 'invalid_type' ? [inner.expected] : [])),
        );
        const names = expected.map(expectedName).join(' or ');
        return [{ segments, message: `expected ${names}, got ${typeName(issue.input)}` }];
      }
      case 'invalid_type':
        if (issue.input === undefined) return [{ segments, message: 'is required' }];
        return [{ segments, message: typeMismatch(issue.expected, issue.input) }];
      case 'invalid_value':
        return [
          {
            segments,
            message: `must be one of ${issue.values.map(String).join(', ')}, got ${JSON.stringify(issue.input)}`,
          },
        ];
      default:
        return [{ segments, message: issue.message }];
    }
  });
}

function typeMismatch(expected: string, input: unknown): string {
  const quoteHint =
    expected === 'string' && (typeof input === 'number' || typeof input === 'boolean')
      ? ' (put the value in quotes)'
      : '';
  return `expected ${expectedName(expected)}, got ${typeName(input)}${quoteHint}`;
}

/** Zod's type names in the words a YAML author uses. */
function expectedName(expected: string): string {
  if (expected === 'array') return 'a list';
  if (expected === 'object') return 'a mapping';
  return `a ${expected}`;
}

function typeName(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'a list';
  if (typeof value === 'object') return 'a mapping';
  return `${typeof value} ${JSON.stringify(value)}`;
}

/** `['gateway', 'groups', 1, 'id']` → `gateway.groups[1].id`. */
function formatPath(segments: readonly PropertyKey[]): string {
  let path = '';
  for (const segment of segments) {
    if (typeof segment === 'number') path += `[${segment}]`;
    else path += path === '' ? String(segment) : `.${String(segment)}`;
  }
  return path === '' ? ROOT_PATH : path;
}

/** `['gateway', 'groups', 1]` → `gateway.groups[]`: the key under which the schema's object keys are kept. */
function objectPattern(segments: readonly PropertyKey[]): string {
  return segments
    .map((segment) => (typeof segment === 'number' ? '[]' : String(segment)))
    .join('.')
    .replaceAll('.[]', '[]');
}

/** The variable or flag that set `path`, or the leaf holding it (`gateway.groups` for `gateway.groups[1].id`). */
function originOf(path: string, origins: ReadonlyMap<string, string>): string | undefined {
  for (const [leaf, origin] of origins) {
    if (path === leaf || path.startsWith(`${leaf}.`) || path.startsWith(`${leaf}[`)) return origin;
  }
  return undefined;
}

/** ` (did you mean "X"?)` when one candidate is a likely typo of `word`, else ''. */
function suggestion(word: string, candidates: Iterable<string>): string {
  let best: string | undefined;
  let bestDistance = Math.max(1, Math.min(3, Math.floor(word.length / 3)));
  for (const candidate of candidates) {
    const distance = editDistance(word, candidate);
    if (distance <= bestDistance) {
      best = candidate;
      bestDistance = distance;
    }
  }
  return best === undefined ? '' : ` (did you mean "${best}"?)`;
}

function editDistance(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, index) => index);
  for (let i = 1; i <= a.length; i++) {
    const current = [i];
    for (let j = 1; j <= b.length; j++) {
      const substitution = previous[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1);
      current[j] = Math.min(previous[j]! + 1, current[j - 1]! + 1, substitution);
    }
    previous = current;
  }
  return previous[b.length]!;
}

/**
 * Reads the schema's shape: its leaves (each settable by variable and override) and the keys of
 * each object (for typo suggestions), so neither list can drift from the schema.
 */
function describeSchema(schema: z.core.$ZodType): {
  leaves: Leaf[];
  objectKeys: Map<string, string[]>;
} {
  const leaves: Leaf[] = [];
  const objectKeys = new Map<string, string[]>();
  const visit = (node: z.core.$ZodType, segments: string[]): void => {
    const inner = unwrap(node);
    if (inner instanceof z.ZodObject) {
      objectKeys.set(segments.join('.'), Object.keys(inner.shape));
      for (const [key, child] of Object.entries(inner.shape)) visit(child, [...segments, key]);
      return;
    }
    const element = inner instanceof z.ZodArray ? unwrap(inner.element) : undefined;
    if (element instanceof z.ZodObject)
      objectKeys.set(`${segments.join('.')}[]`, Object.keys(element.shape));
    leaves.push({
      path: segments.join('.'),
      segments,
      kind: leafKind(inner, element),
      env: `${ENV_PREFIX}${segments.join('_').toUpperCase()}`,
    });
  };
  visit(schema, []);
  if (new Set(leaves.map((leaf) => leaf.env)).size !== leaves.length) {
    throw new Error('two configuration keys map to the same environment variable');
  }
  return { leaves, objectKeys };
}

function leafKind(node: z.core.$ZodType, arrayElement: z.core.$ZodType | undefined): LeafKind {
  if (arrayElement instanceof z.ZodObject) return 'json';
  if (node instanceof z.ZodArray) return 'list';
  if (node instanceof z.ZodUnion && node.options.some((option) => option instanceof z.ZodArray)) {
    return 'list';
  }
  if (node instanceof z.ZodNumber) return 'number';
  return 'text';
}

/** Looks through optional, default and transform wrappers to the schema that reads the input. */
function unwrap(node: z.core.$ZodType): z.core.$ZodType {
  let current = node;
  for (;;) {
    if (
      current instanceof z.ZodOptional ||
      current instanceof z.ZodDefault ||
      current instanceof z.ZodPrefault
    ) {
      current = current.unwrap();
    } else if (current instanceof z.ZodPipe) {
      current = current.in;
    } else {
      return current;
    }
  }
}
