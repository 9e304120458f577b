/**
 * Delay relays in a process of their own, so that holding and releasing a long path's bytes
 * costs neither the gateway, the client nor a generator any event-loop time. Arguments: the
 * one-way delay in milliseconds, then the target ports; it announces one relay port per target.
 */
import { type DelayRelay, startDelayRelay } from './delay-relay.js';
import { serveParent } from './ipc.js';

export interface DelayRelayReady {
  ports: number[];
}

void serveParent<DelayRelayReady>(async () => {
  const [delay, ...targets] = process.argv.slice(2).map(Number);
  if (delay === undefined || !(delay >= 0) || targets.some((port) => !Number.isInteger(port))) {
    throw new Error(
      `usage: delay-relay-process DELAY_MS PORT...; got ${process.argv.slice(2).join(' ')}`,
    );
  }
  const relays: DelayRelay[] = [];
  try {
    for (const port of targets) relays.push(await startDelayRelay(port, delay));
  } catch (error) {
    await Promise.all(relays.map((relay) => relay.close()));
    throw error;
  }
  return {
    ready: { ports: relays.map((relay) => relay.port) },
    openStreams: () => 0,
    close: async () => {
      await Promise.all(relays.map((relay) => relay.close()));
    },
  };
});
