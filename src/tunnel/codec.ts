/**
 * The frame codec: pure functions from frames to bytes and back. No I/O, no timers.
 * Layout and vectors: docs/protocol.md.
 */
import { PosternError } from '../errors.js';
import {
  FrameType,
  HEADER_SIZE,
  isReason,
  MAX_FRAME_PAYLOAD,
  MAX_HOST_LENGTH,
  type Reason,
  StreamKind,
} from './constants.js';

export type Frame =
  | { type: typeof FrameType.HELLO; streamId: 0; version: number; info: Record<string, unknown> }
  | { type: typeof FrameType.HELLO_OK; streamId: 0; version: number; info: Record<string, unknown> }
  | { type: typeof FrameType.OPEN; streamId: number; kind: StreamKind; host: string; port: number }
  | { type: typeof FrameType.OPEN_OK; streamId: number }
  | { type: typeof FrameType.OPEN_ERROR; streamId: number; reason: Reason; message: string }
  | { type: typeof FrameType.DATA; streamId: number; data: Buffer }
  | { type: typeof FrameType.WINDOW; streamId: number; increment: number }
  | { type: typeof FrameType.FIN; streamId: number }
  | { type: typeof FrameType.RESET; streamId: number; reason: Reason; message: string }
  | { type: typeof FrameType.GOAWAY; streamId: 0; reason: Reason; message: string };

function protocolError(message: string): PosternError {
  return new PosternError('POSTERN_ERR_PROTOCOL', message);
}

function writeHeader(buf: Buffer, type: FrameType, streamId: number, length: number): void {
  if (length > MAX_FRAME_PAYLOAD) {
    throw new RangeError(`frame payload of ${length} bytes exceeds ${MAX_FRAME_PAYLOAD}`);
  }
  buf.writeUInt8(type, 0);
  buf.writeUInt32BE(streamId, 1);
  buf.writeUInt32BE(length, 5);
}

function header(type: FrameType, streamId: number, length: number): Buffer {
  const buf = Buffer.allocUnsafe(HEADER_SIZE + length);
  writeHeader(buf, type, streamId, length);
  return buf;
}

function withReason(type: FrameType, streamId: number, reason: Reason, message: string): Buffer {
  const text = Buffer.from(message, 'utf8');
  const buf = header(type, streamId, 1 + text.length);
  buf.writeUInt8(reason, HEADER_SIZE);
  text.copy(buf, HEADER_SIZE + 1);
  return buf;
}

function withJson(type: FrameType, version: number, info: Record<string, unknown>): Buffer {
  const text = Buffer.from(JSON.stringify(info), 'utf8');
  const buf = header(type, 0, 2 + text.length);
  buf.writeUInt16BE(version, HEADER_SIZE);
  text.copy(buf, HEADER_SIZE + 2);
  return buf;
}

/** Encodes one frame into a fresh buffer (header and payload contiguous). */
export function encodeFrame(frame: Frame): Buffer {
  switch (frame.type) {
    case FrameType.HELLO:
    case FrameType.HELLO_OK:
      return withJson(frame.type, frame.version, frame.info);
    case FrameType.OPEN: {
      const host = Buffer.from(frame.host, 'utf8');
      if (host.length === 0 || host.length > MAX_HOST_LENGTH) {
        throw new RangeError(`host must be 1..${MAX_HOST_LENGTH} bytes, got ${host.length}`);
      }
      if (CONTROL_CHARACTER.test(frame.host)) throw new RangeError('host holds control characters');
      const buf = header(frame.type, frame.streamId, 4 + host.length);
      buf.writeUInt8(frame.kind, HEADER_SIZE);
      buf.writeUInt16BE(frame.port, HEADER_SIZE + 1);
      buf.writeUInt8(host.length, HEADER_SIZE + 3);
      host.copy(buf, HEADER_SIZE + 4);
      return buf;
    }
    case FrameType.OPEN_OK:
    case FrameType.FIN:
      return header(frame.type, frame.streamId, 0);
    case FrameType.OPEN_ERROR:
    case FrameType.RESET:
    case FrameType.GOAWAY:
      return withReason(frame.type, frame.streamId, frame.reason, frame.message);
    case FrameType.DATA: {
      const buf = header(frame.type, frame.streamId, frame.data.length);
      frame.data.copy(buf, HEADER_SIZE);
      return buf;
    }
    case FrameType.WINDOW: {
      const buf = header(frame.type, frame.streamId, 4);
      buf.writeUInt32BE(frame.increment, HEADER_SIZE);
      return buf;
    }
  }
}

/**
 * Encodes a DATA frame into `target`, which must hold HEADER_SIZE + `data.length` bytes, and
 * returns the frame: a view of `target`. Lets the sender reuse frame buffers (frame-pool.ts).
 */
export function encodeDataInto(target: Buffer, streamId: number, data: Buffer): Buffer {
  const total = HEADER_SIZE + data.length;
  if (target.length < total) {
    throw new RangeError(`a ${total}-byte frame does not fit a ${target.length}-byte buffer`);
  }
  writeHeader(target, FrameType.DATA, streamId, data.length);
  data.copy(target, HEADER_SIZE);
  return target.subarray(0, total);
}

function expectLength(type: string, payload: Buffer, length: number): void {
  if (payload.length !== length) {
    throw protocolError(`${type} payload must be ${length} bytes, got ${payload.length}`);
  }
}

function expectStreamZero(type: string, streamId: number): void {
  if (streamId !== 0) throw protocolError(`${type} must use stream 0, got ${streamId}`);
}

function expectStream(type: string, streamId: number): void {
  if (streamId === 0) throw protocolError(`${type} must not use stream 0`);
}

/** Control characters (NUL among them) have no place in a host name or address. */
// biome-ignore lint/suspicious/noControlCharactersInRegex: matching control characters is the point
const CONTROL_CHARACTER = /[\u0000-\u001f\u007f]/;
const strictUtf8 = new TextDecoder('utf-8', { fatal: true });

function decodeHost(bytes: Buffer): string {
  let host: string;
  try {
    host = strictUtf8.decode(bytes);
  } catch (err) {
    throw new PosternError('POSTERN_ERR_PROTOCOL', 'OPEN host is not valid UTF-8', { cause: err });
  }
  if (CONTROL_CHARACTER.test(host)) throw protocolError('OPEN host holds control characters');
  return host;
}

function decodeReason(type: string, payload: Buffer): { reason: Reason; message: string } {
  if (payload.length < 1) throw protocolError(`${type} payload must hold a reason code`);
  const reason = payload.readUInt8(0);
  if (!isReason(reason)) throw protocolError(`${type} has unknown reason code ${reason}`);
  return { reason, message: payload.toString('utf8', 1) };
}

function decodeJson(
  type: string,
  payload: Buffer,
): { version: number; info: Record<string, unknown> } {
  if (payload.length < 2) throw protocolError(`${type} payload must hold a version`);
  const version = payload.readUInt16BE(0);
  let info: unknown;
  try {
    info = JSON.parse(payload.toString('utf8', 2));
  } catch (err) {
    throw new PosternError('POSTERN_ERR_PROTOCOL', `${type} payload is not JSON`, { cause: err });
  }
  if (typeof info !== 'object' || info === null || Array.isArray(info)) {
    throw protocolError(`${type} payload must be a JSON object`);
  }
  return { version, info: info as Record<string, unknown> };
}

/** Decodes the payload of one frame whose header has been read. */
export function decodeFrame(type: number, streamId: number, payload: Buffer): Frame {
  switch (type) {
    case FrameType.HELLO:
    case FrameType.HELLO_OK: {
      const name = type === FrameType.HELLO ? 'HELLO' : 'HELLO_OK';
      expectStreamZero(name, streamId);
      return { type, streamId: 0, ...decodeJson(name, payload) };
    }
    case FrameType.OPEN: {
      expectStream('OPEN', streamId);
      if (payload.length < 5) throw protocolError('OPEN payload too short');
      const kind = payload.readUInt8(0);
      if (kind !== StreamKind.TCP && kind !== StreamKind.UDP) {
        throw protocolError(`OPEN has unknown kind ${kind}`);
      }
      const port = payload.readUInt16BE(1);
      const hostLength = payload.readUInt8(3);
      expectLength('OPEN', payload, 4 + hostLength);
      return { type, streamId, kind, port, host: decodeHost(payload.subarray(4)) };
    }
    case FrameType.OPEN_OK:
      expectStream('OPEN_OK', streamId);
      expectLength('OPEN_OK', payload, 0);
      return { type, streamId };
    case FrameType.FIN:
      expectStream('FIN', streamId);
      expectLength('FIN', payload, 0);
      return { type, streamId };
    case FrameType.OPEN_ERROR:
      expectStream('OPEN_ERROR', streamId);
      return { type, streamId, ...decodeReason('OPEN_ERROR', payload) };
    case FrameType.RESET:
      expectStream('RESET', streamId);
      return { type, streamId, ...decodeReason('RESET', payload) };
    case FrameType.GOAWAY:
      expectStreamZero('GOAWAY', streamId);
      return { type, streamId: 0, ...decodeReason('GOAWAY', payload) };
    case FrameType.DATA:
      expectStream('DATA', streamId);
      return { type, streamId, data: payload };
    case FrameType.WINDOW: {
      expectStream('WINDOW', streamId);
      expectLength('WINDOW', payload, 4);
      const increment = payload.readUInt32BE(0);
      if (increment === 0) throw protocolError('WINDOW increment must not be 0');
      return { type, streamId, increment };
    }
    default:
      throw protocolError(`unknown frame type 0x${type.toString(16).padStart(2, '0')}`);
  }
}

const knownTypes = new Set<number>(Object.values(FrameType));

/**
 * Streaming decoder: accepts bytes in any split (one frame across many chunks, many frames in
 * one chunk) and returns the whole frames they complete. Bytes are joined only once a whole
 * frame is present, so reassembly stays linear however small the chunks. Throws
 * POSTERN_ERR_PROTOCOL on the first malformed frame; the decoder must not be used after that.
 */
export class FrameDecoder {
  #pending: Buffer[] = [];
  #pendingLength = 0;

  /** Bytes held that do not yet form a whole frame. */
  get bufferedLength(): number {
    return this.#pendingLength;
  }

  push(chunk: Buffer): Frame[] {
    if (chunk.length > 0) {
      this.#pending.push(chunk);
      this.#pendingLength += chunk.length;
    }
    const frames: Frame[] = [];
    while (this.#pendingLength >= HEADER_SIZE) {
      let head = this.#pending[0]!;
      if (head.length < HEADER_SIZE) head = this.#join();
      const type = head.readUInt8(0);
      if (!knownTypes.has(type)) {
        throw protocolError(`unknown frame type 0x${type.toString(16).padStart(2, '0')}`);
      }
      const streamId = head.readUInt32BE(1);
      const length = head.readUInt32BE(5);
      if (length > MAX_FRAME_PAYLOAD) {
        throw protocolError(`frame payload of ${length} bytes exceeds ${MAX_FRAME_PAYLOAD}`);
      }
      const total = HEADER_SIZE + length;
      if (this.#pendingLength < total) break;
      if (head.length < total) head = this.#join();
      frames.push(decodeFrame(type, streamId, head.subarray(HEADER_SIZE, total)));
      if (head.length === total) this.#pending.shift();
      else this.#pending[0] = head.subarray(total);
      this.#pendingLength -= total;
    }
    return frames;
  }

  #join(): Buffer {
    const joined = Buffer.concat(this.#pending, this.#pendingLength);
    this.#pending = [joined];
    return joined;
  }
}
