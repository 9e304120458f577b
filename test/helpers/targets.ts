/**
 * Data-path fixtures for end-to-end tests: HTTP and HTTPS targets, curl through the gateway's
 * SOCKS5 port, HTTP over an already-connected socket, and waits on the tunnel's stream table.
 * Every fixture that opens something has a close() the test must call.
 */

import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import {
  createServer as createHttpServer,
  type RequestListener,
  request,
  type Server,
} from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo, Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Gateway } from '../../src/gateway/gateway.js';
import type { Session } from '../../src/tunnel/session.js';
import type { TunnelStream } from '../../src/tunnel/stream.js';
import { GROUP, PASSWORD, readAll } from './e2e.js';

/** Hex SHA-256 of a buffer. */
export function sha256(data: Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

export interface HttpTarget {
  port: number;
  close(): Promise<void>;
}

async function listenHttp(server: Server, host: string): Promise<HttpTarget> {
  server.listen(0, host);
  await once(server, 'listening');
  return {
    port: (server.address() as AddressInfo).port,
    async close() {
      server.closeAllConnections();
      server.close();
      await once(server, 'close');
    },
  };
}

/** A node:http server on `host` port 0. */
export function startHttpServer(handler: RequestListener, host = '127.0.0.1'): Promise<HttpTarget> {
  return listenHttp(createHttpServer(handler), host);
}

/** A node:https server on `host` port 0 with the given PEM certificate and key. */
export function startHttpsServer(
  identity: { cert: string; key: string },
  handler: RequestListener,
  host = '127.0.0.1',
): Promise<HttpTarget> {
  return listenHttp(createHttpsServer({ cert: identity.cert, key: identity.key }, handler), host);
}

/** A file in a fresh temporary directory; remove() deletes the directory. */
export async function writeTempFile(
  name: string,
  contents: string,
): Promise<{ path: string; remove(): Promise<void> }> {
  const directory = await mkdtemp(join(tmpdir(), 'postern-e2e-'));
  const path = join(directory, name);
  await writeFile(path, contents);
  return { path, remove: () => rm(directory, { recursive: true, force: true }) };
}

/** Why curl failed: its exit code and what it printed on stderr. */
export class CurlFailed extends Error {
  constructor(
    readonly exitCode: number | string | null | undefined,
    readonly stderr: string,
  ) {
    super(`curl exited with ${String(exitCode)}: ${stderr.trim()}`);
  }
}

/**
 * Runs the real `curl` with `--socks5-hostname GROUP:PASSWORD@gateway` (so names are resolved
 * behind the tunnel) and returns the response body. Proxy variables in the environment are
 * overridden, so the request cannot bypass the gateway.
 */
export function curlThroughGateway(
  gateway: Gateway,
  url: string,
  extraArgs: readonly string[] = [],
): Promise<Buffer> {
  const proxy = `${GROUP}:${PASSWORD}@127.0.0.1:${gateway.addresses.socks5!.port}`;
  const args = [
    '--silent',
    '--show-error',
    '--fail',
    '--max-time',
    '10',
    '--noproxy',
    '',
    '--socks5-hostname',
    proxy,
    ...extraArgs,
    url,
  ];
  return new Promise((resolve, reject) => {
    execFile(
      '/usr/bin/curl',
      args,
      { encoding: 'buffer', maxBuffer: 64 * 1024 * 1024 },
      (error, stdout, stderr) => {
        if (error) reject(new CurlFailed(error.code, stderr.toString('utf8')));
        else resolve(stdout);
      },
    );
  });
}

/**
 * Sends `GET path` with `Connection: close` over a socket that is already connected (through
 * the gateway) and collects the response. The request owns the socket from then on.
 */
export function httpGetOver(
  socket: Socket,
  hostHeader: string,
  path: string,
): Promise<{ status: number; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const outgoing = request({
      method: 'GET',
      path,
      headers: { host: hostHeader, connection: 'close' },
      createConnection: () => socket,
    });
    outgoing.once('error', reject);
    outgoing.once('response', (response) => {
      readAll(response).then((body) => resolve({ status: response.statusCode ?? 0, body }), reject);
    });
    outgoing.end();
  });
}

/**
 * Resolves with the next stream one of the gateway's current sessions releases that matches
 * `predicate`: proof that a connection really went through the tunnel, and where to.
 */
export function nextReleasedStream(
  gateway: Gateway,
  predicate: (stream: TunnelStream) => boolean,
): Promise<TunnelStream> {
  const sessions = gateway.registry.entries().map((entry) => entry.session);
  return new Promise((resolve) => {
    const onReleased = (stream: TunnelStream) => {
      if (!predicate(stream)) return;
      for (const session of sessions) session.off('stream-released', onReleased);
      resolve(stream);
    };
    for (const session of sessions) session.on('stream-released', onReleased);
  });
}

/**
 * Resolves once `session` has no stream open or opening, re-checking on every release.
 * Rejects if the session closes first.
 */
export function waitForNoStreams(session: Session): Promise<void> {
  return new Promise((resolve, reject) => {
    const detach = () => {
      session.off('stream-released', check);
      session.off('close', onClose);
    };
    const check = () => {
      if (session.openStreamCount !== 0) return;
      detach();
      resolve();
    };
    const onClose = () => {
      detach();
      reject(
        new Error(`session ${session.id} closed with ${session.openStreamCount} streams open`),
      );
    };
    session.on('stream-released', check);
    session.once('close', onClose);
    check();
  });
}
