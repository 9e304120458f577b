import assert from 'node:assert/strict';
import { test } from 'node:test';
import { abortSignalFor, Cancellation } from '../src/tunnel/cancellation.js';

test('cancel() calls each listener once, in order, with the reason', () => {
  const cancellation = new Cancellation();
  const heard: string[] = [];
  cancellation.onCancel((reason) => heard.push(`first: ${reason.message}`));
  cancellation.onCancel((reason) => heard.push(`second: ${reason.message}`));
  assert.equal(cancellation.cancelled, false);
  assert.equal(cancellation.reason, undefined);
  const reason = new Error('user left');
  cancellation.cancel(reason);
  cancellation.cancel(new Error('again'));
  assert.deepEqual(heard, ['first: user left', 'second: user left']);
  assert.equal(cancellation.cancelled, true);
  assert.equal(cancellation.reason, reason, 'the first reason stays');
});

test('a removed listener is not called; the others still are', () => {
  const cancellation = new Cancellation();
  const heard: string[] = [];
  const remove = cancellation.onCancel(() => heard.push('removed'));
  cancellation.onCancel(() => heard.push('kept'));
  remove();
  remove();
  cancellation.cancel(new Error('x'));
  assert.deepEqual(heard, ['kept']);
});

test('a listener added after the cancel is never called', () => {
  const cancellation = new Cancellation();
  cancellation.cancel(new Error('early'));
  let called = false;
  const remove = cancellation.onCancel(() => {
    called = true;
  });
  remove();
  cancellation.cancel(new Error('late'));
  assert.equal(called, false);
  assert.equal(cancellation.reason?.message, 'early');
});

test('abortSignalFor follows a cancellation until disposed', () => {
  const followed = new Cancellation();
  const { signal } = abortSignalFor(followed);
  assert.equal(signal.aborted, false);
  const reason = new Error('user left');
  followed.cancel(reason);
  assert.equal(signal.aborted, true);
  assert.equal(signal.reason, reason);

  const disposedOf = new Cancellation();
  const later = abortSignalFor(disposedOf);
  later.dispose();
  disposedOf.cancel(new Error('too late'));
  assert.equal(later.signal.aborted, false);

  const early = new Cancellation();
  const earlyReason = new Error('already gone');
  early.cancel(earlyReason);
  const atOnce = abortSignalFor(early).signal;
  assert.equal(atOnce.aborted, true);
  assert.equal(atOnce.reason, earlyReason);
});
