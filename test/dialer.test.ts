import assert from 'node:assert/strict';
import diagnostics from 'node:diagnostics_channel';
import { once } from 'node:events';
import net from 'node:net';
import { after, before, describe, test } from 'node:test';
import { dial } from '../src/client/dialer.js';
import { AccessPolicy, type LookupFunction } from '../src/client/policy.js';
import { isPosternError } from '../src/errors.js';
import { Cancellation } from '../src/tunnel/cancellation.js';
import { Reason, reasonName } from '../src/tunnel/constants.js';

const loopbackAllowed = AccessPolicy.parse({
  allowed_hosts: ['127.0.0.1', '::1'],
  forbidden_hosts: [],
});
const everythingButLoopback = AccessPolicy.parse({ allowed_hosts: [], forbidden_hosts: [] });

/** A lookup that never answers, and counts how often it was asked. */
function hangingLookup(): LookupFunction & { calls: number } {
  const lookup = Object.assign(
    (): Promise<never> => {
      lookup.calls += 1;
      return new Promise<never>(() => {
        // Never settles: a resolver that does not answer.
      });
    },
    { calls: 0 },
  );
  return lookup;
}

function fixedLookup(addresses: string[]): LookupFunction {
  return async () => addresses.map((address) => ({ address, family: net.isIP(address) }));
}

/** Asserts a rejection with POSTERN_ERR_OPEN_FAILED and the given reason; returns the error. */
async function rejectsWith(dialing: Promise<net.Socket>, reason: Reason): Promise<Error> {
  let caught: unknown;
  await assert.rejects(dialing, (err: unknown) => {
    caught = err;
    return true;
  });
  assert.ok(isPosternError(caught, 'POSTERN_ERR_OPEN_FAILED'), String(caught));
  assert.equal(reasonName(caught.reason ?? -1), reasonName(reason), caught.message);
  return caught;
}

function activeTimers(): number {
  return process.getActiveResourcesInfo().filter((resource) => resource === 'Timeout').length;
}

interface CreatedSocket {
  readonly socket: net.Socket;
  destroyCalls: number;
}

/** Records every client socket `net.connect` creates, counting calls to its `destroy`. */
function watchClientSockets(onCreate?: (created: CreatedSocket) => void): {
  created: CreatedSocket[];
  stop: () => void;
} {
  const created: CreatedSocket[] = [];
  const listener = (message: unknown): void => {
    const { socket } = message as { socket: net.Socket };
    const record: CreatedSocket = { socket, destroyCalls: 0 };
    const destroy = socket.destroy.bind(socket);
    socket.destroy = (error?: Error) => {
      record.destroyCalls += 1;
      return destroy(error);
    };
    created.push(record);
    onCreate?.(record);
  };
  diagnostics.subscribe('net.client.socket', listener);
  return { created, stop: () => diagnostics.unsubscribe('net.client.socket', listener) };
}

async function readAll(socket: net.Socket): Promise<string> {
  socket.setEncoding('utf8');
  let received = '';
  for await (const chunk of socket) received += chunk;
  return received;
}

async function closedPort(): Promise<number> {
  const server = net.createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as net.AddressInfo;
  server.close();
  await once(server, 'close');
  return port;
}

describe('dial', () => {
  const server = net.createServer((socket) => {
    socket.end('hello');
  });
  let port = 0;

  before(async () => {
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    port = (server.address() as net.AddressInfo).port;
  });

  after(async () => {
    server.close();
    await once(server, 'close');
  });

  test('connects to an explicitly allowed 127.0.0.1 and returns a socket with no timeout', async () => {
    const timersBefore = activeTimers();
    const socket = await dial('127.0.0.1', port, { policy: loopbackAllowed, timeoutMs: 60_000 });
    try {
      assert.equal(activeTimers(), timersBefore, 'the dial deadline is cleared');
      assert.equal(socket.timeout, undefined);
      assert.equal(socket.remoteAddress, '127.0.0.1');
      assert.equal(socket.remotePort, port);
      assert.equal(await readAll(socket), 'hello');
    } finally {
      socket.destroy();
    }
  });

  test('tries the allowed addresses in order until one accepts', async () => {
    // Nothing listens on ::1 at this port, so the first attempt fails; the loop must go on.
    const socket = await dial('twice.test', port, {
      policy: loopbackAllowed,
      timeoutMs: 5_000,
      lookup: fixedLookup(['::1', '127.0.0.1']),
    });
    try {
      assert.equal(socket.remoteAddress, '127.0.0.1');
      assert.equal(await readAll(socket), 'hello');
    } finally {
      socket.destroy();
    }
  });

  test('when every address fails, the error names them all', async () => {
    const refused = await closedPort();
    const twoAddresses = fixedLookup(['127.0.0.1', '::1']);
    const err = await rejectsWith(
      dial('twice.test', refused, {
        policy: loopbackAllowed,
        timeoutMs: 5_000,
        lookup: twoAddresses,
      }),
      Reason.CONNECTION_REFUSED,
    );
    assert.ok(err.message.includes('tried 127.0.0.1, ::1'), err.message);
  });

  test('every socket a failed dial creates is destroyed exactly once', async () => {
    const refused = await closedPort();
    const watch = watchClientSockets();
    try {
      await rejectsWith(
        dial('twice.test', refused, {
          policy: loopbackAllowed,
          timeoutMs: 5_000,
          lookup: fixedLookup(['127.0.0.1', '127.0.0.1']),
        }),
        Reason.CONNECTION_REFUSED,
      );
    } finally {
      watch.stop();
    }
    assert.equal(watch.created.length, 2);
    for (const { socket, destroyCalls } of watch.created) {
      assert.equal(socket.destroyed, true);
      assert.equal(destroyCalls, 1);
    }
  });

  test('cancelling while a connect is in progress destroys that socket once (CANCELLED)', async () => {
    const refused = await closedPort();
    const cancellation = new Cancellation();
    // Cancel as soon as the dialer has started its connect, before the event loop can report it.
    const watch = watchClientSockets(() =>
      queueMicrotask(() => cancellation.cancel(new Error('user went away'))),
    );
    try {
      await rejectsWith(
        dial('127.0.0.1', refused, {
          policy: loopbackAllowed,
          timeoutMs: 60_000,
          cancellation,
        }),
        Reason.CANCELLED,
      );
    } finally {
      watch.stop();
    }
    assert.equal(watch.created.length, 1);
    assert.equal(watch.created[0]!.destroyCalls, 1);
    assert.equal(watch.created[0]!.socket.destroyed, true);
  });

  test('a closed port is CONNECTION_REFUSED, keeping the ECONNREFUSED as cause', async () => {
    const refused = await closedPort();
    const timersBefore = activeTimers();
    const err = await rejectsWith(
      dial('127.0.0.1', refused, { policy: loopbackAllowed, timeoutMs: 5_000 }),
      Reason.CONNECTION_REFUSED,
    );
    assert.equal((err.cause as NodeJS.ErrnoException).code, 'ECONNREFUSED');
    assert.ok(err.message.includes(`127.0.0.1:${refused}`), err.message);
    assert.equal(activeTimers(), timersBefore, 'the dial deadline is cleared');
  });

  test('a name under .invalid is DNS_FAILURE', async () => {
    const err = await rejectsWith(
      dial('postern-dialer-test.invalid', 80, { policy: everythingButLoopback, timeoutMs: 10_000 }),
      Reason.DNS_FAILURE,
    );
    assert.ok(err.message.includes('postern-dialer-test.invalid'), err.message);
    assert.ok(err.cause instanceof Error);
  });

  test('loopback without an explicit allow is FORBIDDEN and never connects', async () => {
    const err = await rejectsWith(
      dial('127.0.0.1', port, { policy: everythingButLoopback, timeoutMs: 5_000 }),
      Reason.FORBIDDEN,
    );
    assert.ok(err.message.includes('loopback'), err.message);
    const connections = await new Promise<number>((resolve, reject) => {
      server.getConnections((error, count) => (error ? reject(error) : resolve(count)));
    });
    assert.equal(connections, 0);
  });

  test('a dial that outlasts its deadline is DIAL_TIMEOUT', async () => {
    const lookup = hangingLookup();
    const err = await rejectsWith(
      dial('slow.test', 80, { policy: everythingButLoopback, timeoutMs: 20, lookup }),
      Reason.DIAL_TIMEOUT,
    );
    assert.ok(err.message.includes('slow.test:80'), err.message);
    assert.equal(lookup.calls, 1);
  });

  test('cancelling cancels the dial (CANCELLED) and clears the deadline', async () => {
    const lookup = hangingLookup();
    const cancellation = new Cancellation();
    const timersBefore = activeTimers();
    const dialing = dial('slow.test', 80, {
      policy: everythingButLoopback,
      timeoutMs: 60_000,
      cancellation,
      lookup,
    });
    cancellation.cancel(new Error('user went away'));
    const err = await rejectsWith(dialing, Reason.CANCELLED);
    assert.equal((err.cause as Error).message, 'user went away');
    assert.equal(activeTimers(), timersBefore);
  });

  test('an already cancelled dial stops before any lookup', async () => {
    const lookup = hangingLookup();
    const cancellation = new Cancellation();
    cancellation.cancel(new Error('gone before the dial'));
    await rejectsWith(
      dial('slow.test', 80, {
        policy: everythingButLoopback,
        timeoutMs: 60_000,
        cancellation,
        lookup,
      }),
      Reason.CANCELLED,
    );
    assert.equal(lookup.calls, 0);
  });

  test('an unexpected resolver error is INTERNAL_ERROR with the error as cause', async () => {
    const failure = Object.assign(new Error('resolver exploded'), { code: 'EPERM' });
    const err = await rejectsWith(
      dial('odd.test', 80, {
        policy: everythingButLoopback,
        timeoutMs: 5_000,
        lookup: async () => {
          throw failure;
        },
      }),
      Reason.INTERNAL_ERROR,
    );
    assert.equal(err.cause, failure);
  });
});
