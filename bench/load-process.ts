/**
 * A second load generator in its own process: it keeps one bulk download running through a
 * door while the parent measures something else, so the two loads never share an event loop.
 */
import type { Socket } from 'node:net';
import { type DoorSpec, openDoor } from './doors.js';
import { serveParent } from './ipc.js';
import { ENDLESS, encodeLength } from './payload.js';
import type { Endpoint } from './socks5-client.js';

/** What a stopped saturating download carried. */
export interface SaturationResult {
  bytes: number;
  seconds: number;
}

let running: { socket: Socket; startedAt: number; bytes: number } | undefined;

/** Bytes received before the download counts as saturating and the clock starts. */
const RAMP_UP_BYTES = 4 * 1024 * 1024;

/** Starts an endless download; resolves once it has ramped up. */
async function saturate(body: unknown): Promise<void> {
  const { door, target } = body as { door: DoorSpec; target: Endpoint };
  if (running) throw new Error('a saturating download is already running');
  const socket = await openDoor(door).connect(target);
  const state = { socket, startedAt: 0, bytes: 0 };
  running = state;
  await new Promise<void>((resolve, reject) => {
    socket.on('error', (error) => {
      reject(error);
      if (running !== state) return;
      running = undefined;
      process.stderr.write(`saturating download failed: ${error.message}\n`);
    });
    socket.once('close', () => reject(new Error('the saturating download closed early')));
    socket.on('data', (chunk: Buffer) => {
      state.bytes += chunk.length;
      if (state.startedAt === 0 && state.bytes >= RAMP_UP_BYTES) {
        state.startedAt = performance.now();
        state.bytes = 0;
        resolve();
      }
    });
    socket.write(encodeLength(ENDLESS));
  });
}

async function stop(): Promise<SaturationResult> {
  const state = running;
  if (!state) throw new Error('no saturating download is running');
  running = undefined;
  const seconds = (performance.now() - state.startedAt) / 1000;
  // An abort, as a user would: RST rather than FIN.
  state.socket.resetAndDestroy();
  return { bytes: state.bytes, seconds };
}

void serveParent(async () => ({
  ready: {},
  openStreams: () => (running ? 1 : 0),
  handlers: { saturate, stop },
  async close() {
    running?.socket.destroy();
    running = undefined;
  },
}));
