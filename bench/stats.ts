/** Small statistics for benchmark figures: percentiles of samples, summaries of runs. */

/** The median and range of one figure over several runs. */
export interface Summary {
  median: number;
  min: number;
  max: number;
  runs: number[];
}

/** Nearest-rank percentile (`p` in 0..100) of samples sorted ascending. */
export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) throw new Error('percentile of no samples');
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length, Math.max(1, rank)) - 1]!;
}

export function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2;
}

export function summarize(runs: readonly number[]): Summary {
  if (runs.length === 0) throw new Error('summary of no runs');
  return {
    median: median(runs),
    min: Math.min(...runs),
    max: Math.max(...runs),
    runs: [...runs],
  };
}

/** p50 and p99 of latency samples, in the samples' unit. */
export function latencyPercentiles(samples: readonly number[]): { p50: number; p99: number } {
  const sorted = [...samples].sort((a, b) => a - b);
  return { p50: percentile(sorted, 50), p99: percentile(sorted, 99) };
}
