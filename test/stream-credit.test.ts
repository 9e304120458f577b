import assert from 'node:assert/strict';
import { once } from 'node:events';
import { test } from 'node:test';
import { INITIAL_WINDOW } from '../src/tunnel/constants.js';
import { TunnelStream } from '../src/tunnel/stream.js';
import { recordingStreamHost, TCP_TARGET } from './helpers/stream-host.js';

const chunk = () => Buffer.alloc(64 * 1024, 7);

test('consumed bytes are granted back up to the window the host gives', async () => {
  const { host, windows } = recordingStreamHost(INITIAL_WINDOW);
  const stream = new TunnelStream(host, 1, TCP_TARGET);
  for (let i = 0; i < 4; i++) stream.receiveData(chunk());
  stream.resume();
  await new Promise((resolve) => setImmediate(resolve));
  assert.equal(
    windows.reduce((sum, increment) => sum + increment, 0),
    INITIAL_WINDOW,
    'all consumed credit came back',
  );
  stream.destroy();
});

test('after FIN the stream grants no credit and tells the host once', async () => {
  const { host, windows, ended } = recordingStreamHost(INITIAL_WINDOW);
  const stream = new TunnelStream(host, 3, TCP_TARGET);
  for (let i = 0; i < 4; i++) stream.receiveData(chunk());
  stream.receiveFin();
  stream.receiveFin();
  stream.resume();
  await once(stream, 'end');
  assert.deepEqual(windows, []);
  assert.deepEqual(ended, [3]);
  stream.destroy();
});
