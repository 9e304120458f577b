/**
 * A minimal HTTP CONNECT client for load generation: one request with Basic proxy credentials,
 * then the socket is the tunnel. Like curl it waits for the proxy's answer before sending data.
 */
import { connect, type Socket } from 'node:net';
import type { Endpoint } from './socks5-client.js';

export interface HttpProxy {
  host: string;
  port: number;
  username: string;
  password: string;
}

/** Bytes a CONNECT answer's head may take before the proxy is treated as broken. */
const MAX_HEAD = 16 * 1024;

/** Opens a TCP connection to `target` through `proxy`'s CONNECT; resolves with the socket. */
export function httpConnect(
  proxy: HttpProxy,
  target: Endpoint,
  timeoutMs = 10_000,
): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: proxy.host, port: proxy.port, noDelay: true });
    let received: Buffer = Buffer.alloc(0);
    const fail = (message: string, cause?: Error) => {
      finish();
      socket.destroy();
      reject(new Error(`http CONNECT ${target.host}:${target.port}: ${message}`, { cause }));
    };
    const timer = setTimeout(() => fail(`no answer within ${timeoutMs} ms`), timeoutMs);
    const onError = (error: Error) => fail(error.message, error);
    const onClose = () => fail('proxy closed the connection before answering');
    const finish = () => {
      clearTimeout(timer);
      socket.off('readable', onReadable);
      socket.off('error', onError);
      socket.off('close', onClose);
    };
    const onReadable = () => {
      for (let chunk = socket.read() as Buffer | null; chunk; chunk = socket.read()) {
        received = received.length === 0 ? chunk : Buffer.concat([received, chunk]);
      }
      const end = received.indexOf('\r\n\r\n');
      if (end < 0) {
        if (received.length > MAX_HEAD) fail('answer head too long');
        return;
      }
      const statusLine = received.subarray(0, received.indexOf('\r\n')).toString('latin1');
      if (!/^HTTP\/1\.[01] 200 /.test(statusLine)) {
        fail(`refused: ${statusLine}`);
        return;
      }
      finish();
      // Anything after the head already came from the target.
      const rest = received.subarray(end + 4);
      if (rest.length > 0) socket.unshift(rest);
      resolve(socket);
    };
    socket.on('readable', onReadable);
    socket.on('error', onError);
    socket.on('close', onClose);
    const authority = `${target.host}:${target.port}`;
    const credentials = Buffer.from(`${proxy.username}:${proxy.password}`).toString('base64');
    socket.write(
      `CONNECT ${authority} HTTP/1.1\r\nHost: ${authority}\r\n` +
        `Proxy-Authorization: Basic ${credentials}\r\n\r\n`,
    );
  });
}
