/**
 * A one-shot cancellation for the per-connection hot path, used where an AbortController would
 * otherwise be made for every stream. In Node 20 creating an AbortSignal costs about 3.5 µs and
 * its first listener about 2 µs more (measured with 100,000 of each). The client made two per
 * connection; replacing them cut its CPU per connection by about a quarter in the benchmark,
 * more than those costs alone account for (docs/performance.md). This one costs an object and
 * an array.
 */

/** The side that is told: read `cancelled`, or listen with `onCancel`. */
export interface CancelSignal {
  readonly cancelled: boolean;
  /** Why it was cancelled; undefined until then. */
  readonly reason: Error | undefined;
  /**
   * Calls `listener` once, when cancelled (not if it already is: check `cancelled` first).
   * Returns the function that removes the listener.
   */
  onCancel(listener: (reason: Error) => void): () => void;
}

export class Cancellation implements CancelSignal {
  #reason: Error | undefined;
  #listeners: ((reason: Error) => void)[] = [];

  get cancelled(): boolean {
    return this.#reason !== undefined;
  }

  get reason(): Error | undefined {
    return this.#reason;
  }

  onCancel(listener: (reason: Error) => void): () => void {
    if (this.#reason === undefined) this.#listeners.push(listener);
    return () => {
      const index = this.#listeners.indexOf(listener);
      if (index >= 0) this.#listeners.splice(index, 1);
    };
  }

  /**
   * Cancels with `reason` and calls the listeners, in the order they were added; idempotent.
   * Listeners must not throw: one that does stops the rest, and the error reaches the caller.
   */
  cancel(reason: Error): void {
    if (this.#reason !== undefined) return;
    this.#reason = reason;
    const listeners = this.#listeners;
    this.#listeners = [];
    for (const listener of listeners) listener(reason);
  }
}

/**
 * An AbortSignal that follows `cancellation`, for an API that takes one (a timer from
 * `node:timers/promises`) off the hot path; `dispose()` removes the listener once the operation
 * is over, so it does not outlive it on a long-lived cancellation.
 */
export function abortSignalFor(cancellation: CancelSignal): {
  signal: AbortSignal;
  dispose(): void;
} {
  const controller = new AbortController();
  const dispose = cancellation.onCancel((reason) => controller.abort(reason));
  if (cancellation.cancelled) controller.abort(cancellation.reason);
  return { signal: controller.signal, dispose };
}
