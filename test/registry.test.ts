import assert from 'node:assert/strict';
import { once } from 'node:events';
import { describe, it, type TestContext } from 'node:test';
import { isPosternError } from '../src/errors.js';
import { type ClientSession, SessionRegistry } from '../src/gateway/registry.js';
import { Reason, StreamKind } from '../src/tunnel/constants.js';
import type { IncomingOpen, Session } from '../src/tunnel/session.js';
import type { TunnelStream } from '../src/tunnel/stream.js';
import { createSessionPair, type SessionPair } from './helpers/session-pair.js';

const target = { kind: StreamKind.TCP, host: 'example.test', port: 80 } as const;
const openOptions = { timeoutMs: 5000 };

/** One tunnel pair whose client side answers opens with `answer`, counting the opens it saw. */
interface Peer {
  pair: SessionPair;
  gateway: Session;
  opens: number;
}

/**
 * Keeps a stream open until its session ends. Ending the session fails the stream (that is
 * how its owner learns of it), so those two errors are expected here; any other is rethrown.
 */
function hold(stream: TunnelStream): TunnelStream {
  stream.on('error', (err) => {
    if (isPosternError(err, 'POSTERN_ERR_SESSION_CLOSED')) return;
    if (isPosternError(err, 'POSTERN_ERR_STREAM_RESET')) return;
    throw err;
  });
  return stream;
}

async function peer(
  t: TestContext,
  answer: (open: IncomingOpen, peer: Peer) => void = (open) => hold(open.accept()),
): Promise<Peer> {
  const state: { peer?: Peer } = {};
  const pair = await createSessionPair({
    onOpen: (open) => {
      const self = state.peer!;
      self.opens += 1;
      answer(open, self);
    },
  });
  t.after(() => pair.close());
  state.peer = { pair, gateway: pair.gateway, opens: 0 };
  return state.peer;
}

function entry(p: Peer, clientId: string, groupId = 'g', replica = 0): ClientSession {
  return { session: p.gateway, clientId, replica, groupId };
}

/** Opens `count` streams on a peer so that it looks busier to the router. */
async function load(p: Peer, count: number): Promise<void> {
  for (let i = 0; i < count; i++) hold(await p.gateway.openStream(target, openOptions));
}

function readAll(stream: TunnelStream): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    stream.on('data', (chunk: Buffer) => chunks.push(chunk));
    stream.once('end', () => resolve(Buffer.concat(chunks).toString()));
    stream.once('error', reject);
  });
}

describe('SessionRegistry.pick', () => {
  it('chooses the session with the fewest open streams', async (t) => {
    const [a, b] = await Promise.all([peer(t), peer(t)]);
    const registry = new SessionRegistry();
    registry.add(entry(a, 'a'));
    registry.add(entry(b, 'b'));
    await load(a, 1);
    for (let i = 0; i < 20; i++) assert.equal(registry.pick('g'), b.gateway);
    await load(b, 2);
    for (let i = 0; i < 20; i++) assert.equal(registry.pick('g'), a.gateway);
    assert.equal(registry.pick('other'), undefined);
  });

  it('breaks ties at random between the least loaded sessions', async (t) => {
    const [a, b, busy] = await Promise.all([peer(t), peer(t), peer(t)]);
    const registry = new SessionRegistry();
    for (const [p, id] of [
      [a, 'a'],
      [b, 'b'],
      [busy, 'busy'],
    ] as const)
      registry.add(entry(p, id));
    await load(busy, 1);
    const counts = new Map<Session | undefined, number>();
    const picks = 400;
    for (let i = 0; i < picks; i++) {
      const chosen = registry.pick('g');
      counts.set(chosen, (counts.get(chosen) ?? 0) + 1);
    }
    assert.equal(counts.get(busy.gateway), undefined, 'the busier session is never chosen');
    // Each tied session is expected 200 times; 120 is more than 8 standard deviations away.
    for (const p of [a, b])
      assert.ok((counts.get(p.gateway) ?? 0) > 120, `counts: ${[...counts.values()]}`);
  });

  it('skips a session whose peer sent GOAWAY, and one that is draining', async (t) => {
    const [a, b, c] = await Promise.all([peer(t), peer(t), peer(t)]);
    const registry = new SessionRegistry();
    registry.add(entry(a, 'a'));
    registry.add(entry(b, 'b'));
    registry.add(entry(c, 'c'));
    await load(c, 3);
    const goaway = once(b.gateway, 'goaway');
    b.pair.client.goAway('client restarting');
    await goaway;
    a.gateway.goAway('gateway draining');
    assert.equal(b.gateway.acceptingStreams, false);
    for (let i = 0; i < 20; i++) assert.equal(registry.pick('g'), c.gateway);
    assert.equal(registry.size, 3, 'sessions that are going away still count until they close');
  });

  it('skips a closed session and drops it from the registry', async (t) => {
    const [a, b] = await Promise.all([peer(t), peer(t)]);
    const registry = new SessionRegistry();
    registry.add(entry(a, 'a'));
    registry.add(entry(b, 'b'));
    await load(b, 1);
    const changed = once(registry, 'change');
    a.pair.client.destroy();
    await changed;
    assert.equal(a.gateway.state, 'closed');
    assert.equal(registry.size, 1);
    assert.deepEqual(
      registry.entries().map((e) => e.clientId),
      ['b'],
    );
    for (let i = 0; i < 20; i++) assert.equal(registry.pick('g'), b.gateway);
    b.gateway.destroy();
    await b.gateway.closed;
    assert.equal(registry.size, 0);
    assert.equal(registry.hasGroup('g'), false);
    assert.equal(registry.pick('g'), undefined);
  });
});

describe('SessionRegistry.add', () => {
  it('replaces the same group+client+replica and returns the previous entry', async (t) => {
    const [first, second] = await Promise.all([peer(t), peer(t)]);
    const registry = new SessionRegistry();
    let changes = 0;
    const groupSeen: boolean[] = [];
    registry.on('change', () => {
      changes++;
      groupSeen.push(registry.hasGroup('g'));
    });
    const previous = entry(first, 'c1');
    assert.equal(registry.add(previous), undefined);
    assert.equal(changes, 1);
    assert.equal(registry.add(entry(second, 'c1')), previous);
    assert.equal(changes, 2, 'replacing is one change, not a removal and an addition');
    assert.deepEqual(groupSeen, [true, true], 'no listener sees the group empty in between');
    const changesAfterReplace = changes;
    assert.equal(registry.size, 1);
    for (let i = 0; i < 20; i++) assert.equal(registry.pick('g'), second.gateway);
    // The replaced session closing later must not remove its successor.
    first.gateway.destroy();
    await first.gateway.closed;
    assert.equal(changes, changesAfterReplace);
    assert.equal(registry.size, 1);
    assert.equal(registry.pick('g'), second.gateway);
  });

  it('keeps other replicas, other clients and other groups side by side', async (t) => {
    const peers = await Promise.all([peer(t), peer(t), peer(t), peer(t)]);
    const registry = new SessionRegistry();
    assert.equal(registry.add(entry(peers[0]!, 'c1', 'g', 0)), undefined);
    assert.equal(registry.add(entry(peers[1]!, 'c1', 'g', 1)), undefined);
    assert.equal(registry.add(entry(peers[2]!, 'c2', 'g', 0)), undefined);
    assert.equal(registry.add(entry(peers[3]!, 'c1', 'h', 0)), undefined);
    assert.equal(registry.size, 4);
    assert.equal(registry.hasGroup('g'), true);
    assert.equal(registry.hasGroup('h'), true);
    assert.equal(registry.pick('h'), peers[3]!.gateway);
  });

  it('openStreamCount sums the open streams of every session', async (t) => {
    const [a, b] = await Promise.all([peer(t), peer(t)]);
    const registry = new SessionRegistry();
    assert.equal(registry.openStreamCount, 0);
    registry.add(entry(a, 'a', 'g'));
    registry.add(entry(b, 'b', 'h'));
    await load(a, 2);
    await load(b, 3);
    assert.equal(registry.openStreamCount, 5);
    const released = once(a.gateway, 'stream-released');
    const stream = hold(await a.gateway.openStream(target, openOptions));
    assert.equal(registry.openStreamCount, 6);
    stream.destroy();
    await released;
    assert.equal(registry.openStreamCount, 5);
  });
});

describe('SessionRegistry.open', () => {
  it('refuses with POSTERN_ERR_NO_ROUTE when the group has no session', async () => {
    const registry = new SessionRegistry();
    await assert.rejects(
      registry.open('nobody', target, openOptions),
      (err) => isPosternError(err, 'POSTERN_ERR_NO_ROUTE') && /nobody/.test(err.message),
    );
  });

  it('opens through the least loaded client', async (t) => {
    const answerWith = (name: string) => (open: IncomingOpen) => hold(open.accept()).end(name);
    const [a, b] = await Promise.all([peer(t, answerWith('a')), peer(t, answerWith('b'))]);
    const registry = new SessionRegistry();
    registry.add(entry(a, 'a'));
    registry.add(entry(b, 'b'));
    await load(a, 1);
    const stream = await registry.open('g', target, openOptions);
    assert.equal(await readAll(stream), 'b');
  });

  it('retries on another client when the first answers GOING_AWAY', async (t) => {
    const refuser = await peer(t, (open) => open.reject(Reason.GOING_AWAY, 'restarting'));
    const acceptor = await peer(t, (open) => hold(open.accept()).end('from acceptor'));
    const registry = new SessionRegistry();
    registry.add(entry(refuser, 'refuser'));
    registry.add(entry(acceptor, 'acceptor'));
    // One stream on the acceptor makes the refuser the first choice.
    await load(acceptor, 1);
    const stream = await registry.open('g', target, openOptions);
    assert.equal(await readAll(stream), 'from acceptor');
    assert.equal(refuser.opens, 1);
    assert.equal(acceptor.opens, 2);
  });

  it('retries on another client when the first one disconnects before answering', async (t) => {
    const vanishing = await peer(t, (_open, self) => self.pair.client.destroy());
    const acceptor = await peer(t, (open) => hold(open.accept()).end('still here'));
    const registry = new SessionRegistry();
    registry.add(entry(vanishing, 'vanishing'));
    registry.add(entry(acceptor, 'acceptor'));
    await load(acceptor, 1);
    const stream = await registry.open('g', target, openOptions);
    assert.equal(await readAll(stream), 'still here');
    assert.equal(vanishing.opens, 1);
    assert.equal(vanishing.gateway.state, 'closed');
  });

  it('fails with POSTERN_ERR_NO_ROUTE when every client goes away', async (t) => {
    const goingAway = (open: IncomingOpen) => open.reject(Reason.GOING_AWAY, 'restarting');
    const [a, b] = await Promise.all([peer(t, goingAway), peer(t, goingAway)]);
    const registry = new SessionRegistry();
    registry.add(entry(a, 'a'));
    registry.add(entry(b, 'b'));
    await assert.rejects(registry.open('g', target, openOptions), (err) =>
      isPosternError(err, 'POSTERN_ERR_NO_ROUTE'),
    );
    assert.equal(a.opens, 1);
    assert.equal(b.opens, 1);
  });

  it('does not retry when the client answers FORBIDDEN, and keeps the reason', async (t) => {
    const forbidding = await peer(t, (open) => open.reject(Reason.FORBIDDEN, 'policy says no'));
    const acceptor = await peer(t);
    const registry = new SessionRegistry();
    registry.add(entry(forbidding, 'forbidding'));
    registry.add(entry(acceptor, 'acceptor'));
    await load(acceptor, 1);
    await assert.rejects(
      registry.open('g', target, openOptions),
      (err) =>
        isPosternError(err, 'POSTERN_ERR_OPEN_FAILED') &&
        err.reason === Reason.FORBIDDEN &&
        /policy says no/.test(err.message),
    );
    assert.equal(forbidding.opens, 1);
    assert.equal(acceptor.opens, 1, 'the second client was not asked');
  });
});
