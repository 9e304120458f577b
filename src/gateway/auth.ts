/**
 * Who may use the gateway: the gateway's own credentials for tunnel clients, group passwords
 * (bound by the first client of a group, stored as salted scrypt hashes), and a per-address
 * limiter that slows down repeated failures.
 */
import { createHash, randomBytes, scrypt, timingSafeEqual } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { abortSignalFor, type CancelSignal } from '../tunnel/cancellation.js';

const scryptAsync = promisify(scrypt) as (
  password: string,
  salt: Buffer,
  keylen: number,
) => Promise<Buffer>;
const HASH_LENGTH = 32;

/** Constant-time string comparison (hashing first makes the lengths equal). */
export function safeEqual(a: string, b: string): boolean {
  const da = createHash('sha256').update(a, 'utf8').digest();
  const db = createHash('sha256').update(b, 'utf8').digest();
  return timingSafeEqual(da, db);
}

interface GroupSecret {
  salt: Buffer;
  hash: Buffer;
}

export type GroupCheck = 'ok' | 'mismatch' | 'unknown';

export interface GroupAuthorityOptions {
  authUsername?: string | undefined;
  authPassword?: string | undefined;
  groups: readonly { id: string; password: string }[];
}

export class GroupAuthority {
  #authUsername: string | undefined;
  #authPassword: string | undefined;
  /** Promises, so two clients binding the same new group at once cannot both win. */
  #groups = new Map<string, Promise<GroupSecret>>();
  /** Tags of passwords already verified by scrypt, so proxy users do not pay scrypt per connection. */
  #verified = new Map<string, Set<string>>();
  #cacheKey = randomBytes(32);
  /**
   * SHA-256 already fed with the secret `#cacheKey`: a tag is a copy of it fed with the password,
   * so the cache holds no password and looking one up tells nothing by its timing. Copying a
   * started hash costs under half of a new HMAC (0.8 against 1.9 µs alone; about 10 against 17 µs
   * per connection in a busy gateway, docs/performance.md).
   */
  #tagPrefix = createHash('sha256').update(this.#cacheKey);

  constructor(options: GroupAuthorityOptions) {
    this.#authUsername = options.authUsername;
    this.#authPassword = options.authPassword;
    for (const group of options.groups) this.#groups.set(group.id, hashPassword(group.password));
  }

  /** The credentials a tunnel client must present; true when none are configured. */
  checkGatewayCredentials(username: string | undefined, password: string | undefined): boolean {
    if (this.#authUsername === undefined || this.#authPassword === undefined) return true;
    const userOk = safeEqual(username ?? '', this.#authUsername);
    const passOk = safeEqual(password ?? '', this.#authPassword);
    return userOk && passOk;
  }

  /**
   * Checks a group password. With `bind`, an unknown group is created with this password
   * (the first client of a group binds it); later clients must present the same one.
   */
  async checkGroup(groupId: string, password: string, bind: boolean): Promise<GroupCheck> {
    let secret = this.#groups.get(groupId);
    if (!secret) {
      if (!bind) {
        // Pay the same scrypt as a known group, so timing does not tell which groups exist.
        await scryptAsync(password, this.#cacheKey, HASH_LENGTH);
        return 'unknown';
      }
      secret = hashPassword(password);
      this.#groups.set(groupId, secret);
    }
    const tag = this.#tagPrefix.copy().update(password, 'utf8').digest('base64');
    if (this.#verified.get(groupId)?.has(tag)) return 'ok';
    const { salt, hash } = await secret;
    const candidate = await scryptAsync(password, salt, HASH_LENGTH);
    if (!timingSafeEqual(candidate, hash)) return 'mismatch';
    let tags = this.#verified.get(groupId);
    if (!tags) {
      tags = new Set();
      this.#verified.set(groupId, tags);
    }
    tags.add(tag);
    return 'ok';
  }
}

async function hashPassword(password: string): Promise<GroupSecret> {
  const salt = randomBytes(16);
  return { salt, hash: await scryptAsync(password, salt, HASH_LENGTH) };
}

export interface FailureLimiterOptions {
  /** Failures allowed in `windowMs` before answers are delayed. */
  freeFailures: number;
  windowMs: number;
  maxDelayMs: number;
  /** Failures in `windowMs` after which the address is refused outright. */
  blockAfter: number;
  /** Addresses remembered at most; the oldest are forgotten first. */
  maxAddresses: number;
}

const DEFAULT_LIMITER: FailureLimiterOptions = {
  freeFailures: 5,
  windowMs: 60_000,
  maxDelayMs: 5_000,
  blockAfter: 20,
  maxAddresses: 10_000,
};

/** Slows down sources that keep failing authentication. */
export class FailureLimiter {
  #options: FailureLimiterOptions;
  #failures = new Map<string, { count: number; since: number }>();

  constructor(options: Partial<FailureLimiterOptions> = {}) {
    this.#options = { ...DEFAULT_LIMITER, ...options };
  }

  /** True once an address has failed so often that it is refused without a check. */
  isBlocked(address: string): boolean {
    const entry = this.#current(address);
    return entry !== undefined && entry.count >= this.#options.blockAfter;
  }

  /** How long to wait before answering this address. */
  delayFor(address: string): number {
    const entry = this.#current(address);
    if (!entry || entry.count < this.#options.freeFailures) return 0;
    const excess = entry.count - this.#options.freeFailures;
    return Math.min(this.#options.maxDelayMs, 100 * 2 ** Math.min(excess, 16));
  }

  /**
   * Waits out the penalty for `address`. The wait ends early (rejecting with an AbortError) when
   * `stop` aborts or is cancelled or, given as milliseconds, once that long has passed; the
   * signal or timer for that is only made when there is a penalty, as most connections have none.
   */
  async wait(address: string, stop: AbortSignal | CancelSignal | number): Promise<void> {
    const delay = this.delayFor(address);
    if (delay === 0) return;
    if (typeof stop === 'number' || stop instanceof AbortSignal) {
      const signal = typeof stop === 'number' ? AbortSignal.timeout(stop) : stop;
      await sleep(delay, undefined, { signal });
      return;
    }
    const { signal, dispose } = abortSignalFor(stop);
    try {
      await sleep(delay, undefined, { signal });
    } finally {
      dispose();
    }
  }

  recordFailure(address: string): void {
    const entry = this.#current(address);
    if (entry) {
      entry.count += 1;
      return;
    }
    if (this.#failures.size >= this.#options.maxAddresses) {
      const oldest = this.#failures.keys().next().value;
      if (oldest !== undefined) this.#failures.delete(oldest);
    }
    this.#failures.set(address, { count: 1, since: Date.now() });
  }

  recordSuccess(address: string): void {
    this.#failures.delete(address);
  }

  #current(address: string): { count: number; since: number } | undefined {
    const entry = this.#failures.get(address);
    if (entry && Date.now() - entry.since > this.#options.windowMs) {
      this.#failures.delete(address);
      return undefined;
    }
    return entry;
  }
}
