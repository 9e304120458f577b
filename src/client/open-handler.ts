/**
 * What the client does when the gateway opens a stream: check the access policy, dial the
 * target, answer OPEN_OK or OPEN_ERROR with the precise reason, then join socket and stream.
 */
import { isPosternError } from '../errors.js';
import { deferredChild, type Log } from '../observability/logger.js';
import { Reason, reasonName, StreamKind } from '../tunnel/constants.js';
import { DirectReader } from '../tunnel/direct-read.js';
import type { IncomingOpen } from '../tunnel/session.js';
import { splice } from '../tunnel/splice.js';
import { dial } from './dialer.js';
import type { AccessPolicy } from './policy.js';

export interface OpenHandlerOptions {
  policy: AccessPolicy;
  dialTimeoutMs: number;
  logger: Log;
}

export async function handleOpen(open: IncomingOpen, options: OpenHandlerOptions): Promise<void> {
  const { host, port, kind } = open.target;
  const log = deferredChild(options.logger, { stream: open.streamId, target: `${host}:${port}` });
  if (kind !== StreamKind.TCP) {
    open.reject(Reason.UNSUPPORTED, 'only TCP streams are supported by this client');
    return;
  }
  // The target's bytes go into DATA frames straight from a shared read buffer (direct-read.ts).
  const reader = new DirectReader();
  let socket: Awaited<ReturnType<typeof dial>>;
  try {
    socket = await dial(host, port, {
      policy: options.policy,
      timeoutMs: options.dialTimeoutMs,
      cancellation: open.cancellation,
      reader,
    });
  } catch (err) {
    const reason =
      isPosternError(err) && err.reason !== undefined ? err.reason : Reason.INTERNAL_ERROR;
    const message = err instanceof Error ? err.message : String(err);
    if (reason === Reason.FORBIDDEN)
      log.warn({ reason: reasonName(reason), message }, 'refused by policy');
    else log.info({ reason: reasonName(reason), message }, 'dial failed');
    open.reject(reason, message);
    return;
  }
  if (open.cancellation.cancelled) {
    log.debug('open cancelled by the gateway after the dial');
    socket.destroy();
    return;
  }
  const stream = open.accept();
  log.debug('stream open');
  // Not awaited: this function's frame (and `open`) need not live as long as the relay.
  return splice(socket, stream, reader).then(() => log.debug('stream closed'));
}
