import net from 'node:net';
import { isPosternError, PosternError } from '../errors.js';
import { Cancellation, type CancelSignal } from '../tunnel/cancellation.js';
import { Reason } from '../tunnel/constants.js';
import type { DirectReader } from '../tunnel/direct-read.js';
import type { AccessPolicy, LookupFunction, ResolvedAddress } from './policy.js';

export interface DialOptions {
  policy: AccessPolicy;
  /** Deadline for the whole dial (resolution and every connect attempt), in milliseconds. */
  timeoutMs: number;
  /** Cancelling it cancels the dial (reason CANCELLED). */
  cancellation?: CancelSignal;
  /** Resolver for the policy check; `dns.promises.lookup` by default. */
  lookup?: LookupFunction;
  /** The socket reads through this reader (`onread`) instead of emitting 'data'. */
  reader?: DirectReader;
}

/** Connect errors the user should hear about precisely; anything else is INTERNAL_ERROR. */
const CONNECT_FAILURES = new Map<string, { reason: Reason; says: string }>([
  ['ECONNREFUSED', { reason: Reason.CONNECTION_REFUSED, says: 'connection refused' }],
  ['EHOSTUNREACH', { reason: Reason.HOST_UNREACHABLE, says: 'host unreachable' }],
  ['ENETUNREACH', { reason: Reason.NETWORK_UNREACHABLE, says: 'network unreachable' }],
  ['ETIMEDOUT', { reason: Reason.DIAL_TIMEOUT, says: 'connect timed out' }],
]);

/**
 * Checks `host:port` against the policy, then connects by TCP to the addresses the policy passed,
 * one at a time, in order, until one accepts. The whole dial shares one deadline of
 * `options.timeoutMs`; it is a dial deadline only: the returned socket has no timeout and
 * `setNoDelay(true)`, and the caller owns it.
 *
 * @throws PosternError `POSTERN_ERR_OPEN_FAILED` whose `reason` says what happened: FORBIDDEN,
 * DNS_FAILURE, CONNECTION_REFUSED, HOST_UNREACHABLE, NETWORK_UNREACHABLE, DIAL_TIMEOUT, CANCELLED
 * or INTERNAL_ERROR; `cause` keeps the underlying error.
 */
export async function dial(host: string, port: number, options: DialOptions): Promise<net.Socket> {
  const target = net.isIPv6(host) ? `[${host}]:${port}` : `${host}:${port}`;
  const stop = new Cancellation();
  const deadline = setTimeout(() => {
    stop.cancel(
      new PosternError(
        'POSTERN_ERR_OPEN_FAILED',
        `dial ${target} timed out after ${options.timeoutMs} ms`,
        { reason: Reason.DIAL_TIMEOUT },
      ),
    );
  }, options.timeoutMs);
  const cancel = (): void => {
    stop.cancel(
      new PosternError('POSTERN_ERR_OPEN_FAILED', `dial ${target} was cancelled`, {
        reason: Reason.CANCELLED,
        cause: options.cancellation?.reason,
      }),
    );
  };
  const stopListening = options.cancellation?.onCancel(cancel);
  try {
    if (options.cancellation?.cancelled) cancel();
    if (stop.reason) throw stop.reason;
    const decision = await untilStopped(options.policy.check(host, port, options.lookup), stop);
    if (!decision.allowed) {
      throw new PosternError('POSTERN_ERR_OPEN_FAILED', decision.message, {
        reason: decision.reason,
        cause: decision.cause,
      });
    }
    return await connectToFirst(target, decision.addresses, port, stop, options.reader);
  } catch (err) {
    if (isPosternError(err, 'POSTERN_ERR_OPEN_FAILED')) throw err;
    throw new PosternError('POSTERN_ERR_OPEN_FAILED', `dial ${target} failed: ${String(err)}`, {
      reason: Reason.INTERNAL_ERROR,
      cause: err,
    });
  } finally {
    clearTimeout(deadline);
    stopListening?.();
  }
}

/**
 * Settles with `work`, or rejects with the stop reason as soon as `stop` is cancelled. `work`
 * cannot be cancelled (a lookup runs to its end); whatever it settles with after a stop has no
 * one left to hear it.
 */
function untilStopped<T>(work: Promise<T>, stop: CancelSignal): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const stopListening = stop.onCancel(reject);
    work.then(resolve, reject).finally(stopListening);
  });
}

async function connectToFirst(
  target: string,
  addresses: readonly ResolvedAddress[],
  port: number,
  stop: CancelSignal,
  reader: DirectReader | undefined,
): Promise<net.Socket> {
  const failures: NodeJS.ErrnoException[] = [];
  for (const { address } of addresses) {
    try {
      return await connectOnce(address, port, stop, reader);
    } catch (err) {
      if (stop.cancelled) throw err;
      failures.push(err as NodeJS.ErrnoException);
    }
  }
  throw connectFailure(target, addresses, failures[failures.length - 1]);
}

function connectFailure(
  target: string,
  addresses: readonly ResolvedAddress[],
  last: NodeJS.ErrnoException | undefined,
): PosternError {
  const tried = addresses.map((resolved) => resolved.address).join(', ');
  const known = last?.code === undefined ? undefined : CONNECT_FAILURES.get(last.code);
  let what: string;
  if (last === undefined) what = 'no address to try';
  else if (known === undefined) what = String(last);
  else what = `${known.says} (${last.code})`;
  return new PosternError(
    'POSTERN_ERR_OPEN_FAILED',
    `cannot connect to ${target} (tried ${tried}): ${what}`,
    {
      reason: known?.reason ?? Reason.INTERNAL_ERROR,
      cause: last,
    },
  );
}

/** One TCP connect to an IP address (so no lookup happens); rejects when `stop` is cancelled. */
function connectOnce(
  address: string,
  port: number,
  stop: CancelSignal,
  reader: DirectReader | undefined,
): Promise<net.Socket> {
  return new Promise<net.Socket>((resolve, reject) => {
    if (stop.reason) {
      reject(stop.reason);
      return;
    }
    const socket = net.connect({ host: address, port, ...(reader && { onread: reader.onread() }) });
    const detach = (): void => {
      socket.off('connect', onConnect);
      socket.off('error', onError);
      stopListening();
    };
    const onConnect = (): void => {
      detach();
      socket.setNoDelay(true);
      resolve(socket);
    };
    // A failed connect has already destroyed the socket: destroying it again is not ours to do.
    const onError = (err: Error): void => {
      detach();
      reject(err);
    };
    const stopListening = stop.onCancel((reason) => {
      detach();
      socket.destroy();
      reject(reason);
    });
    socket.once('connect', onConnect);
    socket.once('error', onError);
  });
}
