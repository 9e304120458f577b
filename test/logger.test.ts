/**
 * deferredChild(): a per-connection logger that writes exactly the lines a pino child would, and
 * creates that child only when a line is written at an enabled level.
 */
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { test } from 'node:test';
import { createLogger, deferredChild, type Log } from '../src/observability/logger.js';

function capture(level: 'debug' | 'info'): { logger: Log; lines: () => Record<string, unknown>[] } {
  const chunks: string[] = [];
  const destination = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      chunks.push(chunk.toString());
      callback();
    },
  });
  const logger = createLogger({ level, format: 'json', destination });
  const lines = () =>
    chunks
      .join('')
      .split('\n')
      .filter((line) => line !== '')
      .map((line) => {
        const { time: _time, ...rest } = JSON.parse(line) as Record<string, unknown>;
        return rest;
      });
  return { logger, lines };
}

test('a deferred child writes the lines of a pino child, nested bindings included', () => {
  const deferred = capture('debug');
  const eager = capture('debug');
  const write = (log: Log) => {
    const conn = log === deferred.logger ? deferredChild(log, { conn: 7 }) : log.child({ conn: 7 });
    const target =
      log === deferred.logger
        ? deferredChild(conn, { target: 'example.com:443' })
        : conn.child({ target: 'example.com:443' });
    conn.debug('connected');
    target.info({ bytes: 12 }, 'relay closed');
    target.warn('refused: %s', 'policy');
    conn.error({ err: new Error('boom') }, 'crashed');
  };
  write(deferred.logger);
  write(eager.logger);
  assert.equal(deferred.lines().length, 4);
  assert.deepEqual(
    deferred.lines().map(({ err: _err, ...line }) => line),
    eager.lines().map(({ err: _err, ...line }) => line),
  );
  assert.deepEqual(deferred.lines()[1], {
    level: 30,
    conn: 7,
    target: 'example.com:443',
    bytes: 12,
    msg: 'relay closed',
  });
});

test('a deferred child makes no pino child until a line is written at an enabled level', () => {
  const { logger, lines } = capture('info');
  let children = 0;
  const counting: Log = {
    debug: logger.debug.bind(logger),
    info: logger.info.bind(logger),
    warn: logger.warn.bind(logger),
    error: logger.error.bind(logger),
    isLevelEnabled: (level) => logger.isLevelEnabled(level),
    child: (bindings) => {
      children += 1;
      return logger.child(bindings);
    },
  };
  const log = deferredChild(deferredChild(counting, { conn: 1 }), { group: 'team' });
  log.debug('not written at info');
  assert.equal(children, 0);
  assert.equal(lines().length, 0);
  log.info('written');
  log.info('written again');
  assert.equal(children, 1);
  assert.deepEqual(
    lines().map((line) => [line.conn, line.group, line.msg]),
    [
      [1, 'team', 'written'],
      [1, 'team', 'written again'],
    ],
  );
});
