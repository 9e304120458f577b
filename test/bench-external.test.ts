import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseHeySummary } from '../bench/external.js';

/** hey 0.1.4's summary, shortened to the parts the parser reads and what surrounds them. */
function summary(rate: string, statuses: string, errors: string): string {
  return `
Summary:
  Total:\t2.0012 secs
  Requests/sec:\t${rate}

Response time histogram:
  0.000 [1]\t|■■■■■■■■■■
  0.002 [417]\t|■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■

Latency distribution:
  10% in 0.0003 secs

Status code distribution:
${statuses}
${errors}`;
}

describe("reading hey's summary", () => {
  it('counts 200s as answered and takes the request rate', () => {
    const parsed = parseHeySummary(summary('1629.4312', '  [200]\t3260 responses', ''));
    assert.deepEqual(parsed, {
      perSecond: 1629.4312,
      ok: 3260,
      failed: 0,
      firstFailure: undefined,
    });
  });

  it('counts other statuses and every error line as failures, naming the first', () => {
    const errors = `Error distribution:
  [3]\tGet "http://127.0.0.1:8080/": socks connect tcp 127.0.0.1:1080->127.0.0.1:8080: unknown error general SOCKS server failure
  [2]\tGet "http://127.0.0.1:8080/": EOF
`;
    const statuses = '  [200]\t95 responses\n  [502]\t4 responses';
    const parsed = parseHeySummary(summary('48.5', statuses, errors));
    assert.equal(parsed.ok, 95);
    assert.equal(parsed.failed, 4 + 3 + 2);
    assert.equal(parsed.firstFailure, 'status 502');
  });

  it('reports errors when no request was answered at all', () => {
    const errors = `Error distribution:
  [20]\tGet "http://127.0.0.1:1/": dial tcp 127.0.0.1:1: connect: connection refused
`;
    const parsed = parseHeySummary(summary('3908.0865', '', errors));
    assert.equal(parsed.ok, 0);
    assert.equal(parsed.failed, 20);
    assert.match(parsed.firstFailure ?? '', /connection refused/);
  });

  it('refuses output without a request rate', () => {
    assert.throws(() => parseHeySummary('flag provided but not defined: -y'), /no request rate/);
  });
});
