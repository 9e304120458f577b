/**
 * The live tunnel sessions, by group and by client replica, and the router that picks one
 * for each new user connection.
 */
import { EventEmitter } from 'node:events';
import { isPosternError, PosternError } from '../errors.js';
import { Reason } from '../tunnel/constants.js';
import type { OpenStreamOptions, Session } from '../tunnel/session.js';
import type { StreamTarget, TunnelStream } from '../tunnel/stream.js';

export interface ClientSession {
  session: Session;
  clientId: string;
  replica: number;
  groupId: string;
}

/** Open failures that mean "this client could not take it", so another client may. */
const RETRYABLE = new Set<number>([Reason.GOING_AWAY, Reason.SESSION_CLOSED]);

export class SessionRegistry extends EventEmitter {
  #byGroup = new Map<string, Set<ClientSession>>();
  #byReplica = new Map<string, ClientSession>();

  /**
   * Adds an authenticated session. A session of the same client replica is replaced: it is
   * removed from routing at once and returned so its owner can close it. Either way listeners
   * hear one 'change', after the registry holds the new session.
   */
  add(entry: ClientSession): ClientSession | undefined {
    if (entry.session.state === 'closed') return undefined;
    const key = replicaKey(entry);
    const previous = this.#byReplica.get(key);
    if (previous) this.#remove(previous, false);
    this.#byReplica.set(key, entry);
    let group = this.#byGroup.get(entry.groupId);
    if (!group) {
      group = new Set();
      this.#byGroup.set(entry.groupId, group);
    }
    group.add(entry);
    entry.session.once('close', () => this.#remove(entry));
    this.emit('change');
    return previous;
  }

  get size(): number {
    return this.#byReplica.size;
  }

  /** Every registered session. */
  entries(): ClientSession[] {
    return [...this.#byReplica.values()];
  }

  /** Streams open or opening on all sessions. */
  get openStreamCount(): number {
    let total = 0;
    for (const entry of this.#byReplica.values()) total += entry.session.openStreamCount;
    return total;
  }

  hasGroup(groupId: string): boolean {
    return (this.#byGroup.get(groupId)?.size ?? 0) > 0;
  }

  /** The group's accepting session with the fewest open streams; ties broken at random. */
  pick(groupId: string, exclude: ReadonlySet<Session> = new Set()): Session | undefined {
    let best: Session[] = [];
    let fewest = Number.POSITIVE_INFINITY;
    for (const { session } of this.#byGroup.get(groupId) ?? []) {
      if (!session.acceptingStreams || exclude.has(session)) continue;
      const count = session.openStreamCount;
      if (count < fewest) {
        fewest = count;
        best = [session];
      } else if (count === fewest) {
        best.push(session);
      }
    }
    return best[Math.floor(Math.random() * best.length)];
  }

  /**
   * Opens a stream through some client of the group. When the chosen client is gone or going
   * away before it answers, another one is tried. Rejects with a PosternError whose `reason`
   * says what the user should be told.
   */
  async open(
    groupId: string,
    target: StreamTarget,
    options: OpenStreamOptions,
  ): Promise<TunnelStream> {
    const tried = new Set<Session>();
    for (;;) {
      const session = this.pick(groupId, tried);
      if (!session) {
        throw new PosternError(
          'POSTERN_ERR_NO_ROUTE',
          tried.size === 0
            ? `no client of group "${groupId}" is connected`
            : `every client of group "${groupId}" went away during the open`,
          { reason: Reason.INTERNAL_ERROR },
        );
      }
      try {
        return await session.openStream(target, options);
      } catch (err) {
        if (!isPosternError(err) || err.reason === undefined || !RETRYABLE.has(err.reason))
          throw err;
        tried.add(session);
      }
    }
  }

  /** Drops `entry` from routing; `announce` is false when `add` announces the change itself. */
  #remove(entry: ClientSession, announce = true): void {
    const key = replicaKey(entry);
    if (this.#byReplica.get(key) === entry) this.#byReplica.delete(key);
    const group = this.#byGroup.get(entry.groupId);
    if (!group?.delete(entry)) return;
    if (group.size === 0) this.#byGroup.delete(entry.groupId);
    if (announce) this.emit('change');
  }
}

function replicaKey(entry: ClientSession): string {
  return `${entry.groupId}\u0000${entry.clientId}\u0000${entry.replica}`;
}
