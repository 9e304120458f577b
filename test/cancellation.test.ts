import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Cancellation, cancellationFrom } from '../src/tunnel/cancellation.js';

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

test('cancellationFrom follows an AbortSignal until disposed', () => {
  const followed = new AbortController();
  const { cancellation } = cancellationFrom(followed.signal);
  const reason = new Error('user left');
  followed.abort(reason);
  assert.equal(cancellation.reason, reason);

  const disposedOf = new AbortController();
  const later = cancellationFrom(disposedOf.signal);
  later.dispose();
  disposedOf.abort(new Error('too late'));
  assert.equal(later.cancellation.cancelled, false);

  const { cancellation: atOnce } = cancellationFrom(AbortSignal.abort('not an Error'));
  assert.equal(atOnce.reason?.message, 'not an Error');
});
