/**
 * Waiting for a count inside a benchmark process. The gateway and client expose stream counts
 * but no event for each change, so these waits poll briefly, with a deadline.
 */
import { setTimeout as sleep } from 'node:timers/promises';

const POLL_MS = 20;

/** Resolves once `predicate()` holds; rejects after `timeoutMs` naming `what`. */
export async function waitUntil(
  predicate: () => boolean,
  what: string,
  timeoutMs = 60_000,
): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!predicate()) {
    if (performance.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(POLL_MS);
  }
}
