/**
 * The bulk payload and its check. Every process derives the same pseudo-random pool from a
 * fixed seed; chunk `i` of a transfer is a 64 KiB window of the pool at an offset that moves
 * with `i`, so the bytes differ from chunk to chunk and a lost, repeated or reordered chunk
 * changes the CRC-32. Nothing is copied to send it.
 */
import type { Socket } from 'node:net';
import { crc32 } from 'node:zlib';

export const CHUNK_SIZE = 64 * 1024;
const POOL_SIZE = 4 * 1024 * 1024;
/** Odd, and prime to the pool size, so consecutive chunks start at different offsets. */
const STRIDE = 40_961;

let pool: Buffer | undefined;

/** The same 4 MiB of xorshift32 output in every process. */
function payloadPool(): Buffer {
  if (pool) return pool;
  const words = new Uint32Array(POOL_SIZE / 4);
  let state = 0x9e3779b9;
  for (let i = 0; i < words.length; i++) {
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    words[i] = state >>> 0;
  }
  pool = Buffer.from(words.buffer);
  return pool;
}

/** Chunk `index` of a transfer, `size` bytes long (at most CHUNK_SIZE). */
export function payloadChunk(index: number, size: number): Buffer {
  const offset = (index * STRIDE) % (POOL_SIZE - CHUNK_SIZE);
  return payloadPool().subarray(offset, offset + size);
}

/** Byte count and running CRC-32 of what went past. */
export class Digest {
  bytes = 0;
  crc = 0;

  update(chunk: Buffer): void {
    this.bytes += chunk.length;
    this.crc = crc32(chunk, this.crc);
  }
}

const expected = new Map<number, Digest>();

/** What a receiver of a `total`-byte transfer must end up with; computed once per size. */
export function expectedDigest(total: number): Digest {
  let digest = expected.get(total);
  if (!digest) {
    digest = new Digest();
    for (let index = 0, sent = 0; sent < total; index++) {
      const chunk = payloadChunk(index, Math.min(CHUNK_SIZE, total - sent));
      digest.update(chunk);
      sent += chunk.length;
    }
    expected.set(total, digest);
  }
  return digest;
}

/**
 * Writes `total` payload bytes (Infinity: until the socket closes) honouring backpressure, then
 * ends the socket.
 */
export function writePayload(socket: Socket, total: number): void {
  let index = 0;
  let sent = 0;
  const pump = () => {
    while (sent < total) {
      if (socket.destroyed) return;
      const chunk = payloadChunk(index++, Math.min(CHUNK_SIZE, total - sent));
      sent += chunk.length;
      if (!socket.write(chunk)) {
        socket.once('drain', pump);
        return;
      }
    }
    socket.end();
  };
  pump();
}

/** Length header of a transfer request: u32 high, u32 low (enough for 2^53). */
export function encodeLength(total: number): Buffer {
  const header = Buffer.alloc(8);
  header.writeUInt32BE(Math.floor(total / 2 ** 32), 0);
  header.writeUInt32BE(total % 2 ** 32, 4);
  return header;
}

export function decodeLength(header: Buffer): number {
  return header.readUInt32BE(0) * 2 ** 32 + header.readUInt32BE(4);
}

/** A sink's verdict: byte count (8 bytes, as `encodeLength`) then CRC-32 (u32). */
export function encodeDigest(digest: Digest): Buffer {
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(digest.crc >>> 0, 0);
  return Buffer.concat([encodeLength(digest.bytes), crc]);
}

export function decodeDigest(bytes: Buffer): { bytes: number; crc: number } {
  return { bytes: decodeLength(bytes.subarray(0, 8)), crc: bytes.readUInt32BE(8) };
}

/** Infinite transfers are requested with this length. */
export const ENDLESS = 0;
