/**
 * A StreamHost for testing one TunnelStream without a session: it records what the stream sends
 * and asks for, always has transport room, and grants the window it is given.
 */
import assert from 'node:assert/strict';
import { StreamKind } from '../../src/tunnel/constants.js';
import type { StreamHost } from '../../src/tunnel/stream.js';

export const TCP_TARGET = { kind: StreamKind.TCP, host: 'example.test', port: 80 } as const;

export function recordingStreamHost(window: number) {
  /** Copies of each DATA payload, as a session's encoder makes. */
  const sent: Buffer[] = [];
  /** WINDOW increments granted. */
  const windows: number[] = [];
  /** Streams that reported the peer's FIN. */
  const ended: number[] = [];
  const host: StreamHost = {
    sendData: (_streamId, data) => sent.push(Buffer.from(data)),
    sendWindow: (_streamId, increment) => windows.push(increment),
    windowFor: () => window,
    receiveEnded: (streamId) => ended.push(streamId),
    sendFin: () => undefined,
    sendReset: () => undefined,
    reserveSend: () => true,
    flowControlError: (_streamId, message) => assert.fail(message),
    release: () => undefined,
  };
  return { host, sent, windows, ended };
}
