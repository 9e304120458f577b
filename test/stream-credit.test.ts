import assert from 'node:assert/strict';
import { once } from 'node:events';
import { test } from 'node:test';
import { INITIAL_WINDOW, StreamKind } from '../src/tunnel/constants.js';
import { type StreamHost, TunnelStream } from '../src/tunnel/stream.js';

/** A StreamHost that records what the stream asks for and always gives `window`. */
function recordingHost(window: number) {
  const windows: number[] = [];
  const ended: number[] = [];
  const host: StreamHost = {
    sendData: () => undefined,
    sendWindow: (_streamId, increment) => windows.push(increment),
    windowFor: () => window,
    receiveEnded: (streamId) => ended.push(streamId),
    sendFin: () => undefined,
    sendReset: () => undefined,
    reserveSend: () => true,
    flowControlError: (_streamId, message) => assert.fail(message),
    release: () => undefined,
  };
  return { host, windows, ended };
}

const target = { kind: StreamKind.TCP, host: 'example.test', port: 80 } as const;
const chunk = () => Buffer.alloc(64 * 1024, 7);

test('consumed bytes are granted back up to the window the host gives', async () => {
  const { host, windows } = recordingHost(INITIAL_WINDOW);
  const stream = new TunnelStream(host, 1, target);
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
  const { host, windows, ended } = recordingHost(INITIAL_WINDOW);
  const stream = new TunnelStream(host, 3, target);
  for (let i = 0; i < 4; i++) stream.receiveData(chunk());
  stream.receiveFin();
  stream.receiveFin();
  stream.resume();
  await once(stream, 'end');
  assert.deepEqual(windows, []);
  assert.deepEqual(ended, [3]);
  stream.destroy();
});
