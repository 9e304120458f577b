/**
 * Who may connect to a front door at all: `allowed_sources`, a list of IP addresses and CIDR
 * ranges. A connection from anywhere else is closed as it is accepted, before the protocol
 * behind the listener sees it or reads a byte.
 *
 * Refusals are logged at info, at most {@link REFUSAL_LINES_PER_WINDOW} lines per listener per
 * {@link REFUSAL_WINDOW_MS}; the rest go to debug and are counted in the next info line. An
 * operator whose own address is missing from the list sees it at once, and a port scan or a
 * flood of connections costs a few lines a minute, not one line per packet.
 */
import { BlockList, isIPv4, type Server, type Socket } from 'node:net';
import { readSourceRange } from '../config/source-range.js';
import { PosternError } from '../errors.js';
import type { Logger } from '../observability/logger.js';

export const REFUSAL_WINDOW_MS = 60_000;
export const REFUSAL_LINES_PER_WINDOW = 10;

const IPV4_MAPPED = /^::ffff:(?<v4>[0-9.]+)$/i;

/** An allow-list of source addresses, matched with Node's `net.BlockList`. */
export class SourceFilter {
  readonly ranges: readonly string[];
  readonly #list = new BlockList();

  /** @throws PosternError POSTERN_ERR_CONFIG when the list is empty or an entry is not an IP or CIDR. */
  constructor(ranges: readonly string[]) {
    if (ranges.length === 0) {
      throw new PosternError(
        'POSTERN_ERR_CONFIG',
        'allowed_sources must list at least one address or CIDR range',
      );
    }
    for (const text of ranges) {
      const range = readSourceRange(text);
      if (!range.ok) {
        throw new PosternError('POSTERN_ERR_CONFIG', `allowed_sources: ${range.problem}`);
      }
      this.#list.addSubnet(range.value.address, range.value.prefix, range.value.family);
    }
    this.ranges = [...ranges];
  }

  /**
   * Whether a connection from `address` (a socket's `remoteAddress`) may proceed. An IPv4-mapped
   * IPv6 address, as a dual-stack listener reports an IPv4 peer, is checked as the IPv4 address
   * it carries; an unknown address (a peer already gone) is refused.
   */
  allows(address: string | undefined): boolean {
    if (address === undefined) return false;
    const v4 = IPV4_MAPPED.exec(address)?.groups?.v4;
    if (v4 !== undefined && isIPv4(v4)) return this.#list.check(v4, 'ipv4');
    return this.#list.check(address, isIPv4(address) ? 'ipv4' : 'ipv6');
  }
}

/** Logs refused connections without letting a scan flood the log. */
export class RefusalLog {
  readonly #log: Logger;
  readonly #now: () => number;
  #windowStart = Number.NEGATIVE_INFINITY;
  #linesInWindow = 0;
  #suppressed = 0;

  constructor(logger: Logger, now: () => number = () => performance.now()) {
    this.#log = logger;
    this.#now = now;
  }

  record(remote: string | undefined, remotePort: number | undefined): void {
    const now = this.#now();
    if (now - this.#windowStart >= REFUSAL_WINDOW_MS) {
      this.#windowStart = now;
      this.#linesInWindow = 0;
    }
    const fields = { remote: remote ?? 'unknown', remotePort };
    if (this.#linesInWindow >= REFUSAL_LINES_PER_WINDOW) {
      this.#suppressed += 1;
      this.#log.debug(fields, 'connection refused: source not in allowed_sources');
      return;
    }
    this.#linesInWindow += 1;
    const suppressed = this.#suppressed;
    this.#suppressed = 0;
    this.#log.info(
      suppressed === 0 ? fields : { ...fields, suppressed },
      'connection refused: source not in allowed_sources',
    );
  }
}

/**
 * Admits or refuses accepted sockets for one listener. A refused socket is destroyed here: the
 * listener owns a socket until it hands it to its protocol, and a refused one is never handed on.
 */
export class SourceGuard {
  readonly filter: SourceFilter;
  readonly #refusals: RefusalLog;

  constructor(filter: SourceFilter, logger: Logger) {
    this.filter = filter;
    this.#refusals = new RefusalLog(logger);
  }

  /** True when `socket` may be served; otherwise it has been closed and the refusal logged. */
  admit(socket: Socket): boolean {
    if (this.filter.allows(socket.remoteAddress)) return true;
    this.#refusals.record(socket.remoteAddress, socket.remotePort);
    socket.destroy();
    return false;
  }

  /**
   * Puts this guard in front of every `'connection'` listener `server` has now (the protocol an
   * http, https or net server installs when it is created), so a refused socket never reaches
   * them. Call before the server listens.
   */
  install(server: Server): void {
    const protocol = server.listeners('connection') as ((socket: Socket) => void)[];
    server.removeAllListeners('connection');
    server.on('connection', (socket: Socket) => {
      if (!this.admit(socket)) return;
      for (const listener of protocol) listener.call(server, socket);
    });
  }
}
