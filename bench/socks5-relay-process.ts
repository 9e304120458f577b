/**
 * A second baseline for the connection rate: the least a Node SOCKS5 proxy can do for one new
 * connection. One process accepts the user, answers the greeting, checks the username and
 * password (RFC 1929) and the CONNECT request, dials the target itself and pipes both ways. No
 * tunnel, no TLS, no second process, no policy, no logging: the same two sockets per connection
 * that Postern's gateway and client hold between them, and the same round trips for the user.
 * What Postern's connection rates are set against besides the direct baseline.
 *
 * It serves the benchmark's own generator, so it understands what that sends (username/password
 * offered, IPv4 or domain targets) and refuses anything else by closing the connection.
 */
import { connect, createServer, type Socket } from 'node:net';
import { BENCH_GROUP } from './doors.js';
import { HeldSockets, join } from './held-sockets.js';
import { serveParent } from './ipc.js';

export interface Socks5RelayReady {
  port: number;
}

type Step = 'greeting' | 'auth' | 'request';

const CHOOSE_PASSWORD = Buffer.from([5, 2]);
const AUTH_OK = Buffer.from([1, 0]);
const CONNECTED = Buffer.from([5, 0, 0, 1, 0, 0, 0, 0, 0, 0]);

const sockets = new HeldSockets('socks5 relay');

/** Length of the `step` message at the front of `buffer`: 0 while incomplete, -1 if unreadable. */
function messageLength(step: Step, buffer: Buffer): number {
  const at = (index: number) => (index < buffer.length ? buffer[index]! : -1);
  let length: number;
  switch (step) {
    case 'greeting':
      length = at(1) < 0 ? Infinity : 2 + at(1);
      break;
    case 'auth': {
      const password = at(2 + at(1));
      length = at(1) < 0 || password < 0 ? Infinity : 3 + at(1) + password;
      break;
    }
    case 'request':
      if (at(3) === 1) length = 10;
      else if (at(3) === 3) length = at(4) < 0 ? Infinity : 7 + at(4);
      else if (at(3) < 0) length = Infinity;
      else return -1;
      break;
  }
  return buffer.length >= length ? length : 0;
}

function targetOf(request: Buffer): { host: string; port: number } {
  const port = request.readUInt16BE(request.length - 2);
  const host =
    request[3] === 1
      ? request.subarray(4, 8).join('.')
      : request.subarray(5, request.length - 2).toString('latin1');
  return { host, port };
}

function credentialsMatch(auth: Buffer): boolean {
  const userLength = auth[1]!;
  const user = auth.subarray(2, 2 + userLength).toString('utf8');
  const password = auth.subarray(3 + userLength).toString('utf8');
  return user === BENCH_GROUP.id && password === BENCH_GROUP.password;
}

function serve(user: Socket): void {
  sockets.track(user);
  let step: Step = 'greeting';
  let received: Buffer = Buffer.alloc(0);
  // The server is half-open for the relay's sake; a FIN before the CONNECT ends the attempt.
  const endedEarly = () => user.destroy();
  user.once('end', endedEarly);
  const onData = (data: Buffer) => {
    received = received.length === 0 ? data : Buffer.concat([received, data]);
    const length = messageLength(step, received);
    if (length < 0) {
      user.destroy();
      return;
    }
    if (length === 0) return;
    const message = received.subarray(0, length);
    received = received.subarray(length);
    if (step === 'greeting') {
      if (message[0] !== 5 || !message.subarray(2).includes(2)) {
        user.destroy();
        return;
      }
      user.write(CHOOSE_PASSWORD);
      step = 'auth';
    } else if (step === 'auth') {
      if (message[0] !== 1 || !credentialsMatch(message)) {
        user.end(Buffer.from([1, 1]));
        return;
      }
      user.write(AUTH_OK);
      step = 'request';
    } else {
      if (message[0] !== 5 || message[1] !== 1) {
        user.destroy();
        return;
      }
      user.off('data', onData);
      user.off('end', endedEarly);
      user.pause();
      dial(user, targetOf(message), received);
    }
  };
  user.on('data', onData);
}

function dial(user: Socket, target: { host: string; port: number }, early: Buffer): void {
  const far = sockets.track(connect({ ...target, noDelay: true, allowHalfOpen: true }));
  // Until the target answers: a user who leaves takes the half-made connection along, and a
  // failed dial closes the user. Afterwards join() ties the two.
  const dropFar = () => far.destroy();
  const dropUser = () => user.destroy();
  user.once('close', dropFar);
  far.once('error', dropUser);
  far.once('connect', () => {
    user.off('close', dropFar);
    far.off('error', dropUser);
    user.write(CONNECTED);
    if (early.length > 0) far.write(early);
    join(user, far);
  });
}

void serveParent<Socks5RelayReady>(async () => {
  const server = createServer({ noDelay: true, allowHalfOpen: true }, serve);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host: '127.0.0.1', port: 0, backlog: 4096 }, resolve);
  });
  const address = server.address();
  return {
    ready: { port: typeof address === 'object' && address ? address.port : 0 },
    openStreams: () => sockets.size,
    handlers: {
      idle: () => sockets.idle('the SOCKS5 relay to close its sockets'),
    },
    async close() {
      sockets.destroyAll();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
});
