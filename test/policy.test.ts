import assert from 'node:assert/strict';
import type dns from 'node:dns';
import net from 'node:net';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { AccessPolicy, type LookupFunction, type PolicyDecision } from '../src/client/policy.js';
import { isPosternError } from '../src/errors.js';
import { Reason } from '../src/tunnel/constants.js';

/** A resolver answering from a table; unknown names fail like getaddrinfo. Records every query. */
function fakeDns(records: Record<string, string[]>): LookupFunction & { queries: string[] } {
  const queries: string[] = [];
  const lookup = async (hostname: string): Promise<dns.LookupAddress[]> => {
    queries.push(hostname);
    const addresses = records[hostname];
    if (addresses === undefined) {
      throw Object.assign(new Error(`getaddrinfo ENOTFOUND ${hostname}`), { code: 'ENOTFOUND' });
    }
    return addresses.map((address) => ({ address, family: net.isIP(address) }));
  };
  return Object.assign(lookup, { queries });
}

/** For IP literals, which must never reach the resolver. */
const noDns: LookupFunction = async (hostname) => {
  throw new Error(`unexpected DNS query for ${hostname}`);
};

function policy(allowed_hosts: string[], forbidden_hosts: string[] = []): AccessPolicy {
  return AccessPolicy.parse({ allowed_hosts, forbidden_hosts });
}

function assertAllowed(decision: PolicyDecision, addresses?: string[]): void {
  assert.equal(decision.allowed, true, decision.allowed ? '' : decision.message);
  if (decision.allowed && addresses !== undefined) {
    assert.deepEqual(
      decision.addresses.map((resolved) => resolved.address),
      addresses,
    );
  }
}

function assertForbidden(decision: PolicyDecision, messageIncludes?: string): void {
  assert.equal(decision.allowed, false, 'expected a refusal');
  if (!decision.allowed) {
    assert.equal(decision.reason, Reason.FORBIDDEN, decision.message);
    if (messageIncludes !== undefined)
      assert.ok(decision.message.includes(messageIncludes), decision.message);
  }
}

const publicDns = fakeDns({
  'db.internal': ['203.0.113.10'],
  'a.example.com': ['203.0.113.11'],
  'a.b.example.com': ['203.0.113.12'],
  'example.com': ['203.0.113.13'],
  'badexample.com': ['203.0.113.14'],
  'example.org': ['198.51.100.1'],
  'x.db.internal': ['203.0.113.15'],
});

describe('AccessPolicy entry forms', () => {
  const cases: Array<[entry: string, host: string, port: number, allowed: boolean]> = [
    ['db.internal', 'db.internal', 5432, true],
    ['db.internal', 'DB.Internal.', 5432, true],
    ['DB.INTERNAL.', 'db.internal', 1, true],
    ['db.internal', 'x.db.internal', 5432, false],
    ['*.example.com', 'a.example.com', 443, true],
    ['*.example.com', 'a.b.example.com', 443, true],
    ['*.example.com', 'example.com', 443, false],
    ['*.example.com', 'badexample.com', 443, false],
    ['*.example.com', '.example.com', 443, false],
    ['*', 'example.org', 80, true],
    ['*', '198.51.100.7', 80, true],
    ['*:443', 'example.org', 443, true],
    ['*:443', 'example.org', 80, false],
    ['db.internal:5432', 'db.internal', 5432, true],
    ['db.internal:5432', 'db.internal', 5433, false],
    ['db.internal:8000-8080', 'db.internal', 8000, true],
    ['db.internal:8000-8080', 'db.internal', 8080, true],
    ['db.internal:8000-8080', 'db.internal', 7999, false],
    ['db.internal:8000-8080', 'db.internal', 8081, false],
    ['198.51.100.7', '198.51.100.7', 22, true],
    ['198.51.100.7', '198.51.100.8', 22, false],
    ['198.51.100.7:22', '198.51.100.7', 22, true],
    ['198.51.100.7:22', '198.51.100.7', 23, false],
    ['198.51.100.0/24', '198.51.100.200', 80, true],
    ['198.51.100.0/24', '198.51.101.1', 80, false],
    ['198.51.100.0/24:80-81', '198.51.100.9', 81, true],
    ['198.51.100.0/24:80-81', '198.51.100.9', 82, false],
    ['2001:db8::1', '2001:db8::1', 22, true],
    ['2001:db8::1', '[2001:DB8:0::1]', 22, true],
    ['[2001:db8::1]:22', '2001:db8::1', 22, true],
    ['[2001:db8::1]:22', '2001:db8::1', 23, false],
    ['2001:db8::/32', '2001:db8:ffff::5', 443, true],
    ['2001:db8::/32', '2001:db9::5', 443, false],
    ['[2001:db8::/32]:443', '2001:db8::5', 443, true],
    ['[2001:db8::/32]:443', '2001:db8::5', 444, false],
    ['203.0.113.0/24', 'db.internal', 5432, true],
    ['203.0.113.0/24:5432', 'db.internal', 5433, false],
  ];
  for (const [entry, host, port, allowed] of cases) {
    test(`allowed_hosts "${entry}" ${allowed ? 'admits' : 'refuses'} ${host}:${port}`, async () => {
      const decision = await policy([entry]).check(host, port, publicDns);
      if (allowed) assertAllowed(decision);
      else assertForbidden(decision, 'allowed_hosts');
    });
  }
});

describe('AccessPolicy rules', () => {
  test('an empty allowed_hosts admits any host that is not forbidden, with its addresses in order', async () => {
    const lookup = fakeDns({ 'multi.test': ['198.51.100.1', '2001:db8::1', '198.51.100.2'] });
    const decision = await policy([]).check('multi.test', 443, lookup);
    assert.deepEqual(decision, {
      allowed: true,
      addresses: [
        { address: '198.51.100.1', family: 4 },
        { address: '2001:db8::1', family: 6 },
        { address: '198.51.100.2', family: 4 },
      ],
    });
  });

  test('forbidden_hosts wins over allowed_hosts', async () => {
    const strict = policy(['*.example.com', '*'], ['a.example.com']);
    assertForbidden(
      await strict.check('a.example.com', 443, publicDns),
      'a.example.com:443 matches forbidden_hosts entry "a.example.com"',
    );
    assertAllowed(await strict.check('a.b.example.com', 443, publicDns), ['203.0.113.12']);
  });

  test('a forbidden port on every host refuses that port only', async () => {
    const noMail = policy([], ['*:25']);
    assertForbidden(
      await noMail.check('example.org', 25, publicDns),
      'example.org:25 matches forbidden_hosts entry "*:25"',
    );
    assertAllowed(await noMail.check('example.org', 26, publicDns));
  });

  test('a name refused by name is never resolved', async () => {
    const lookup = fakeDns({ 'a.example.com': ['203.0.113.11'] });
    assertForbidden(await policy([], ['*.example.com']).check('a.example.com', 80, lookup));
    assertForbidden(await policy(['db.internal']).check('a.example.com', 80, lookup));
    assert.deepEqual(lookup.queries, []);
  });

  test('forbidden_hosts applies to every address a name resolves to', async () => {
    const lookup = fakeDns({ 'intranet.test': ['198.51.100.1', '10.1.2.3'] });
    assertForbidden(
      await policy([], ['10.0.0.0/8']).check('intranet.test', 80, lookup),
      'intranet.test:80 resolves to 10.1.2.3, which matches forbidden_hosts entry "10.0.0.0/8"',
    );
  });

  test('a name not listed passes allowed_hosts only when every address it resolves to is listed', async () => {
    const lookup = fakeDns({
      'inside.test': ['203.0.113.7', '203.0.113.8'],
      'straddle.test': ['203.0.113.7', '198.51.100.1'],
    });
    const byRange = policy(['203.0.113.0/24']);
    assertAllowed(await byRange.check('inside.test', 80, lookup), ['203.0.113.7', '203.0.113.8']);
    assertForbidden(
      await byRange.check('straddle.test', 80, lookup),
      'neither does its address 198.51.100.1',
    );
  });

  test('IPv4-mapped IPv6 addresses are matched and returned as IPv4', async () => {
    assertAllowed(await policy(['203.0.113.0/24']).check('::ffff:203.0.113.5', 80, noDns), [
      '203.0.113.5',
    ]);
    assertForbidden(await policy([], ['203.0.113.0/24']).check('::ffff:cb00:7105', 80, noDns));
    const lookup = fakeDns({ 'mapped.test': ['::ffff:198.51.100.9'] });
    assert.deepEqual(await policy([]).check('mapped.test', 80, lookup), {
      allowed: true,
      addresses: [{ address: '198.51.100.9', family: 4 }],
    });
  });

  test('a port outside 1-65535 is refused', async () => {
    assertForbidden(await policy([]).check('198.51.100.1', 0, noDns), 'outside 1-65535');
    assertForbidden(await policy([]).check('198.51.100.1', 65536, noDns), 'outside 1-65535');
  });
});

describe('AccessPolicy built-in protection', () => {
  const literals: Array<[host: string, description: string]> = [
    ['127.0.0.1', 'a loopback address'],
    ['127.255.0.9', 'a loopback address'],
    ['::1', 'a loopback address'],
    ['[::1]', 'a loopback address'],
    ['0:0:0:0:0:0:0:1', 'a loopback address'],
    ['::ffff:127.0.0.1', 'a loopback address'],
    ['::ffff:7f00:1', 'a loopback address'],
    ['0.0.0.0', 'an unspecified address'],
    ['::', 'an unspecified address'],
    ['169.254.169.254', 'a cloud metadata address'],
    ['::ffff:169.254.169.254', 'a cloud metadata address'],
    ['100.100.100.200', 'a cloud metadata address'],
    ['fd00:ec2::254', 'a cloud metadata address'],
    ['169.254.10.1', 'a link-local address'],
    ['fe80::1', 'a link-local address'],
  ];
  for (const [host, description] of literals) {
    test(`${host} is refused as ${description}, even with allowed_hosts "*"`, async () => {
      for (const allowed of [[], ['*'], ['*:1-65535', '*.example.com']]) {
        assertForbidden(
          await policy(allowed).check(host, 80, noDns),
          `${description} (allow it explicitly in client.allowed_hosts)`,
        );
      }
    });
  }

  for (const spelling of ['127.1', '2130706433', '0x7f000001']) {
    test(`${spelling} resolves through getaddrinfo to 127.0.0.1 and is refused`, async () => {
      assertForbidden(
        await policy([]).check(spelling, 80),
        `resolves to 127.0.0.1, a loopback address`,
      );
    });
  }

  test('a name that resolves to 127.0.0.1 is refused', async () => {
    const lookup = fakeDns({ 'rebind.example.com': ['127.0.0.1'] });
    assertForbidden(
      await policy(['*.example.com']).check('rebind.example.com', 80, lookup),
      'rebind.example.com:80 resolves to 127.0.0.1, a loopback address',
    );
  });

  test('a mixed answer is refused whole, not filtered', async () => {
    const lookup = fakeDns({ 'mixed.test': ['198.51.100.1', '169.254.169.254', '198.51.100.2'] });
    assertForbidden(
      await policy([]).check('mixed.test', 80, lookup),
      'mixed.test:80 resolves to 169.254.169.254, a cloud metadata address',
    );
  });

  test('every spelling of every loopback IPv4 address is refused', async () => {
    const empty = policy([]);
    await fc.assert(
      fc.asyncProperty(
        fc.tuple(fc.nat(255), fc.nat(255), fc.nat(255)),
        fc.nat(2),
        async ([b, c, d], form) => {
          const dotted = `127.${b}.${c}.${d}`;
          const hex = (high: number, low: number) => ((high << 8) | low).toString(16);
          const host = [dotted, `::ffff:${dotted}`, `[::ffff:${hex(127, b)}:${hex(c, d)}]`][form]!;
          const decision = await empty.check(host, 443, noDns);
          return !decision.allowed && decision.message.includes('loopback');
        },
      ),
    );
  });

  test('allowed_hosts "127.0.0.1" opens exactly that address', async () => {
    const one = policy(['127.0.0.1']);
    assertAllowed(await one.check('127.0.0.1', 8080, noDns), ['127.0.0.1']);
    assertAllowed(await one.check('::ffff:127.0.0.1', 8080, noDns), ['127.0.0.1']);
    assertForbidden(await one.check('127.0.0.2', 8080, noDns), 'loopback');
    assertForbidden(await one.check('::1', 8080, noDns), 'loopback');
    const resolving = fakeDns({ 'me.test': ['127.0.0.1'] });
    assertAllowed(await one.check('me.test', 8080, resolving), ['127.0.0.1']);
  });

  test('allowed_hosts "127.0.0.1:8080" opens only that port', async () => {
    const onePort = policy(['127.0.0.1:8080']);
    assertAllowed(await onePort.check('127.0.0.1', 8080, noDns));
    assertForbidden(await onePort.check('127.0.0.1', 8081, noDns));
  });

  test('allowed_hosts "127.0.0.0/8" opens IPv4 loopback and not ::1', async () => {
    const range = policy(['127.0.0.0/8']);
    assertAllowed(await range.check('127.5.6.7', 80, noDns), ['127.5.6.7']);
    assertForbidden(await range.check('::1', 80, noDns), 'loopback');
    assertForbidden(await range.check('169.254.169.254', 80, noDns), 'cloud metadata');
  });

  test('allowed_hosts "::1" opens ::1 and not 127.0.0.1', async () => {
    const six = policy(['::1']);
    assertAllowed(await six.check('[::1]', 80, noDns), ['::1']);
    assertForbidden(await six.check('127.0.0.1', 80, noDns), 'loopback');
  });

  test('allowed_hosts "localhost" opens the name localhost and nothing else', async () => {
    const lookup = fakeDns({ localhost: ['::1', '127.0.0.1'], 'other.test': ['127.0.0.1'] });
    const local = policy(['localhost', '*.test']);
    assertAllowed(await local.check('localhost', 80, lookup), ['::1', '127.0.0.1']);
    assertAllowed(await local.check('LOCALHOST.', 80, lookup), ['::1', '127.0.0.1']);
    assertForbidden(await local.check('127.0.0.1', 80, lookup), 'no allowed_hosts entry');
    assertForbidden(await local.check('other.test', 80, lookup), 'loopback');
    assertForbidden(await policy(['*']).check('localhost', 80, lookup), 'loopback');
    const oddHosts = fakeDns({ localhost: ['127.0.0.1', '169.254.169.254'] });
    assertForbidden(await local.check('localhost', 80, oddHosts), 'cloud metadata');
  });

  test('an explicit range that contains the metadata address opens it', async () => {
    assertAllowed(await policy(['169.254.0.0/16']).check('169.254.169.254', 80, noDns));
  });
});

describe('AccessPolicy resolution failures', () => {
  test('a name that does not resolve is a DNS failure that keeps the resolver error', async () => {
    const decision = await policy([]).check('nothing.test', 80, fakeDns({}));
    assert.equal(decision.allowed, false);
    if (!decision.allowed) {
      assert.equal(decision.reason, Reason.DNS_FAILURE);
      assert.equal(decision.message, 'cannot resolve nothing.test (ENOTFOUND)');
      assert.equal((decision.cause as NodeJS.ErrnoException).code, 'ENOTFOUND');
    }
  });

  test('a name under .invalid is a DNS failure through the system resolver', async () => {
    const decision = await policy([]).check('postern-test.invalid', 80);
    assert.equal(decision.allowed, false);
    if (!decision.allowed) assert.equal(decision.reason, Reason.DNS_FAILURE, decision.message);
  });

  test('an empty answer is a DNS failure', async () => {
    const decision = await policy([]).check('empty.test', 80, fakeDns({ 'empty.test': [] }));
    assert.equal(decision.allowed, false);
    if (!decision.allowed) assert.equal(decision.reason, Reason.DNS_FAILURE);
  });

  test('an unexpected resolver error rejects instead of posing as a DNS failure', async () => {
    const broken: LookupFunction = async () => {
      throw Object.assign(new Error('resolver exploded'), { code: 'EPERM' });
    };
    await assert.rejects(policy([]).check('any.test', 80, broken), /resolver exploded/);
  });
});

describe('AccessPolicy.parse', () => {
  const bad = [
    '10.0.0.0/33',
    'fd00::/129',
    '10.0.0.0/8/8',
    '300.1.1.1',
    '10.0.0',
    'fe80::1%eth0',
    '[db.internal]:22',
    '[fd00::]/8:443',
    '[::1',
    '[::1]22',
    '*.',
    '*.*.example.com',
    'foo*.example.com',
    'exa mple.com',
    '-bad.example.com',
    '',
  ];
  for (const entry of bad) {
    test(`rejects allowed_hosts entry ${JSON.stringify(entry)}, naming it`, () => {
      assert.throws(
        () => policy(['db.internal', entry]),
        (err: unknown) =>
          isPosternError(err, 'POSTERN_ERR_CONFIG') &&
          err.message ===
            `client.allowed_hosts[1]: ${JSON.stringify(entry)} is not a valid host, address or CIDR`,
      );
    });
  }

  for (const entry of ['db:0', 'db:65536', 'db:90-80', 'db:', 'db:http', '[::1]:0']) {
    test(`rejects the port in forbidden_hosts entry "${entry}"`, () => {
      assert.throws(
        () => policy([], ['*', entry]),
        (err: unknown) =>
          isPosternError(err, 'POSTERN_ERR_CONFIG') &&
          err.message.startsWith(`client.forbidden_hosts[1]: "${entry}" has an invalid port`),
      );
    });
  }
});
