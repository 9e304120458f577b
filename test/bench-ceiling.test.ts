import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { cpuCeiling } from '../bench/connections.js';

describe('bench CPU ceiling', () => {
  it('adds the CPU of every process and divides the cores by it', () => {
    const ceiling = cpuCeiling(
      { gateway: 270, client: 190, generator: 220, 'echo target': 120 },
      2,
    );
    assert.equal(ceiling.micros, 800);
    assert.equal(ceiling.perSecond, 2_500);
  });

  it('counts a process whose CPU is unknown as none', () => {
    const ceiling = cpuCeiling({ gateway: 300, hey: undefined, nginx: 100 }, 4);
    assert.equal(ceiling.micros, 400);
    assert.equal(ceiling.perSecond, 10_000);
  });

  it('has no bound when no CPU was measured', () => {
    assert.equal(cpuCeiling({}, 2).perSecond, Number.POSITIVE_INFINITY);
  });
});
