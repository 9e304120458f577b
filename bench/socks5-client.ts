/**
 * A minimal SOCKS5 CONNECT client for load generation (RFC 1928 + RFC 1929): username/password
 * or no authentication, IPv4 or domain targets. Like curl it waits for each answer before the
 * next message (no pipelining), so a connection costs the same round trips as a real user's.
 */
import { connect, isIPv4, type Socket } from 'node:net';

export interface Socks5Proxy {
  host: string;
  port: number;
  /** Without credentials only the no-auth method is offered. */
  username?: string;
  password?: string;
}

export interface Endpoint {
  host: string;
  port: number;
}

type Step = 'method' | 'auth' | 'reply';

function greeting(proxy: Socks5Proxy): Buffer {
  return proxy.username === undefined ? Buffer.from([5, 1, 0]) : Buffer.from([5, 1, 2]);
}

function authRequest(username: string, password: string): Buffer {
  const user = Buffer.from(username, 'utf8');
  const pass = Buffer.from(password, 'utf8');
  return Buffer.concat([Buffer.from([1, user.length]), user, Buffer.from([pass.length]), pass]);
}

function connectRequest(target: Endpoint): Buffer {
  const port = Buffer.alloc(2);
  port.writeUInt16BE(target.port, 0);
  if (isIPv4(target.host)) {
    const address = target.host.split('.').map(Number);
    return Buffer.concat([Buffer.from([5, 1, 0, 1, ...address]), port]);
  }
  const name = Buffer.from(target.host, 'ascii');
  return Buffer.concat([Buffer.from([5, 1, 0, 3, name.length]), name, port]);
}

/** Length of a CONNECT reply that starts with `head`, or 0 while too little has arrived. */
function replyLength(head: Buffer): number {
  if (head.length < 5) return 0;
  switch (head[3]) {
    case 1:
      return 10;
    case 4:
      return 22;
    case 3:
      return 7 + head[4]!;
    default:
      return -1;
  }
}

/** Opens a TCP connection to `target` through `proxy`; resolves with the spliced socket. */
export function socks5Connect(
  proxy: Socks5Proxy,
  target: Endpoint,
  timeoutMs = 10_000,
): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: proxy.host, port: proxy.port, noDelay: true });
    let step: Step = 'method';
    let received: Buffer = Buffer.alloc(0);
    const fail = (message: string, cause?: Error) => {
      finish();
      socket.destroy();
      reject(new Error(`socks5 ${target.host}:${target.port}: ${message}`, { cause }));
    };
    const timer = setTimeout(() => fail(`no answer within ${timeoutMs} ms`), timeoutMs);
    const onError = (error: Error) => fail(error.message, error);
    const onClose = () => fail(`proxy closed the connection during ${step}`);
    const finish = () => {
      clearTimeout(timer);
      socket.off('readable', onReadable);
      socket.off('error', onError);
      socket.off('close', onClose);
    };
    /** Takes `length` bytes off the front of what was received, or null if not there yet. */
    const take = (length: number): Buffer | null => {
      if (received.length < length) return null;
      const head = received.subarray(0, length);
      received = received.subarray(length);
      return head;
    };
    const advance = (): boolean => {
      switch (step) {
        case 'method': {
          const answer = take(2);
          if (!answer) return false;
          if (answer[1] === 2 && proxy.username !== undefined) {
            socket.write(authRequest(proxy.username, proxy.password ?? ''));
            step = 'auth';
          } else if (answer[1] === 0) {
            socket.write(connectRequest(target));
            step = 'reply';
          } else {
            fail(`proxy chose method ${answer[1]}`);
            return false;
          }
          return true;
        }
        case 'auth': {
          const answer = take(2);
          if (!answer) return false;
          if (answer[1] !== 0) {
            fail('authentication refused');
            return false;
          }
          socket.write(connectRequest(target));
          step = 'reply';
          return true;
        }
        case 'reply': {
          const length = replyLength(received);
          if (length === 0 || received.length < length) return false;
          if (length < 0 || received[1] !== 0) {
            fail(`CONNECT refused with reply ${received[1]}`);
            return false;
          }
          take(length);
          finish();
          // Anything after the reply already came from the target.
          if (received.length > 0) socket.unshift(received);
          resolve(socket);
          return false;
        }
      }
    };
    const onReadable = () => {
      for (let chunk = socket.read() as Buffer | null; chunk; chunk = socket.read()) {
        received = received.length === 0 ? chunk : Buffer.concat([received, chunk]);
      }
      while (advance());
    };
    socket.on('readable', onReadable);
    socket.on('error', onError);
    socket.on('close', onClose);
    socket.once('connect', () => socket.write(greeting(proxy)));
  });
}
