import type { Reason } from './tunnel/constants.js';

/**
 * Typed errors with stable codes. Code branches on `code`, never on message text.
 */
export type PosternErrorCode =
  | 'POSTERN_ERR_PROTOCOL'
  | 'POSTERN_ERR_FLOW_CONTROL'
  | 'POSTERN_ERR_HANDSHAKE'
  | 'POSTERN_ERR_AUTH'
  | 'POSTERN_ERR_HEARTBEAT_TIMEOUT'
  | 'POSTERN_ERR_SESSION_CLOSED'
  | 'POSTERN_ERR_STREAM_RESET'
  | 'POSTERN_ERR_OPEN_FAILED'
  | 'POSTERN_ERR_NO_ROUTE'
  | 'POSTERN_ERR_CONFIG'
  | 'POSTERN_ERR_TLS';

export class PosternError extends Error {
  readonly code: PosternErrorCode;
  /** The wire reason code that describes this failure to the peer or the user, if any. */
  readonly reason: Reason | undefined;

  constructor(
    code: PosternErrorCode,
    message: string,
    options?: { cause?: unknown; reason?: Reason },
  ) {
    super(message, options);
    this.name = 'PosternError';
    this.code = code;
    this.reason = options?.reason;
  }
}

export function isPosternError(err: unknown, code?: PosternErrorCode): err is PosternError {
  return err instanceof PosternError && (code === undefined || err.code === code);
}

/** Exhaustiveness guard for `switch` over a union. */
export function assertNever(value: never): never {
  throw new Error(`unexpected value: ${String(value)}`);
}
