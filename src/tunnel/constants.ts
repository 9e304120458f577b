/**
 * Every number that appears on the wire. Pinned by test/constants.test.ts and documented in
 * docs/protocol.md; changing one is a protocol change.
 */

export const PROTOCOL_VERSION = 1;

/** type (u8) + stream id (u32 BE) + payload length (u32 BE). */
export const HEADER_SIZE = 9;

/** Largest payload the decoder accepts; anything larger is a protocol error. */
export const MAX_FRAME_PAYLOAD = 1024 * 1024;

/** Largest DATA payload a sender produces, so that streams interleave fairly. */
export const MAX_DATA_PAYLOAD = 64 * 1024;

/** Bytes each side may send on a new stream before it receives a WINDOW frame. */
export const INITIAL_WINDOW = 256 * 1024;

/** Longest host name in an OPEN frame (a DNS name is at most 253 characters). */
export const MAX_HOST_LENGTH = 255;

export const FrameType = {
  HELLO: 0x01,
  HELLO_OK: 0x02,
  OPEN: 0x03,
  OPEN_OK: 0x04,
  OPEN_ERROR: 0x05,
  DATA: 0x06,
  WINDOW: 0x07,
  FIN: 0x08,
  RESET: 0x09,
  GOAWAY: 0x0a,
} as const;
export type FrameType = (typeof FrameType)[keyof typeof FrameType];

export const StreamKind = {
  TCP: 0x01,
  UDP: 0x02,
} as const;
export type StreamKind = (typeof StreamKind)[keyof typeof StreamKind];

/** Reason codes carried by OPEN_ERROR, RESET and GOAWAY. */
export const Reason = {
  NORMAL: 0x00,
  FORBIDDEN: 0x01,
  CONNECTION_REFUSED: 0x02,
  HOST_UNREACHABLE: 0x03,
  NETWORK_UNREACHABLE: 0x04,
  DNS_FAILURE: 0x05,
  DIAL_TIMEOUT: 0x06,
  GOING_AWAY: 0x07,
  UNSUPPORTED: 0x08,
  CONNECTION_RESET: 0x09,
  CANCELLED: 0x0a,
  PROTOCOL_ERROR: 0x0b,
  INTERNAL_ERROR: 0x0c,
  FLOW_CONTROL_ERROR: 0x0d,
  SESSION_CLOSED: 0x0e,
} as const;
export type Reason = (typeof Reason)[keyof typeof Reason];

const reasonNames = new Map<number, string>(
  Object.entries(Reason).map(([name, value]) => [value, name.toLowerCase()]),
);

export function reasonName(reason: number): string {
  return reasonNames.get(reason) ?? `unknown(${reason})`;
}

export function isReason(value: number): value is Reason {
  return reasonNames.has(value);
}

/** WebSocket close codes the gateway and client use to end a tunnel. */
export const CloseCode = {
  NORMAL: 1000,
  GOING_AWAY: 1001,
  PROTOCOL_ERROR: 4000,
  HANDSHAKE_TIMEOUT: 4001,
  UNSUPPORTED_VERSION: 4002,
  UNAUTHORIZED: 4003,
  GROUP_PASSWORD_MISMATCH: 4004,
  HEARTBEAT_TIMEOUT: 4006,
  RATE_LIMITED: 4007,
} as const;
export type CloseCode = (typeof CloseCode)[keyof typeof CloseCode];
