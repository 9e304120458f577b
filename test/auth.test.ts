import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { FailureLimiter, GroupAuthority, safeEqual } from '../src/gateway/auth.js';
import { Cancellation, type CancelSignal } from '../src/tunnel/cancellation.js';

describe('safeEqual', () => {
  it('is true only for identical strings', () => {
    assert.equal(safeEqual('secret', 'secret'), true);
    assert.equal(safeEqual('', ''), true);
    assert.equal(safeEqual('secret', 'secreT'), false);
    assert.equal(safeEqual('secret', 'secret '), false);
    assert.equal(safeEqual('secret', ''), false);
    assert.equal(safeEqual('short', 'a much longer string than the other'), false);
  });

  it('compares unicode by content, not by length in bytes', () => {
    assert.equal(safeEqual('pässwörd', 'pässwörd'), true);
    assert.equal(safeEqual('pässwörd', 'passwörd'), false);
  });
});

describe('GroupAuthority gateway credentials', () => {
  const configured = new GroupAuthority({
    authUsername: 'tunnel',
    authPassword: 's3cret',
    groups: [],
  });

  it('accepts the configured user and password', () => {
    assert.equal(configured.checkGatewayCredentials('tunnel', 's3cret'), true);
  });

  it('refuses a wrong user, a wrong password, or missing credentials', () => {
    assert.equal(configured.checkGatewayCredentials('tunnel2', 's3cret'), false);
    assert.equal(configured.checkGatewayCredentials('tunnel', 's3cret!'), false);
    assert.equal(configured.checkGatewayCredentials('s3cret', 'tunnel'), false);
    assert.equal(configured.checkGatewayCredentials(undefined, undefined), false);
    assert.equal(configured.checkGatewayCredentials('tunnel', undefined), false);
  });

  it('accepts anything when no gateway credentials are configured', () => {
    const open = new GroupAuthority({ groups: [] });
    assert.equal(open.checkGatewayCredentials(undefined, undefined), true);
    assert.equal(open.checkGatewayCredentials('whoever', 'whatever'), true);
  });
});

describe('GroupAuthority groups', () => {
  it('verifies a provisioned group and refuses a wrong password for it', async () => {
    const authority = new GroupAuthority({ groups: [{ id: 'ops', password: 'ops-pass' }] });
    assert.equal(await authority.checkGroup('ops', 'ops-pass', false), 'ok');
    assert.equal(await authority.checkGroup('ops', 'wrong', false), 'mismatch');
    // A binding client cannot replace a provisioned password.
    assert.equal(await authority.checkGroup('ops', 'wrong', true), 'mismatch');
    assert.equal(await authority.checkGroup('ops', 'ops-pass', true), 'ok');
  });

  it('the first binder binds an unknown group; later binders must match it', async () => {
    const authority = new GroupAuthority({ groups: [] });
    assert.equal(await authority.checkGroup('new', 'first', true), 'ok');
    assert.equal(await authority.checkGroup('new', 'second', true), 'mismatch');
    assert.equal(await authority.checkGroup('new', 'second', false), 'mismatch');
    assert.equal(await authority.checkGroup('new', 'first', false), 'ok');
  });

  it('without bind, an unknown group is "unknown" and stays unbound', async () => {
    const authority = new GroupAuthority({ groups: [] });
    assert.equal(await authority.checkGroup('ghost', 'pw', false), 'unknown');
    assert.equal(await authority.checkGroup('ghost', 'other', false), 'unknown');
    assert.equal(await authority.checkGroup('ghost', 'other', true), 'ok');
    assert.equal(await authority.checkGroup('ghost', 'pw', false), 'mismatch');
  });

  it('of concurrent binds of a new group with different passwords exactly one wins', async () => {
    const authority = new GroupAuthority({ groups: [] });
    const passwords = ['alpha', 'bravo', 'charlie', 'delta'];
    const results = await Promise.all(
      passwords.map((pw) => authority.checkGroup('race', pw, true)),
    );
    const winners = passwords.filter((_, i) => results[i] === 'ok');
    assert.equal(winners.length, 1, `results: ${results.join(',')}`);
    assert.deepEqual(
      results.filter((r) => r !== 'ok'),
      ['mismatch', 'mismatch', 'mismatch'],
    );
    for (const pw of passwords) {
      const expected = pw === winners[0] ? 'ok' : 'mismatch';
      assert.equal(await authority.checkGroup('race', pw, true), expected);
    }
  });

  it('the verified-password cache still rejects wrong passwords', async () => {
    const authority = new GroupAuthority({
      groups: [
        { id: 'a', password: 'pass-a' },
        { id: 'b', password: 'pass-b' },
      ],
    });
    assert.equal(await authority.checkGroup('a', 'pass-a', false), 'ok');
    assert.equal(await authority.checkGroup('a', 'pass-a', false), 'ok');
    assert.equal(await authority.checkGroup('a', 'pass-b', false), 'mismatch');
    assert.equal(await authority.checkGroup('a', 'pass-a ', false), 'mismatch');
    // A password cached for one group does not open another.
    assert.equal(await authority.checkGroup('b', 'pass-a', false), 'mismatch');
    assert.equal(await authority.checkGroup('b', 'pass-b', false), 'ok');
  });
});

describe('FailureLimiter', () => {
  const address = '192.0.2.1';

  it('does not delay the first freeFailures failures', () => {
    const limiter = new FailureLimiter({ freeFailures: 3 });
    assert.equal(limiter.delayFor(address), 0);
    for (let i = 0; i < 2; i++) {
      limiter.recordFailure(address);
      assert.equal(limiter.delayFor(address), 0, `after ${i + 1} failures`);
    }
    limiter.recordFailure(address);
    assert.ok(limiter.delayFor(address) > 0, 'delayed once freeFailures have been used');
  });

  it('delays more with each further failure, up to maxDelayMs', () => {
    const limiter = new FailureLimiter({ freeFailures: 2, maxDelayMs: 3000, blockAfter: 1000 });
    limiter.recordFailure(address);
    limiter.recordFailure(address);
    const delays: number[] = [];
    for (let i = 0; i < 40; i++) {
      delays.push(limiter.delayFor(address));
      limiter.recordFailure(address);
    }
    assert.ok(delays[0]! > 0);
    for (let i = 1; i < delays.length; i++) {
      assert.ok(delays[i]! >= delays[i - 1]!, `delay ${i} shrank: ${delays.join(',')}`);
      assert.ok(delays[i]! <= 3000, `delay ${i} exceeds the cap: ${delays[i]}`);
    }
    assert.ok(delays[1]! > delays[0]!, 'the second delayed answer waits longer');
    assert.equal(delays.at(-1), 3000);
    assert.ok(Number.isFinite(limiter.delayFor(address)));
  });

  it('blocks an address after blockAfter failures, and only that address', () => {
    const limiter = new FailureLimiter({ blockAfter: 4 });
    for (let i = 0; i < 3; i++) limiter.recordFailure(address);
    assert.equal(limiter.isBlocked(address), false);
    limiter.recordFailure(address);
    assert.equal(limiter.isBlocked(address), true);
    assert.equal(limiter.isBlocked('192.0.2.2'), false);
    assert.equal(limiter.delayFor('192.0.2.2'), 0);
  });

  it('recordSuccess clears the address', () => {
    const limiter = new FailureLimiter({ freeFailures: 1, blockAfter: 3 });
    for (let i = 0; i < 3; i++) limiter.recordFailure(address);
    assert.equal(limiter.isBlocked(address), true);
    limiter.recordSuccess(address);
    assert.equal(limiter.isBlocked(address), false);
    assert.equal(limiter.delayFor(address), 0);
  });

  it('forgets failures once the window has passed', (t) => {
    t.mock.timers.enable({ apis: ['Date'], now: 1_000_000 });
    const limiter = new FailureLimiter({ freeFailures: 1, windowMs: 10_000, blockAfter: 2 });
    limiter.recordFailure(address);
    limiter.recordFailure(address);
    t.mock.timers.tick(10_000);
    assert.equal(limiter.isBlocked(address), true, 'still inside the window');
    t.mock.timers.tick(1);
    assert.equal(limiter.isBlocked(address), false);
    assert.equal(limiter.delayFor(address), 0);
    // A failure after expiry starts a fresh count.
    limiter.recordFailure(address);
    assert.equal(limiter.isBlocked(address), false);
  });

  it('remembers at most maxAddresses, forgetting the oldest first', () => {
    const limiter = new FailureLimiter({ blockAfter: 1, maxAddresses: 3 });
    for (const a of ['10.0.0.1', '10.0.0.2', '10.0.0.3']) limiter.recordFailure(a);
    // A repeat failure must not count as a new address.
    limiter.recordFailure('10.0.0.1');
    assert.ok(['10.0.0.1', '10.0.0.2', '10.0.0.3'].every((a) => limiter.isBlocked(a)));
    limiter.recordFailure('10.0.0.4');
    assert.equal(limiter.isBlocked('10.0.0.1'), false, 'the oldest address was forgotten');
    for (const a of ['10.0.0.2', '10.0.0.3', '10.0.0.4']) assert.equal(limiter.isBlocked(a), true);
  });

  it('wait() returns at once without failures and waits out a delay', async () => {
    const limiter = new FailureLimiter({ freeFailures: 1, maxDelayMs: 40 });
    const signal = new AbortController().signal;
    let started = performance.now();
    await limiter.wait(address, signal);
    assert.ok(performance.now() - started < 20);
    limiter.recordFailure(address);
    assert.equal(limiter.delayFor(address), 40);
    started = performance.now();
    await limiter.wait(address, signal);
    assert.ok(performance.now() - started >= 38, 'waited for the delay');
  });

  it('wait() rejects with AbortError as soon as the signal aborts', async () => {
    const limiter = new FailureLimiter({ freeFailures: 1, maxDelayMs: 60_000, blockAfter: 1000 });
    for (let i = 0; i < 30; i++) limiter.recordFailure(address);
    assert.equal(limiter.delayFor(address), 60_000);
    const controller = new AbortController();
    const started = performance.now();
    const waiting = limiter.wait(address, controller.signal);
    setImmediate(() => controller.abort());
    await assert.rejects(waiting, { name: 'AbortError' });
    assert.ok(performance.now() - started < 1000);
    await assert.rejects(limiter.wait(address, AbortSignal.abort()), { name: 'AbortError' });
  });

  it('wait() rejects with AbortError as soon as a cancellation is cancelled', async () => {
    const limiter = new FailureLimiter({ freeFailures: 1, maxDelayMs: 60_000, blockAfter: 1000 });
    for (let i = 0; i < 30; i++) limiter.recordFailure(address);
    const left = new Cancellation();
    const started = performance.now();
    const waiting = limiter.wait(address, left);
    setImmediate(() => left.cancel(new Error('user left')));
    await assert.rejects(waiting, { name: 'AbortError' });
    assert.ok(performance.now() - started < 1000);
    await assert.rejects(limiter.wait(address, left), { name: 'AbortError' });
  });

  it('wait() leaves no listener on a cancellation that outlives it', async () => {
    const limiter = new FailureLimiter({ freeFailures: 1, maxDelayMs: 20 });
    limiter.recordFailure(address);
    assert.equal(limiter.delayFor(address), 20);
    const connection = new Cancellation();
    let listening = 0;
    const counting: CancelSignal = {
      get cancelled() {
        return connection.cancelled;
      },
      get reason() {
        return connection.reason;
      },
      onCancel(listener) {
        listening += 1;
        const remove = connection.onCancel(listener);
        return () => {
          listening -= 1;
          remove();
        };
      },
    };
    await limiter.wait(address, counting);
    assert.equal(listening, 0);
  });

  it('wait() given milliseconds gives up after that long, rejecting with AbortError', async () => {
    const limiter = new FailureLimiter({ freeFailures: 1, maxDelayMs: 60_000, blockAfter: 1000 });
    for (let i = 0; i < 30; i++) limiter.recordFailure(address);
    const started = performance.now();
    await assert.rejects(limiter.wait(address, 20), { name: 'AbortError' });
    assert.ok(performance.now() - started < 1000);
  });
});
