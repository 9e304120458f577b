import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { backoffDelay } from '../src/client/tunnel.js';

function mean(samples: number[]): number {
  return samples.reduce((sum, x) => sum + x, 0) / samples.length;
}

function sample(attempt: number, initialMs: number, maxMs: number, count: number): number[] {
  return Array.from({ length: count }, () => backoffDelay(attempt, initialMs, maxMs));
}

describe('backoffDelay', () => {
  it('stays within [0, min(max, initial * 2^attempt))', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 2000 }),
        fc.integer({ min: 1, max: 60_000 }),
        fc.integer({ min: 0, max: 10_000_000 }),
        (attempt, initialMs, extraMs) => {
          const maxMs = initialMs + extraMs;
          const delay = backoffDelay(attempt, initialMs, maxMs);
          const ceiling = Math.min(maxMs, initialMs * 2 ** attempt);
          return Number.isFinite(delay) && delay >= 0 && delay < ceiling;
        },
      ),
      { numRuns: 2000 },
    );
  });

  it('uses full jitter: samples spread over the whole range, not around a point', () => {
    const samples = sample(3, 100, 30_000, 4000);
    const ceiling = 800;
    assert.ok(Math.min(...samples) < ceiling * 0.05, 'some delays are near zero');
    assert.ok(Math.max(...samples) > ceiling * 0.95, 'some delays are near the ceiling');
    assert.ok(Math.max(...samples) < ceiling);
    const lowerHalf = samples.filter((x) => x < ceiling / 2).length;
    // Uniform: half below the midpoint; 1800..2200 is more than 6 standard deviations wide.
    assert.ok(lowerHalf > 1800 && lowerHalf < 2200, `lower half: ${lowerHalf}`);
  });

  it('is capped at max for large attempts without overflowing', () => {
    for (const attempt of [40, 64, 1000, 1_000_000, Number.MAX_SAFE_INTEGER]) {
      const samples = sample(attempt, 500, 30_000, 2000);
      for (const delay of samples) {
        assert.ok(Number.isFinite(delay) && delay >= 0 && delay < 30_000, `${attempt}: ${delay}`);
      }
      assert.ok(Math.max(...samples) > 30_000 * 0.9, `attempt ${attempt} reaches the cap`);
    }
  });

  it('grows with the attempt number, then plateaus at max', () => {
    const initialMs = 100;
    const maxMs = 10_000;
    const count = 4000;
    const means = Array.from({ length: 14 }, (_, attempt) =>
      mean(sample(attempt, initialMs, maxMs, count)),
    );
    for (const [attempt, observed] of means.entries()) {
      const expected = Math.min(maxMs, initialMs * 2 ** attempt) / 2;
      // Standard error of the mean of a uniform sample is ceiling / sqrt(12 * count) ≈ 0.9% of it.
      assert.ok(
        Math.abs(observed - expected) < expected * 0.1,
        `attempt ${attempt}: mean ${observed}, expected about ${expected}`,
      );
    }
    // Doubling until 100 * 2^6 = 6400; capped from attempt 7 (12800 > 10000) on.
    for (let attempt = 1; attempt <= 7; attempt++) {
      assert.ok(means[attempt]! > means[attempt - 1]!, `mean rises at attempt ${attempt}`);
    }
    const plateau = means.slice(7);
    assert.ok(Math.max(...plateau) - Math.min(...plateau) < maxMs * 0.05, `plateau: ${plateau}`);
  });
});
