/**
 * A SOCKS5 user written byte by byte (RFC 1928 / RFC 1929), for tests that must see the exact
 * method, auth status and REP bytes the gateway answers, or stop half-way through a handshake.
 */
import { once } from 'node:events';
import { connect, isIPv4, isIPv6, type Socket } from 'node:net';

export interface Socks5Credentials {
  userId: string;
  password: string;
}

export interface Socks5Outcome {
  /** The connection to the gateway; open and ready for data when `reply` is 0x00. */
  socket: Socket;
  /** The method the gateway selected (0xff: none acceptable); undefined if it closed first. */
  method: number | undefined;
  /** The RFC 1929 status (0x00 success); undefined if the gateway never answered the auth. */
  authStatus: number | undefined;
  /** The REP byte of the CONNECT reply; undefined if the gateway never sent one. */
  reply: number | undefined;
}

/** Opens a TCP connection to the SOCKS5 port on 127.0.0.1. */
export async function connectToProxy(proxyPort: number): Promise<Socket> {
  const socket = connect(proxyPort, '127.0.0.1');
  await once(socket, 'connect');
  return socket;
}

/**
 * Exactly `length` bytes, or null once the socket ends or closes before they all arrive. Uses
 * `read()`, so the socket never starts flowing and no byte is lost for later readers.
 */
export async function readExactly(socket: Socket, length: number): Promise<Buffer | null> {
  for (;;) {
    const chunk = socket.read(length) as Buffer | null;
    if (chunk !== null) return chunk.length === length ? chunk : null;
    if (socket.readableEnded || socket.destroyed) return null;
    await new Promise<void>((resolve) => {
      const done = () => {
        socket.off('readable', done);
        socket.off('close', done);
        resolve();
      };
      socket.on('readable', done);
      socket.on('close', done);
    });
  }
}

/** The CONNECT request bytes for `host:port`; the address type follows from `host`. */
export function connectRequest(host: string, port: number): Buffer {
  const portBytes = Buffer.from([port >> 8, port & 0xff]);
  if (isIPv4(host)) {
    return Buffer.concat([Buffer.from([5, 1, 0, 1, ...host.split('.').map(Number)]), portBytes]);
  }
  if (isIPv6(host)) return Buffer.concat([Buffer.from([5, 1, 0, 4]), ipv6Bytes(host), portBytes]);
  const name = Buffer.from(host, 'ascii');
  return Buffer.concat([Buffer.from([5, 1, 0, 3, name.length]), name, portBytes]);
}

/** Greeting, username/password and the RFC 1929 sub-negotiation, as one buffer each. */
export function greeting(): Buffer {
  return Buffer.from([5, 1, 2]);
}

export function authRequest({ userId, password }: Socks5Credentials): Buffer {
  const user = Buffer.from(userId, 'utf8');
  const pass = Buffer.from(password, 'utf8');
  return Buffer.concat([Buffer.from([1, user.length]), user, Buffer.from([pass.length]), pass]);
}

/**
 * Runs a whole SOCKS5 CONNECT step by step and reports every answer byte. Stops at the first
 * refusal, leaving the socket to the gateway's close; the caller owns the socket either way.
 */
export async function socks5Connect(
  proxyPort: number,
  credentials: Socks5Credentials,
  host: string,
  port: number,
): Promise<Socks5Outcome> {
  const socket = await connectToProxy(proxyPort);
  const outcome: Socks5Outcome = {
    socket,
    method: undefined,
    authStatus: undefined,
    reply: undefined,
  };
  socket.write(greeting());
  const method = await readExactly(socket, 2);
  outcome.method = method?.[1];
  if (outcome.method !== 2) return outcome;
  socket.write(authRequest(credentials));
  const auth = await readExactly(socket, 2);
  outcome.authStatus = auth?.[1];
  if (outcome.authStatus !== 0) return outcome;
  socket.write(connectRequest(host, port));
  // The gateway always answers with an IPv4 bound address: 10 bytes.
  const reply = await readExactly(socket, 10);
  outcome.reply = reply?.[1];
  return outcome;
}

/** Resolves once the peer has closed the connection, draining whatever it still sends. */
export async function closedByPeer(socket: Socket): Promise<Buffer> {
  const chunks: Buffer[] = [];
  socket.on('data', (chunk: Buffer) => chunks.push(chunk));
  if (!socket.closed) await once(socket, 'close');
  return Buffer.concat(chunks);
}

/** The 16 bytes of an IPv6 address (IPv4-mapped forms included). */
function ipv6Bytes(address: string): Buffer {
  // The URL parser normalises every spelling to hex groups with at most one `::`.
  const normalized = new URL(`http://[${address}]/`).hostname.slice(1, -1);
  const [head = '', tail] = normalized.split('::');
  const headGroups = head === '' ? [] : head.split(':');
  const tailGroups = tail === undefined || tail === '' ? [] : tail.split(':');
  const zeros = Array(8 - headGroups.length - tailGroups.length).fill('0');
  const groups = tail === undefined ? headGroups : [...headGroups, ...zeros, ...tailGroups];
  const bytes = Buffer.alloc(16);
  for (const [index, group] of groups.entries()) {
    bytes.writeUInt16BE(Number.parseInt(group, 16), index * 2);
  }
  return bytes;
}
