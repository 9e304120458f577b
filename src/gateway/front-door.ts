/** What every proxy front door (SOCKS5, HTTP, HTTPS) is built from. */
import type { Logger } from '../observability/logger.js';
import type { FailureLimiter, GroupAuthority } from './auth.js';
import type { SessionRegistry } from './registry.js';
import type { SourceGuard } from './source-filter.js';

export interface FrontDoorOptions {
  host: string;
  port: number;
  authority: GroupAuthority;
  limiter: FailureLimiter;
  registry: SessionRegistry;
  openTimeoutMs: number;
  /** Deadline for the protocol's opening exchange (and TLS); not for relayed data. */
  handshakeTimeoutMs: number;
  /** Closes connections from sources outside `allowed_sources` as they are accepted. */
  guard?: SourceGuard | undefined;
  /** The group of users who offer no credentials; absent: credentials are required. */
  noAuthGroup?: string | undefined;
  logger: Logger;
}
