import './helpers/fail-on-unhandled.js';
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { describe, test } from 'node:test';
import { readSourceRange } from '../src/config/source-range.js';
import { isPosternError } from '../src/errors.js';
import {
  REFUSAL_LINES_PER_WINDOW,
  REFUSAL_WINDOW_MS,
  RefusalLog,
  SourceFilter,
} from '../src/gateway/source-filter.js';
import { createLogger } from '../src/observability/logger.js';

describe('source ranges', () => {
  test('addresses and CIDR ranges of both families parse; a bare address is a single host', () => {
    assert.deepEqual(readSourceRange('10.0.0.0/8'), {
      ok: true,
      value: { address: '10.0.0.0', prefix: 8, family: 'ipv4' },
    });
    assert.deepEqual(readSourceRange('127.0.0.1'), {
      ok: true,
      value: { address: '127.0.0.1', prefix: 32, family: 'ipv4' },
    });
    assert.deepEqual(readSourceRange('fd00::/8'), {
      ok: true,
      value: { address: 'fd00::', prefix: 8, family: 'ipv6' },
    });
    assert.deepEqual(readSourceRange(' ::1 '), {
      ok: true,
      value: { address: '::1', prefix: 128, family: 'ipv6' },
    });
  });

  test('names, bad prefixes, zone indexes and extra slashes are refused', () => {
    for (const text of ['', 'localhost', '10.0.0.0/', '10.0.0.0/x', '1.2.3.4/8/8', 'fe80::1%lo']) {
      assert.equal(readSourceRange(text).ok, false, text);
    }
    for (const text of ['10.0.0.0/33', '::/129', '10.0.0.0/0008']) {
      const result = readSourceRange(text);
      assert.ok(!result.ok && /invalid prefix length/.test(result.problem), text);
    }
  });
});

describe('SourceFilter', () => {
  test('matches IPv4 and IPv6 ranges, and refuses everything else', () => {
    const filter = new SourceFilter(['127.0.0.0/8', '10.1.2.3', 'fd00::/8', '::1']);
    for (const address of ['127.0.0.1', '127.255.0.9', '10.1.2.3', 'fd12:3456::1', '::1']) {
      assert.equal(filter.allows(address), true, address);
    }
    for (const address of ['128.0.0.1', '10.1.2.4', 'fe80::1', '::2', '8.8.8.8', undefined]) {
      assert.equal(filter.allows(address), false, String(address));
    }
  });

  test('an IPv4-mapped IPv6 peer (dual-stack socket) matches the IPv4 range it carries', () => {
    const filter = new SourceFilter(['127.0.0.0/8', '192.168.1.0/24']);
    assert.equal(filter.allows('::ffff:127.0.0.1'), true);
    assert.equal(filter.allows('::FFFF:192.168.1.77'), true);
    assert.equal(filter.allows('::ffff:192.168.2.1'), false);
    assert.equal(filter.allows('::ffff:10.0.0.1'), false);
    // A v6 range does not swallow v4 peers, and a v4 range does not match plain v6 peers.
    const v6only = new SourceFilter(['fd00::/8']);
    assert.equal(v6only.allows('127.0.0.1'), false);
    assert.equal(v6only.allows('::ffff:127.0.0.1'), false);
    assert.equal(new SourceFilter(['0.0.0.0/0']).allows('::1'), false);
  });

  test('an empty list or a bad entry is a configuration error', () => {
    assert.throws(
      () => new SourceFilter([]),
      (err) => isPosternError(err, 'POSTERN_ERR_CONFIG') && /at least one/.test(err.message),
    );
    assert.throws(
      () => new SourceFilter(['127.0.0.1', 'intranet']),
      (err) => isPosternError(err, 'POSTERN_ERR_CONFIG') && /"intranet"/.test(err.message),
    );
  });
});

describe('RefusalLog', () => {
  test('logs at info up to the per-window cap, then at debug, and reports the suppressed count', () => {
    const lines: { level: number; msg: string; remote: string; suppressed?: number }[] = [];
    const destination = new Writable({
      write(chunk: Buffer, _encoding, callback) {
        lines.push(JSON.parse(chunk.toString('utf8')));
        callback();
      },
    });
    let now = 0;
    const log = new RefusalLog(
      createLogger({ level: 'debug', format: 'json', destination }),
      () => now,
    );
    const scan = REFUSAL_LINES_PER_WINDOW + 25;
    for (let index = 0; index < scan; index++) log.record(`10.0.0.${index}`, 40_000);
    const INFO = 30;
    const DEBUG = 20;
    assert.equal(lines.filter((line) => line.level === INFO).length, REFUSAL_LINES_PER_WINDOW);
    assert.equal(lines.filter((line) => line.level === DEBUG).length, 25);
    assert.ok(
      lines.every((line) => line.msg === 'connection refused: source not in allowed_sources'),
    );
    assert.equal(lines[0]!.remote, '10.0.0.0');

    now += REFUSAL_WINDOW_MS;
    log.record('10.9.9.9', 40_001);
    const next = lines.at(-1)!;
    assert.equal(next.level, INFO);
    assert.equal(next.remote, '10.9.9.9');
    assert.equal(next.suppressed, 25);
    log.record('10.9.9.10', 40_002);
    assert.equal(lines.at(-1)!.suppressed, undefined);
  });
});
