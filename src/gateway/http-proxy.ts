/**
 * The HTTP proxy protocol (RFC 9110, RFC 9112) on a Node http or https server: CONNECT tunnels,
 * absolute-form requests forwarded with keep-alive on both sides, upgrades (WebSocket and any
 * other), Basic proxy authentication, and failures that say what happened (RFC 9209
 * `Proxy-Status`). Node's server parses; this module decides.
 *
 * Choices the RFCs leave open:
 * - Each user connection has its own pool of tunnel streams (one http.Agent per group it uses),
 *   destroyed with the connection: streams are never shared between users.
 * - Deadlines: the request head has one (`headersTimeout`, the gateway's handshake timeout); a
 *   body, a response, an established CONNECT tunnel and an upgraded connection have none. A
 *   kept-alive connection idle *between* requests closes after {@link KEEP_ALIVE_TIMEOUT_MS}.
 * - An upgrade request is forwarded raw: its head is rewritten for the target, then the user's
 *   connection and the stream are spliced, so the target's answer (101 or not) reaches the user
 *   as it is and the connection carries whatever protocol follows.
 * - A request's Transfer-Encoding is forwarded, so Node's client re-applies the chunked framing
 *   its parser removed; a response's is dropped and Node frames the body as the user's HTTP
 *   version allows (chunked for 1.1, until-close for 1.0).
 * - `userinfo` in a request target is refused (RFC 9110 §4.2.4); `https://` targets are refused
 *   with a hint to use CONNECT.
 */
import type { EventEmitter } from 'node:events';
import {
  Agent,
  type ClientRequestArgs,
  request as httpRequest,
  type IncomingMessage,
  type ServerOptions,
  type ServerResponse,
  STATUS_CODES,
} from 'node:http';
import { isIPv6, type Socket } from 'node:net';
import { type Duplex, finished } from 'node:stream';
import { isPosternError, PosternError } from '../errors.js';
import { deferredChild, type Log } from '../observability/logger.js';
import { Cancellation, type CancelSignal } from '../tunnel/cancellation.js';
import { Reason } from '../tunnel/constants.js';
import { relayUser } from './user-relay.js';

/** How long a kept-alive user connection may sit idle between two requests. */
export const KEEP_ALIVE_TIMEOUT_MS = 120_000;
/** Largest request (and response) head accepted; a larger one is answered 431 (or 502). */
export const MAX_HEADER_BYTES = 64 * 1024;
/** How long a connection refused with a status keeps reading, so the user can read the status. */
const LINGER_MS = 2_000;
/** The name this proxy gives itself in `Via` and `Proxy-Status`. */
const PROXY_NAME = 'postern';
const LONGEST_HOST = 253;

/** The user name and password of a `Proxy-Authorization: Basic` header. */
export interface ProxyCredentials {
  username: string;
  password: string;
}

/** Where a user wants to go. */
export interface ProxyTarget {
  host: string;
  port: number;
}

/** An absolute-form target: where, the `Host` to send, and the origin-form path. */
export interface ForwardTarget extends ProxyTarget {
  authority: string;
  path: string;
}

/** What the HTTP proxy needs from the gateway. */
export interface HttpProxyHandlers {
  /**
   * The group a user may use, or null (answered 407). `credentials` is null when the request
   * carried none; `cancellation` is cancelled when the user leaves.
   */
  authenticate(
    credentials: ProxyCredentials | null,
    remoteAddress: string,
    cancellation: CancelSignal,
  ): Promise<string | null>;
  /**
   * Opens a tunnel stream to the target. Rejects with a PosternError whose `code` and `reason`
   * say why; `cancellation` is cancelled when the user leaves.
   */
  open(group: string, target: ProxyTarget, cancellation: CancelSignal): Promise<Duplex>;
  logger: Log;
}

/** An answer the proxy gives itself, with its RFC 9209 error type. */
export interface ProxyFailure {
  status: number;
  /** An RFC 9209 `error` type such as `dns_error`. */
  error: string;
  details: string;
}

/** Options for `http.createServer` / `https.createServer` that this protocol relies on. */
export function httpProxyServerOptions(handshakeTimeoutMs: number): ServerOptions {
  return {
    // A body (a large upload) may take as long as it takes; only the head has a deadline.
    requestTimeout: 0,
    headersTimeout: handshakeTimeoutMs,
    connectionsCheckingInterval: Math.min(1_000, handshakeTimeoutMs),
    keepAliveTimeout: KEEP_ALIVE_TIMEOUT_MS,
    maxHeaderSize: MAX_HEADER_BYTES,
    // The target comes from the request target; a CONNECT without Host is still understood.
    requireHostHeader: false,
    noDelay: true,
  };
}

/**
 * Serves the proxy on `server` (an http.Server or https.Server created with
 * {@link httpProxyServerOptions}). The server's owner listens and closes; this object answers.
 */
export class HttpProxy {
  readonly #handlers: HttpProxyHandlers;
  readonly #server: { closeIdleConnections(): void };
  readonly #connections = new WeakMap<Socket, UserConnection>();
  /** Sockets answered after a parse error, whose later errors are echoes of the first. */
  readonly #refused = new WeakSet<Socket>();
  readonly #relays = new Set<Promise<void>>();
  #connectionCounter = 0;
  #draining = false;

  constructor(
    server: EventEmitter & { closeIdleConnections(): void },
    handlers: HttpProxyHandlers,
  ) {
    this.#server = server;
    this.#handlers = handlers;
    const onRequest = (req: IncomingMessage, res: ServerResponse) => {
      this.#forward(req, res).catch((error: unknown) => {
        // Not a network outcome but a defect in this module: report it loudly, drop the request.
        handlers.logger.error(
          { err: error, method: req.method, url: req.url },
          'http proxy crashed',
        );
        res.destroy();
      });
    };
    server.on('request', onRequest);
    // With a listener, Node leaves `100 Continue` to us: it is the target's to give.
    server.on('checkContinue', onRequest);
    server.on('connect', (req: IncomingMessage, socket: Socket, head: Buffer) => {
      this.#track(this.#connect(req, socket, head), socket);
    });
    server.on('upgrade', (req: IncomingMessage, socket: Socket, head: Buffer) => {
      this.#track(this.#upgrade(req, socket, head), socket);
    });
    server.on('clientError', (error: NodeJS.ErrnoException, socket: Socket) => {
      this.#onClientError(error, socket);
    });
  }

  /**
   * Stops keep-alive: idle connections close now, busy ones after their response. CONNECT
   * tunnels and upgraded connections go on until their streams end.
   */
  drain(): void {
    this.#draining = true;
    this.#server.closeIdleConnections();
  }

  /** Resolves when every CONNECT tunnel and upgraded connection has finished. */
  async settled(): Promise<void> {
    await Promise.all(this.#relays);
  }

  /** Keeps `relay` for settled(); a relay that fails unexpectedly is logged and its user cut. */
  #track(relay: Promise<void>, socket: Socket): void {
    const tracked = relay.catch((error: unknown) => {
      this.#handlers.logger.error({ err: error }, 'http relay failed');
      socket.destroy();
    });
    this.#relays.add(tracked);
    void tracked.then(() => this.#relays.delete(tracked));
  }

  #connectionOf(socket: Socket): UserConnection {
    let connection = this.#connections.get(socket);
    if (connection === undefined) {
      const remote = socket.remoteAddress ?? 'unknown';
      const logger = deferredChild(this.#handlers.logger, {
        conn: ++this.#connectionCounter,
        remote,
      });
      connection = new UserConnection(socket, logger, this.#handlers.open);
      this.#connections.set(socket, connection);
    }
    return connection;
  }

  // ---- absolute-form requests -----------------------------------------------------------

  async #forward(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const connection = this.#connectionOf(req.socket);
    connection.track(res);
    const log = deferredChild(connection.log, { method: req.method, url: req.url });
    const target = parseAbsoluteForm(req.url ?? '');
    if (typeof target === 'string') {
      log.info({ problem: target }, 'http request refused: bad target');
      this.#reply(res, { status: 400, error: 'http_request_error', details: target });
      return;
    }
    const group = await this.#authorize(req, connection.left, log);
    if (typeof group !== 'string') {
      if (group !== null) this.#reply(res, group, PROXY_AUTHENTICATE);
      return;
    }
    this.#sendUpstream(req, res, target, connection.agentFor(group), deferredChild(log, { group }));
  }

  #sendUpstream(
    req: IncomingMessage,
    res: ServerResponse,
    target: ForwardTarget,
    agent: Agent,
    log: Log,
  ): void {
    const upstream = httpRequest({
      agent,
      host: target.host,
      port: target.port,
      method: req.method,
      path: target.path,
      headers: forwardedRequestHeaders(req, target, false),
      setHost: false,
      maxHeaderSize: MAX_HEADER_BYTES,
    });
    let responded = false;
    // Whatever of the body the upstream no longer takes is read away, so the user's connection
    // can carry its next request. A target may answer before reading the whole body and then
    // close (nginx does, without keep-alive); the answer reaches the user, the rest of the body
    // goes nowhere.
    const readBodyAway = () => {
      if (req.readableEnded || req.destroyed) return;
      req.unpipe(upstream);
      req.resume();
    };
    const expectsContinue = /\b100-continue\b/i.test(req.headers.expect ?? '');
    upstream.on('continue', () => {
      if (expectsContinue && !res.headersSent) res.writeContinue();
    });
    upstream.once('response', (response) => {
      responded = true;
      // Once a response is complete, Node's HTTP client stops passing its socket's 'drain' on to
      // the request: a body still on its way would stall for good, and the user's next request
      // behind it. The target has answered, so the stream, whose request was cut short, is not
      // kept for reuse; its 'close' reads the rest of the body away.
      response.once('end', () => {
        if (upstream.writableEnded) return;
        log.debug('http request body cut: the target answered before taking all of it');
        upstream.destroy();
      });
      this.#relayResponse(response, res, log);
    });
    upstream.once('close', readBodyAway);
    upstream.on('error', (error) => {
      readBodyAway();
      // After the response began, pipeResponse reports how it ended.
      if (responded) return;
      if (res.destroyed) {
        log.debug({ err: error }, 'http request abandoned: user left');
        return;
      }
      const failure = failureFor(error);
      log.info(
        { status: failure.status, proxyError: failure.error, err: error },
        'http request failed',
      );
      this.#reply(res, failure);
    });
    res.once('close', () => {
      if (!res.writableFinished) upstream.destroy();
    });
    req.once('end', () => {
      if (req.rawTrailers.length > 0) upstream.addTrailers(fieldPairs(req.rawTrailers));
    });
    req.pipe(upstream);
    // The target sees the head now, not with the first body byte (it may be waiting to say 100).
    upstream.flushHeaders();
  }

  #relayResponse(response: IncomingMessage, res: ServerResponse, log: Log): void {
    if (res.destroyed) {
      log.debug('http response dropped: user left');
      response.destroy();
      return;
    }
    const status = response.statusCode ?? 502;
    const headers = endToEndFields(response.rawHeaders);
    headers.push('Via', `${response.httpVersion} ${PROXY_NAME}`);
    if (this.#draining) headers.push('Connection', 'close');
    try {
      res.writeHead(status, response.statusMessage, headers);
    } catch (error) {
      // Node refuses a field or reason phrase it would not itself produce.
      response.destroy();
      log.info({ err: error }, 'http response refused: bad head from target');
      this.#reply(res, { status: 502, error: 'http_protocol_error', details: String(error) });
      return;
    }
    response.once('end', () => {
      if (response.rawTrailers.length > 0) res.addTrailers(fieldPairs(response.rawTrailers));
    });
    pipeResponse(response, res, (error) => {
      if (error) log.info({ status, err: error }, 'http response cut');
      else log.debug({ status }, 'http request forwarded');
      if (this.#draining) this.#server.closeIdleConnections();
    });
  }

  /** Sends a response the proxy makes itself; a no-op when the user has left. */
  #reply(res: ServerResponse, failure: ProxyFailure, extra: Record<string, string> = {}): void {
    if (res.destroyed || res.headersSent) return;
    const body = failureBody(failure);
    res.writeHead(failure.status, {
      'Content-Type': 'text/plain; charset=utf-8',
      'Content-Length': String(Buffer.byteLength(body)),
      'Proxy-Status': proxyStatus(failure),
      ...extra,
      ...(this.#draining ? { Connection: 'close' } : {}),
    });
    res.end(body);
  }

  /**
   * The user's group, or the failure to answer (407), or null when there is nothing to answer
   * (the user left, or a defect was reported).
   */
  async #authorize(
    req: IncomingMessage,
    left: CancelSignal,
    log: Log,
  ): Promise<string | ProxyFailure | null> {
    const header = req.headers['proxy-authorization'];
    const credentials = header === undefined ? null : parseProxyAuthorization(header);
    if (header !== undefined && credentials === null) {
      log.info('proxy authentication refused: malformed Proxy-Authorization');
      return denied('Proxy-Authorization must be Basic base64(group:password)');
    }
    let group: string | null;
    try {
      group = await this.#handlers.authenticate(
        credentials,
        req.socket.remoteAddress ?? 'unknown',
        left,
      );
    } catch (error) {
      if (left.cancelled) {
        log.debug({ err: error }, 'proxy authentication cancelled: user left');
        return null;
      }
      log.error({ err: error }, 'proxy authentication crashed');
      return { status: 500, error: 'proxy_internal_error', details: 'authentication failed' };
    }
    if (group !== null) return group;
    if (credentials === null) {
      log.debug('proxy authentication required');
      return denied('proxy credentials required: user = group id, password = group password');
    }
    log.info({ username: credentials.username }, 'proxy authentication failed');
    return denied('wrong group id or password');
  }

  // ---- CONNECT and upgrades: the connection becomes a relay -----------------------------

  async #connect(req: IncomingMessage, socket: Socket, head: Buffer): Promise<void> {
    const relay = this.#relayFor(req, socket);
    const target = parseAuthorityForm(req.url ?? '');
    if (typeof target === 'string') {
      relay.refuse({ status: 400, error: 'http_request_error', details: target });
      return;
    }
    const stream = await relay.open(target);
    if (stream === null) return;
    socket.write('HTTP/1.1 200 Connection Established\r\n\r\n');
    return relay.splice(stream, head);
  }

  async #upgrade(req: IncomingMessage, socket: Socket, head: Buffer): Promise<void> {
    const relay = this.#relayFor(req, socket);
    const target = parseAbsoluteForm(req.url ?? '');
    if (typeof target === 'string') {
      relay.refuse({ status: 400, error: 'http_request_error', details: target });
      return;
    }
    const stream = await relay.open(target);
    if (stream === null) return;
    stream.write(upgradeRequestHead(req, target));
    return relay.splice(stream, head);
  }

  #relayFor(req: IncomingMessage, socket: Socket): Relay {
    const remote = socket.remoteAddress ?? 'unknown';
    const log = deferredChild(this.#handlers.logger, {
      conn: ++this.#connectionCounter,
      remote,
      method: req.method,
      url: req.url,
    });
    return new Relay(socket, log, (left) => this.#authorize(req, left, log), this.#handlers);
  }

  // ---- parse errors -------------------------------------------------------------------------

  #onClientError(error: NodeJS.ErrnoException, socket: Socket): void {
    if (this.#refused.has(socket)) return;
    this.#refused.add(socket);
    const log = this.#connections.get(socket)?.log ?? this.#handlers.logger;
    const busy = this.#connections.get(socket)?.busy ?? false;
    if (busy || !socket.writable || error.code === 'ECONNRESET' || error.code === 'EPIPE') {
      log.debug({ err: error }, 'http connection lost');
      socket.destroy();
      return;
    }
    const failure = clientErrorFailure(error);
    log.info({ status: failure.status, code: error.code }, 'http request refused: malformed');
    closeAfterReply(socket, rawResponse(failure));
  }
}

/** One kept-alive user connection: its tunnel stream pools and the responses in flight. */
class UserConnection {
  readonly log: Log;
  /** Cancelled when the user's connection has closed. */
  readonly left: CancelSignal;
  readonly #open: HttpProxyHandlers['open'];
  readonly #agents = new Map<string, TunnelAgent>();
  readonly #responses = new Set<ServerResponse>();

  constructor(socket: Socket, log: Log, open: HttpProxyHandlers['open']) {
    this.log = log;
    this.#open = open;
    const left = new Cancellation();
    this.left = left;
    socket.once('close', () => {
      left.cancel(userLeft());
      for (const agent of this.#agents.values()) agent.destroy();
      log.debug('http connection closed');
    });
  }

  /** True while a response is being produced on this connection. */
  get busy(): boolean {
    return this.#responses.size > 0;
  }

  track(res: ServerResponse): void {
    this.#responses.add(res);
    res.once('close', () => this.#responses.delete(res));
  }

  agentFor(group: string): TunnelAgent {
    let agent = this.#agents.get(group);
    if (agent === undefined) {
      agent = new TunnelAgent((target) => this.#open(group, target, this.left), this.left);
      this.#agents.set(group, agent);
    }
    return agent;
  }
}

/**
 * An http.Agent whose connections are tunnel streams. Kept-alive streams are reused for later
 * requests to the same target; a target's FIN closes the stream so it leaves the pool.
 */
class TunnelAgent extends Agent {
  readonly #open: (target: ProxyTarget) => Promise<Duplex>;
  readonly #left: CancelSignal;

  constructor(open: (target: ProxyTarget) => Promise<Duplex>, left: CancelSignal) {
    super({ keepAlive: true });
    this.#open = open;
    this.#left = left;
  }

  override createConnection(
    options: ClientRequestArgs,
    callback?: (error: Error | null, stream: Duplex) => void,
  ): undefined {
    const target = { host: String(options.host), port: Number(options.port) };
    const done = callback as (error: Error | null, stream?: Duplex) => void;
    this.#open(target).then(
      (stream) => {
        const reason = this.#left.reason;
        if (reason !== undefined) {
          stream.destroy();
          done(reason);
          return;
        }
        done(null, poolable(stream));
      },
      (error: Error) => done(error),
    );
    return undefined;
  }
}

/**
 * Gives a tunnel stream the socket methods http.Agent calls on pooled connections. A stream has
 * no handle to (un)ref, no TCP keep-alive (the tunnel's heartbeat watches liveness) and no idle
 * timeout; and it closes when the target's FIN arrives, as a socket without half-open does.
 */
function poolable(stream: Duplex): Duplex {
  stream.allowHalfOpen = false;
  return Object.assign(stream, {
    timeout: 0,
    ref: () => stream,
    unref: () => stream,
    setKeepAlive: () => stream,
  });
}

/** Why an open or an authentication was cancelled: the user's connection closed. */
function userLeft(): PosternError {
  return new PosternError('POSTERN_ERR_OPEN_FAILED', 'the HTTP proxy user disconnected', {
    reason: Reason.CANCELLED,
  });
}

/**
 * Copies a target's response body to the user with `stream.pipeline`'s rule: a failure on either
 * side destroys both (the user's connection closes without a clean end), and `done` runs once,
 * when the user's response has finished or either side failed. Not `pipeline` itself: in Node 20
 * it makes an AbortController for every call and a DOMException when it completes (with the
 * per-connection AbortControllers this replaced, ~6% of the gateway's busy time in a profile of
 * forwarded GETs; docs/performance.md).
 */
function pipeResponse(
  response: IncomingMessage,
  res: ServerResponse,
  done: (error: Error | undefined) => void,
): void {
  let settled = false;
  const settle = (error: Error | null | undefined) => {
    if (settled) return;
    settled = true;
    stopWatchingResponse();
    stopWatchingRes();
    if (error) {
      response.destroy();
      res.destroy();
    }
    done(error ?? undefined);
  };
  const stopWatchingResponse = finished(response, (error) => {
    if (error) settle(error);
  });
  const stopWatchingRes = finished(res, settle);
  response.pipe(res);
}

/** A CONNECT or upgraded connection: authorize, open the stream, then splice. */
class Relay {
  readonly #socket: Socket;
  readonly #log: Log;
  /** Used once, by open(); dropped then so the relay does not keep the request alive. */
  #authorize: ((left: CancelSignal) => Promise<string | ProxyFailure | null>) | undefined;
  readonly #handlers: HttpProxyHandlers;
  #socketError: Error | undefined;

  constructor(
    socket: Socket,
    log: Log,
    authorize: (left: CancelSignal) => Promise<string | ProxyFailure | null>,
    handlers: HttpProxyHandlers,
  ) {
    this.#socket = socket;
    this.#log = log;
    this.#authorize = authorize;
    this.#handlers = handlers;
    // Node has handed the socket over without an error listener; one must exist from now on.
    socket.on('error', (error) => {
      this.#socketError ??= error;
    });
    // A kept-alive connection may carry the idle timer of its previous request.
    socket.setTimeout(0);
  }

  refuse(failure: ProxyFailure, extra: Record<string, string> = {}): void {
    this.#log.info(
      { status: failure.status, proxyError: failure.error, detail: failure.details },
      'http relay refused',
    );
    closeAfterReply(this.#socket, rawResponse(failure, extra));
    // The user may fail while the answer is on its way; that error is logged, not kept quiet.
    this.#socket.once('close', () => {
      if (this.#socketError) this.#log.debug({ err: this.#socketError }, 'http relay user failed');
    });
  }

  /** The stream to the target, or null once the user has been answered or has left. */
  async open(target: ProxyTarget): Promise<Duplex | null> {
    const socket = this.#socket;
    if (socket.destroyed) return null;
    const left = new Cancellation();
    const cancelOnClose = () => left.cancel(userLeft());
    socket.once('close', cancelOnClose);
    try {
      const authorize = this.#authorize;
      this.#authorize = undefined;
      if (authorize === undefined) throw new Error('a relay opens once');
      const group = await authorize(left);
      if (group === null) {
        socket.destroy();
        return null;
      }
      if (typeof group !== 'string') {
        this.refuse(group, PROXY_AUTHENTICATE);
        return null;
      }
      return await this.#openFor(group, target, left);
    } finally {
      socket.off('close', cancelOnClose);
    }
  }

  async #openFor(group: string, target: ProxyTarget, left: CancelSignal): Promise<Duplex | null> {
    let stream: Duplex;
    try {
      stream = await this.#handlers.open(group, target, left);
    } catch (error) {
      if (this.#socket.destroyed) {
        this.#log.debug({ err: error }, 'http relay cancelled: user left');
        return null;
      }
      this.refuse(failureFor(error));
      return null;
    }
    if (this.#socket.destroyed) {
      this.#log.debug({ err: this.#socketError }, 'http relay cancelled: user left');
      stream.destroy();
      return null;
    }
    if (stream.destroyed) {
      // Reset by the client's side together with its OPEN_OK (the target hung up at once).
      this.refuse(failureFor(stream.errored ?? new Error('stream closed before the relay began')));
      return null;
    }
    return stream;
  }

  /**
   * Splices the user's socket and the stream; `head` is what the user sent past the head.
   * Resolves when the relay ends; nothing suspended waits for it, so an idle relay holds no
   * request, head or async frame.
   */
  splice(stream: Duplex, head: Buffer): Promise<void> {
    if (head.length > 0) stream.write(head);
    this.#log.debug('http relay open');
    return relayUser(this.#socket, stream, this.#log, HTTP_RELAY);
  }
}

// ---- pure parts ---------------------------------------------------------------------------

const HTTP_RELAY = { closed: 'http relay closed', reset: 'http relay reset' };
const PROXY_AUTHENTICATE = { 'Proxy-Authenticate': `Basic realm="${PROXY_NAME}"` };

/** Fields that describe one connection, not the message (RFC 9110 §7.6.1). */
const HOP_BY_HOP = new Set([
  'connection',
  'proxy-connection',
  'keep-alive',
  'te',
  'transfer-encoding',
  'upgrade',
  'proxy-authorization',
  'proxy-authenticate',
]);

function denied(details: string): ProxyFailure {
  return { status: 407, error: 'http_request_denied', details };
}

/** The credentials of a `Basic` Proxy-Authorization value, or null when it is not one. */
export function parseProxyAuthorization(value: string): ProxyCredentials | null {
  const encoded = /^basic[ \t]+([A-Za-z0-9+/]+={0,2})[ \t]*$/i.exec(value)?.[1];
  if (encoded === undefined) return null;
  const decoded = Buffer.from(encoded, 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  if (colon < 0) return null;
  return { username: decoded.slice(0, colon), password: decoded.slice(colon + 1) };
}

/**
 * A raw field list (`rawHeaders` order: name, value, name, value…) without the hop-by-hop
 * fields and those the Connection field names, except the lower-case names in `keep`.
 */
export function endToEndFields(
  rawHeaders: readonly string[],
  keep: ReadonlySet<string> = new Set(),
): string[] {
  const named = new Set<string>();
  for (let i = 0; i < rawHeaders.length; i += 2) {
    if (rawHeaders[i]!.toLowerCase() !== 'connection') continue;
    for (const token of rawHeaders[i + 1]!.split(',')) named.add(token.trim().toLowerCase());
  }
  const fields: string[] = [];
  for (let i = 0; i < rawHeaders.length; i += 2) {
    const name = rawHeaders[i]!.toLowerCase();
    if ((HOP_BY_HOP.has(name) || named.has(name)) && !keep.has(name)) continue;
    fields.push(rawHeaders[i]!, rawHeaders[i + 1]!);
  }
  return fields;
}

const KEEP_FOR_REQUEST = new Set(['transfer-encoding']);
const KEEP_FOR_UPGRADE = new Set(['transfer-encoding', 'upgrade']);

/** The fields sent to the target: end-to-end ones, `Host` from the target, and `Via`. */
function forwardedRequestHeaders(
  req: IncomingMessage,
  target: ForwardTarget,
  upgrade: boolean,
): string[] {
  const fields = endToEndFields(req.rawHeaders, upgrade ? KEEP_FOR_UPGRADE : KEEP_FOR_REQUEST);
  const headers = ['Host', target.authority];
  for (let i = 0; i < fields.length; i += 2) {
    // RFC 9112 §3.2.2: the target URI's authority replaces any Host the user sent.
    if (fields[i]!.toLowerCase() !== 'host') headers.push(fields[i]!, fields[i + 1]!);
  }
  if (upgrade) headers.push('Connection', 'Upgrade');
  headers.push('Via', `${req.httpVersion} ${PROXY_NAME}`);
  return headers;
}

function upgradeRequestHead(req: IncomingMessage, target: ForwardTarget): Buffer {
  const fields = forwardedRequestHeaders(req, target, true);
  let head = `${req.method} ${target.path} HTTP/1.1\r\n`;
  for (let i = 0; i < fields.length; i += 2) head += `${fields[i]}: ${fields[i + 1]}\r\n`;
  // Node's parser hands out field values as latin1 strings; this gives back the same bytes.
  return Buffer.from(`${head}\r\n`, 'latin1');
}

function fieldPairs(raw: readonly string[]): [string, string][] {
  const pairs: [string, string][] = [];
  for (let i = 0; i < raw.length; i += 2) pairs.push([raw[i]!, raw[i + 1]!]);
  return pairs;
}

/** `host:port`, `[v6]:port` or `host` with `defaultPort`; a problem string when invalid. */
function parseAuthority(authority: string, defaultPort: number | undefined): ProxyTarget | string {
  const match = /^(?:\[([0-9A-Fa-f:.]+)\]|([^\s:@[\]/?#]+))(?::(\d{1,5}))?$/.exec(authority);
  if (match === null) return `"${authority}" is not a valid host and port`;
  const [, ipv6, name, portText] = match;
  if (ipv6 !== undefined && !isIPv6(ipv6)) return `"${ipv6}" is not an IPv6 address`;
  const host = ipv6 ?? name!;
  if (host.length > LONGEST_HOST) return `host name longer than ${LONGEST_HOST} characters`;
  const port = portText === undefined ? defaultPort : Number(portText);
  if (port === undefined) return `"${authority}" needs a port`;
  if (port < 1 || port > 65_535) return `port ${port} is out of range`;
  return { host, port };
}

/** CONNECT's authority-form target (`host:port`); a problem string when invalid. */
export function parseAuthorityForm(text: string): ProxyTarget | string {
  return parseAuthority(text, undefined);
}

/** An absolute-form target (`http://host[:port]/path?query`); a problem string when invalid. */
export function parseAbsoluteForm(text: string): ForwardTarget | string {
  const match = /^([A-Za-z][A-Za-z0-9+.-]*):\/\/([^/?#]*)([^#]*)$/.exec(text);
  if (match === null) {
    return 'not a proxy request: the target must be an absolute URI such as http://host/path';
  }
  const [, schemeText, authority, rest] = match as unknown as [string, string, string, string];
  const scheme = schemeText.toLowerCase();
  if (scheme === 'https' || scheme === 'wss') {
    return `${scheme}:// is not forwarded in the clear: use CONNECT (curl -x does so by itself)`;
  }
  if (scheme !== 'http' && scheme !== 'ws') return `scheme ${scheme}: is not supported`;
  if (authority.includes('@')) return 'user information in the target URI is not allowed';
  const address = parseAuthority(authority, 80);
  if (typeof address === 'string') return address;
  let path = rest;
  if (path === '' || path.startsWith('?')) path = `/${path}`;
  return { ...address, authority, path };
}

/** The status and RFC 9209 error type that describe why a stream could not carry a request. */
export function failureFor(error: unknown): ProxyFailure {
  const details = error instanceof Error ? error.message : String(error);
  if (isPosternError(error, 'POSTERN_ERR_NO_ROUTE')) {
    return { status: 503, error: 'destination_unavailable', details };
  }
  if (isPosternError(error, 'POSTERN_ERR_STREAM_RESET')) {
    return { status: 502, error: 'connection_terminated', details };
  }
  if (error instanceof PosternError) {
    switch (error.reason) {
      case Reason.FORBIDDEN:
        return { status: 403, error: 'destination_ip_prohibited', details };
      case Reason.CONNECTION_REFUSED:
        return { status: 502, error: 'connection_refused', details };
      case Reason.HOST_UNREACHABLE:
      case Reason.NETWORK_UNREACHABLE:
        return { status: 502, error: 'destination_ip_unroutable', details };
      case Reason.DNS_FAILURE:
        return { status: 502, error: 'dns_error', details };
      case Reason.DIAL_TIMEOUT:
        return { status: 504, error: 'connection_timeout', details };
      case Reason.CONNECTION_RESET:
        return { status: 502, error: 'connection_terminated', details };
      default:
        return { status: 502, error: 'proxy_internal_error', details };
    }
  }
  const code = (error as NodeJS.ErrnoException | undefined)?.code;
  if (code === 'ECONNRESET' || code === 'EPIPE') {
    return { status: 502, error: 'connection_terminated', details };
  }
  if (code === 'HPE_HEADER_OVERFLOW') {
    return { status: 502, error: 'http_response_header_section_size', details };
  }
  if (code?.startsWith('HPE_')) return { status: 502, error: 'http_protocol_error', details };
  return { status: 502, error: 'proxy_internal_error', details };
}

function clientErrorFailure(error: NodeJS.ErrnoException): ProxyFailure {
  switch (error.code) {
    case 'HPE_HEADER_OVERFLOW':
      return { status: 431, error: 'http_request_error', details: 'request head too large' };
    case 'ERR_HTTP_REQUEST_TIMEOUT':
      return {
        status: 408,
        error: 'http_request_error',
        details: 'request head not received in time',
      };
    default:
      return { status: 400, error: 'http_request_error', details: 'malformed request' };
  }
}

/** RFC 8941 string content: printable ASCII with `\` and `"` escaped, bounded. */
function sfString(text: string): string {
  const printable = text.replace(/[^\x20-\x7e]/g, '?').slice(0, 200);
  return printable.replace(/[\\"]/g, (char) => `\\${char}`);
}

/** The `Proxy-Status` value (RFC 9209) for a failure. */
export function proxyStatus(failure: ProxyFailure): string {
  return `${PROXY_NAME}; error=${failure.error}; details="${sfString(failure.details)}"`;
}

function failureBody(failure: ProxyFailure): string {
  const oneLine = failure.details.replace(/[\r\n]+/g, ' ');
  return `${failure.status} ${STATUS_CODES[failure.status] ?? ''}: ${oneLine}\n`;
}

/** A whole response for a connection Node no longer parses (CONNECT, upgrade, parse error). */
function rawResponse(failure: ProxyFailure, extra: Record<string, string> = {}): Buffer {
  const body = Buffer.from(failureBody(failure), 'utf8');
  const fields: Record<string, string> = {
    'Content-Type': 'text/plain; charset=utf-8',
    'Content-Length': String(body.length),
    'Proxy-Status': proxyStatus(failure),
    ...extra,
    Connection: 'close',
  };
  let head = `HTTP/1.1 ${failure.status} ${STATUS_CODES[failure.status] ?? ''}\r\n`;
  for (const [name, value] of Object.entries(fields)) head += `${name}: ${value}\r\n`;
  return Buffer.concat([Buffer.from(`${head}\r\n`, 'latin1'), body]);
}

/**
 * Sends `reply` and a FIN, then reads and discards what the user still sends until they close
 * or {@link LINGER_MS} pass: closing with unread input would send a TCP reset that can destroy
 * the reply before the user reads it.
 */
function closeAfterReply(socket: Socket, reply: Buffer): void {
  if (socket.destroyed) return;
  const linger = setTimeout(() => socket.destroy(), LINGER_MS);
  socket.once('close', () => clearTimeout(linger));
  socket.once('end', () => socket.destroy());
  socket.end(reply);
  socket.resume();
}
