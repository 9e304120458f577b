/**
 * A test-only spy on how sockets and WebSockets are closed. While installed it wraps
 * `net.Socket.prototype.destroy` (TLS sockets inherit it) and `WebSocket.prototype.close` /
 * `terminate`, and records every *second* close of the same object with the stack that made it.
 * It also collects every TCP socket created (client and server side) so a test can check that
 * each one ended destroyed.
 *
 * What counts as a second close:
 * - `socket.destroy()` on a socket whose `destroyed` was already true before the call (Node's own
 *   autoDestroy only destroys live sockets, so it never counts);
 * - `ws.close()` or `ws.terminate()` on a WebSocket already CLOSED;
 * - a `close()` after a `close()` or `terminate()`, or a `terminate()` after a `terminate()`, made
 *   from outside the `ws` library (a `terminate()` after a `close()` is the escalation of a close
 *   that did not finish, not a second close; `ws` calling its own `close()` to answer the peer's
 *   close frame is the closing handshake).
 */
import diagnosticsChannel from 'node:diagnostics_channel';
import net from 'node:net';
import { fileURLToPath } from 'node:url';
import WebSocket from 'ws';

/** Where the code that closed an object lives. */
export type CloseOrigin = 'product' | 'test' | 'library' | 'node';

export interface SecondClose {
  /** `socket.destroy`, `ws.close` or `ws.terminate`. */
  call: string;
  /** Describes the object: kind, addresses, state. */
  target: string;
  origin: CloseOrigin;
  stack: string;
}

type WsRequest = 'close' | 'terminate';

const CLIENT_CHANNEL = 'net.client.socket';
const SERVER_CHANNEL = 'net.server.socket';
const distRoot = fileURLToPath(new URL('../../', import.meta.url));
const thisFile = fileURLToPath(import.meta.url);

export class CloseSpy {
  readonly secondCloses: SecondClose[] = [];
  #sockets = new Set<net.Socket>();
  #wsRequests = new WeakMap<WebSocket, WsRequest[]>();
  #restorers: (() => void)[] = [];

  /** Number of TCP sockets seen so far. */
  get socketCount(): number {
    return this.#sockets.size;
  }

  /** Starts spying. Call `restore()` when done (in `finally` or `t.after`). */
  install(): void {
    if (this.#restorers.length > 0) throw new Error('CloseSpy is already installed');
    const spy = this;
    const onSocket = (message: unknown) => {
      spy.#sockets.add((message as { socket: net.Socket }).socket);
    };
    diagnosticsChannel.subscribe(CLIENT_CHANNEL, onSocket);
    diagnosticsChannel.subscribe(SERVER_CHANNEL, onSocket);
    this.#restorers.push(() => {
      diagnosticsChannel.unsubscribe(CLIENT_CHANNEL, onSocket);
      diagnosticsChannel.unsubscribe(SERVER_CHANNEL, onSocket);
    });

    // tls.connect (what `ws` uses for wss:) does not publish on net.client.socket; connect() sees it.
    this.#wrap(
      net.Socket.prototype,
      'connect',
      (original) =>
        function (this: net.Socket, ...args: unknown[]) {
          spy.#sockets.add(this);
          return original.apply(this, args);
        },
    );
    this.#wrap(
      net.Socket.prototype,
      'destroy',
      (original) =>
        function (this: net.Socket, ...args: unknown[]) {
          if (this.destroyed) spy.#recordSecond('socket.destroy', describeSocket(this));
          return original.apply(this, args);
        },
    );
    for (const request of ['close', 'terminate'] as const) {
      this.#wrap(
        WebSocket.prototype,
        request,
        (original) =>
          function (this: WebSocket, ...args: unknown[]) {
            spy.#onWsRequest(this, request);
            return original.apply(this, args);
          },
      );
    }
  }

  /** Puts every wrapped method back and stops collecting sockets. Idempotent. */
  restore(): void {
    for (const restore of this.#restorers.splice(0).reverse()) restore();
  }

  /** Sockets seen that are not destroyed yet. */
  liveSockets(): net.Socket[] {
    return [...this.#sockets].filter((socket) => !socket.destroyed);
  }

  /**
   * Resolves once every socket seen has emitted 'close', or after `timeoutMs` with those that
   * have not (so a leak is reported, not waited on forever).
   */
  async unclosedSocketsAfter(timeoutMs: number): Promise<string[]> {
    const pending = [...this.#sockets].filter((socket) => !socket.closed);
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<void>((resolve) => {
      timer = setTimeout(resolve, timeoutMs);
    });
    const allClosed = Promise.all(
      pending.map((socket) => new Promise((resolve) => socket.once('close', resolve))),
    );
    await Promise.race([allClosed, deadline]);
    clearTimeout(timer);
    return pending.filter((socket) => !socket.closed).map(describeSocket);
  }

  #onWsRequest(ws: WebSocket, request: WsRequest): void {
    const stack = captureStack();
    const fromLibrary = originOf(stack) === 'library';
    const target = `WebSocket readyState=${ws.readyState} url=${ws.url ?? '(server side)'}`;
    if (ws.readyState === WebSocket.CLOSED) {
      this.#recordSecond(`ws.${request}`, target, stack);
      return;
    }
    if (fromLibrary) return;
    const earlier = this.#wsRequests.get(ws) ?? [];
    const repeated = request === 'close' ? earlier.length > 0 : earlier.includes('terminate');
    if (repeated)
      this.#recordSecond(`ws.${request}`, `${target} after ${earlier.join(', ')}`, stack);
    earlier.push(request);
    this.#wsRequests.set(ws, earlier);
  }

  #recordSecond(call: string, target: string, stack = captureStack()): void {
    this.secondCloses.push({ call, target, origin: originOf(stack), stack });
  }

  #wrap<T extends object, K extends keyof T & string>(
    prototype: T,
    name: K,
    wrapper: (original: (...args: unknown[]) => unknown) => (...args: unknown[]) => unknown,
  ): void {
    const own = Object.getOwnPropertyDescriptor(prototype, name);
    const original = prototype[name] as unknown as (...args: unknown[]) => unknown;
    Object.defineProperty(prototype, name, {
      value: wrapper(original),
      writable: true,
      configurable: true,
    });
    this.#restorers.push(() => {
      if (own) Object.defineProperty(prototype, name, own);
      else Reflect.deleteProperty(prototype, name);
    });
  }
}

/** The stack of the close call, from its caller down (the spy's own frames left out). */
function captureStack(): string {
  const limit = Error.stackTraceLimit;
  Error.stackTraceLimit = 40;
  const stack = new Error('close call').stack ?? '';
  Error.stackTraceLimit = limit;
  return stack
    .split('\n')
    .slice(1)
    .filter((frame) => !frame.includes(thisFile))
    .join('\n');
}

/** The first frame outside this file and outside Node's internals says who made the call. */
function originOf(stack: string): CloseOrigin {
  for (const frame of stack.split('\n')) {
    const location = /(?:\(|at )(file:\/\/[^)]*|\/[^)]*):\d+:\d+\)?$/.exec(frame.trim())?.[1];
    if (location === undefined) continue;
    const path = location.startsWith('file:') ? fileURLToPath(location) : location;
    if (path.includes('/node_modules/')) return 'library';
    if (path.startsWith(`${distRoot}src/`)) return 'product';
    return 'test';
  }
  return 'node';
}

function describeSocket(socket: net.Socket): string {
  const kind = socket.constructor.name;
  const local = `${socket.localAddress ?? '?'}:${socket.localPort ?? '?'}`;
  const remote = `${socket.remoteAddress ?? '?'}:${socket.remotePort ?? '?'}`;
  return `${kind} ${local} -> ${remote} destroyed=${socket.destroyed}`;
}
