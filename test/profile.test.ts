import './helpers/fail-on-unhandled.js';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { isIPv4 } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { createContext, runInContext } from 'node:vm';
import { parse } from 'yaml';
import { loadConfig } from '../src/config/load.js';
import type { GatewayConfig } from '../src/config/schema.js';
import { isPosternError } from '../src/errors.js';
import { buildClash, type ClashConfig, clashConfig } from '../src/profile/clash.js';
import {
  boundListeners,
  configuredListeners,
  dialableListeners,
  groupCredentials,
  type ProfileInput,
  quoted,
} from '../src/profile/listeners.js';
import { buildPac, PAC_KINDS } from '../src/profile/pac.js';
import { GROUP, PASSWORD, startTunnel } from './helpers/e2e.js';
import { startHttpServer } from './helpers/targets.js';

const run = promisify(execFile);
const cli = fileURLToPath(new URL('../src/cli.js', import.meta.url));

/** The input a profile is built from, the way the CLI derives it from a configuration. */
function inputFor(
  gateway: GatewayConfig,
  options: { group?: string; password?: string; host?: string } = {},
): ProfileInput {
  const group = options.group ?? 'office';
  return {
    group,
    credentials: groupCredentials(gateway, group, options.password),
    listeners: dialableListeners(configuredListeners(gateway).listeners, options.host),
  };
}

async function withConfigFile<T>(text: string, body: (file: string) => Promise<T>): Promise<T> {
  const dir = await mkdtemp(join(tmpdir(), 'postern-profile-'));
  try {
    const file = join(dir, 'gateway.yaml');
    await writeFile(file, text);
    return await body(file);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

async function loadGateway(text: string): Promise<GatewayConfig> {
  return withConfigFile(text, async (file) =>
    Promise.resolve(loadConfig({ file, env: {}, sections: ['gateway'] }).gateway!),
  );
}

const ALL_LISTENERS = [
  'gateway:',
  '  tls_cert: /etc/postern/gateway.crt',
  '  tls_key: /etc/postern/gateway.key',
  '  proxy:',
  '    socks5:',
  '      listen_addr: 0.0.0.0:1080',
  '    http:',
  '      listen_addr: 0.0.0.0:3128',
  '    https:',
  '      listen_addr: ":3129"',
  '  groups:',
  '    - id: office',
  '      password: "office: secret"',
  '    - id: finance',
  '      password: finance-only-secret',
  '',
].join('\n');

/** Evaluates a PAC file with deterministic helpers; `resolved` records every dnsResolve call. */
function loadPac(text: string): {
  find(url: string): string;
  resolved: string[];
} {
  const resolved: string[] = [];
  const toNumber = (ip: string) =>
    ip.split('.').reduce((sum, part) => sum * 256 + Number(part), 0) >>> 0;
  const dnsResolve = (host: string): string | null => {
    resolved.push(host);
    return isIPv4(host) ? host : '203.0.113.7';
  };
  const context = createContext({
    isPlainHostName: (host: string) => !host.includes('.'),
    dnsResolve,
    isInNet: (host: string, network: string, mask: string) => {
      const ip = isIPv4(host) ? host : dnsResolve(host);
      if (ip === null) return false;
      const m = toNumber(mask);
      return (toNumber(ip) & m) >>> 0 === (toNumber(network) & m) >>> 0;
    },
    shExpMatch: (text: string, pattern: string) => {
      const source = pattern
        .split('')
        .map((char) =>
          char === '*' ? '.*' : char === '?' ? '.' : char.replace(/[.+^${}()|[\]\\]/g, '\\$&'),
        )
        .join('');
      return new RegExp(`^${source}$`).test(text);
    },
  });
  runInContext(text, context);
  return {
    resolved,
    find(url: string) {
      const host = new URL(url).hostname;
      return (context.FindProxyForURL as (url: string, host: string) => string)(url, host);
    },
  };
}

/** The first entry of a PAC result as a curl proxy URL: `PROXY h:p` → `http://h:p`. */
function pacEntries(result: string): { scheme: 'http' | 'https'; authority: string }[] {
  return result.split(';').map((entry) => {
    const [keyword, authority] = entry.trim().split(/\s+/);
    if (keyword === 'PROXY') return { scheme: 'http', authority: authority! };
    if (keyword === 'HTTPS') return { scheme: 'https', authority: authority! };
    throw new Error(`unexpected PAC entry ${entry}`);
  });
}

async function expectProfileError(body: () => unknown, pattern: RegExp): Promise<void> {
  await assert.rejects(
    async () => body(),
    (err: unknown) => isPosternError(err, 'POSTERN_ERR_CONFIG') && pattern.test(err.message),
  );
}

describe('profile: listeners and credentials', () => {
  it('a wildcard bind without --host is refused, naming --host', async () => {
    const gateway = await loadGateway(ALL_LISTENERS);
    await expectProfileError(() => inputFor(gateway), /every interface.*--host/);
  });

  it('--host replaces the bound host; wildcard and port-carrying --host are refused', async () => {
    const gateway = await loadGateway(ALL_LISTENERS);
    const input = inputFor(gateway, { host: 'gw.example.com' });
    assert.deepEqual(
      input.listeners.map((listener) => `${listener.kind} ${listener.host}:${listener.port}`),
      ['https gw.example.com:3129', 'http gw.example.com:3128', 'socks5 gw.example.com:1080'],
    );
    await expectProfileError(() => inputFor(gateway, { host: '0.0.0.0' }), /wildcard/);
    await expectProfileError(() => inputFor(gateway, { host: '[::]' }), /wildcard/);
    await expectProfileError(() => inputFor(gateway, { host: 'gw.example.com:3128' }), /port/);
    assert.equal(inputFor(gateway, { host: '[2001:db8::1]' }).listeners[0]!.host, '2001:db8::1');
  });

  it('a specific bind address is used as is', async () => {
    const gateway = await loadGateway(
      ['gateway:', '  proxy:', '    http:', '      listen_addr: 192.0.2.10:3128', ''].join('\n'),
    );
    const input = inputFor(gateway, { password: 'pw' });
    assert.deepEqual(input.listeners, [{ kind: 'http', host: '192.0.2.10', port: 3128 }]);
  });

  it('an undeclared group without --password is refused', async () => {
    const gateway = await loadGateway(ALL_LISTENERS);
    await expectProfileError(
      () => inputFor(gateway, { group: 'unknown', host: 'gw.example.com' }),
      /not declared in gateway\.groups.*--password/,
    );
    const input = inputFor(gateway, { group: 'unknown', password: 'pw', host: 'gw.example.com' });
    assert.deepEqual(input.credentials, { username: 'unknown', password: 'pw' });
  });

  it('a declared group takes its password; a contradicting --password is refused', async () => {
    const gateway = await loadGateway(ALL_LISTENERS);
    assert.deepEqual(groupCredentials(gateway, 'office', undefined), {
      username: 'office',
      password: 'office: secret',
    });
    assert.deepEqual(
      groupCredentials(gateway, 'office', 'office: secret').password,
      'office: secret',
    );
    await expectProfileError(() => groupCredentials(gateway, 'office', 'guess'), /differs/);
    await expectProfileError(() => groupCredentials(gateway, 'a:b', 'pw'), /without ":"/);
  });

  it('port 0 and an HTTPS proxy with a generated certificate are left out, with the reason', async () => {
    const gateway = await loadGateway(
      [
        'gateway:',
        '  proxy:',
        '    socks5:',
        '      listen_addr: 127.0.0.1:0',
        '    http:',
        '      listen_addr: 127.0.0.1:3128',
        '    https:',
        '      listen_addr: 127.0.0.1:3129',
        '',
      ].join('\n'),
    );
    const { listeners, skipped } = configuredListeners(gateway);
    assert.deepEqual(listeners, [{ kind: 'http', host: '127.0.0.1', port: 3128 }]);
    assert.deepEqual(
      skipped.map((entry) => entry.kind),
      ['https', 'socks5'],
    );
    assert.match(skipped[0]!.reason, /generated/);
    assert.match(skipped[1]!.reason, /port 0/);
  });

  it('no listener at all is an error naming the keys to set', async () => {
    const gateway = await loadGateway('gateway:\n');
    await expectProfileError(
      () => inputFor(gateway, { password: 'pw' }),
      /gateway\.proxy\.http\.listen_addr/,
    );
  });

  it('a running gateway offers the addresses it bound', () => {
    assert.deepEqual(
      boundListeners({
        socks5: { address: '127.0.0.1', port: 1 },
        http: undefined,
        https: { address: '::1', port: 2 },
      }),
      [
        { kind: 'https', host: '::1', port: 2 },
        { kind: 'socks5', host: '127.0.0.1', port: 1 },
      ],
    );
  });

  it('quoted() leaves nothing that could end a comment line', () => {
    assert.equal(quoted('a\nb\u2028c"d\u00e9'), '"a\\nb\\u2028c\\"d\\u00e9"');
  });
});

describe('profile: clash', () => {
  it('parses back with one proxy per listener, the group credentials and the TLS flags', async () => {
    const gateway = await loadGateway(ALL_LISTENERS);
    const text = buildClash(inputFor(gateway, { host: 'gw.example.com' }));
    const config = parse(text) as ClashConfig;
    assert.deepEqual(
      config.proxies.map((proxy) => [proxy.name, proxy.type, proxy.server, proxy.port, proxy.tls]),
      [
        ['postern-https', 'http', 'gw.example.com', 3129, true],
        ['postern-http', 'http', 'gw.example.com', 3128, false],
        ['postern-socks5', 'socks5', 'gw.example.com', 1080, false],
      ],
    );
    for (const proxy of config.proxies) {
      assert.equal(proxy.username, 'office');
      assert.equal(proxy.password, 'office: secret');
      assert.equal(proxy['skip-cert-verify'], false);
      assert.equal(proxy.udp, false);
    }
    assert.deepEqual(config['proxy-groups'], [
      {
        name: 'Postern',
        type: 'select',
        proxies: ['postern-https', 'postern-http', 'postern-socks5'],
      },
    ]);
    assert.equal(config.mode, 'rule');
    assert.ok(config.rules.includes('IP-CIDR,127.0.0.0/8,DIRECT,no-resolve'));
    assert.ok(config.rules.includes('IP-CIDR,192.168.0.0/16,DIRECT,no-resolve'));
    assert.ok(config.rules.includes('IP-CIDR6,fc00::/7,DIRECT,no-resolve'));
    assert.equal(config.rules.at(-1), 'MATCH,Postern');
    assert.ok(!text.includes('finance-only-secret'), 'another group password never appears');
  });

  it('the object and the YAML agree, and a hostile group id stays inside the comment', () => {
    const input: ProfileInput = {
      group: 'x\ny: 1',
      credentials: { username: 'x\ny: 1', password: 'p' },
      listeners: [{ kind: 'http', host: '192.0.2.1', port: 3128 }],
    };
    assert.deepEqual(parse(buildClash(input)), clashConfig(input));
  });
});

describe('profile: pac', () => {
  it('sends public hosts to HTTPS then PROXY, without SOCKS5 or DIRECT fallback', async () => {
    const gateway = await loadGateway(ALL_LISTENERS);
    const pac = loadPac(buildPac(inputFor(gateway, { host: 'gw.example.com' })));
    const expected = 'HTTPS gw.example.com:3129; PROXY gw.example.com:3128';
    for (const url of [
      'https://example.com/',
      'http://www.example.org:8080/x',
      'http://8.8.8.8/',
      'http://[2001:db8::1]/',
      'http://intranet.corp/',
    ]) {
      assert.equal(pac.find(url), expected, url);
    }
  });

  it('keeps plain names, localhost, loopback, private and link-local addresses direct', async () => {
    const gateway = await loadGateway(ALL_LISTENERS);
    const pac = loadPac(buildPac(inputFor(gateway, { host: 'gw.example.com' })));
    for (const url of [
      'http://printer/',
      'http://localhost:3000/',
      'http://app.localhost/',
      'http://127.0.0.1/',
      'http://10.1.2.3/',
      'http://172.16.0.1/',
      'http://172.31.255.255/',
      'http://192.168.1.1/',
      'http://169.254.169.254/',
      'http://[::1]/',
      'http://[fd12:3456::1]/',
      'http://[fe80::1]/',
    ]) {
      assert.equal(pac.find(url), 'DIRECT', url);
    }
    assert.notEqual(pac.find('http://172.32.0.1/'), 'DIRECT');
    assert.deepEqual(pac.resolved, [], 'the PAC never resolves a name on the device');
  });

  it('a gateway with only SOCKS5 cannot have a PAC file', async () => {
    const gateway = await loadGateway(
      ['gateway:', '  proxy:', '    socks5:', '      listen_addr: 127.0.0.1:1080', ''].join('\n'),
    );
    const { listeners } = configuredListeners(gateway);
    await expectProfileError(
      () => dialableListeners(listeners, undefined, PAC_KINDS),
      /gateway\.proxy\.https\.listen_addr or gateway\.proxy\.http\.listen_addr.*cannot authenticate to a SOCKS5 proxy/,
    );
    await expectProfileError(
      () => buildPac(inputFor(gateway, { password: 'pw' })),
      /cannot authenticate to a SOCKS5 proxy/,
    );
  });

  it('a wildcard SOCKS5 listener does not stop a PAC file, which never uses it', () => {
    const listeners = dialableListeners(
      [
        { kind: 'socks5', host: '0.0.0.0', port: 1080 },
        { kind: 'http', host: '192.0.2.1', port: 3128 },
      ],
      undefined,
      PAC_KINDS,
    );
    assert.deepEqual(listeners, [{ kind: 'http', host: '192.0.2.1', port: 3128 }]);
  });
});

interface Outcome {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs the CLI with no `POSTERN_*` variables but those in `env`. */
async function posternWith(env: Record<string, string>, ...args: string[]): Promise<Outcome> {
  try {
    const { stdout, stderr } = await run(process.execPath, [cli, ...args], {
      timeout: 20_000,
      env: { PATH: process.env.PATH ?? '', ...env },
    });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const failure = err as { code: number; stdout: string; stderr: string };
    return { code: failure.code, stdout: failure.stdout, stderr: failure.stderr };
  }
}

/** `postern profile KIND -c FILE ...flags` */
function profileFrom(kind: 'clash' | 'pac', file: string, ...flags: string[]): Promise<Outcome> {
  return posternWith({}, 'profile', kind, '-c', file, ...flags);
}

describe('profile: command line', () => {
  it('profile clash prints only the YAML on stdout and exits 0', async () => {
    await withConfigFile(ALL_LISTENERS, async (file) => {
      const { code, stdout, stderr } = await profileFrom(
        'clash',
        file,
        '--group',
        'office',
        '--host',
        'gw.example.com',
      );
      assert.equal(code, 0, stderr);
      assert.equal(stderr, '');
      const config = parse(stdout) as ClashConfig;
      assert.deepEqual(
        config.proxies.map((proxy) => `${proxy.type} ${proxy.server}:${proxy.port}`),
        ['http gw.example.com:3129', 'http gw.example.com:3128', 'socks5 gw.example.com:1080'],
      );
      assert.equal(config.proxies[0]!.password, 'office: secret');
    });
  });

  it('profile pac prints a PAC file; a left-out listener is named on stderr only', async () => {
    const yaml = [
      'gateway:',
      '  proxy:',
      '    http:',
      '      listen_addr: 127.0.0.1:3128',
      '    https:',
      '      listen_addr: 127.0.0.1:3129',
      '',
    ].join('\n');
    await withConfigFile(yaml, async (file) => {
      const { code, stdout, stderr } = await profileFrom(
        'pac',
        file,
        '--group',
        'team',
        '--password',
        'pw',
      );
      assert.equal(code, 0, stderr);
      assert.match(stderr, /https proxy left out of the profile: .*generated/);
      assert.equal(loadPac(stdout).find('http://example.com/'), 'PROXY 127.0.0.1:3128');
    });
  });

  it('errors go to stderr with exit 1 and nothing on stdout', async () => {
    await withConfigFile(ALL_LISTENERS, async (file) => {
      const noHost = await profileFrom('clash', file, '--group', 'office');
      assert.equal(noHost.code, 1);
      assert.equal(noHost.stdout, '');
      assert.match(noHost.stderr, /^postern: .*--host/);

      const unknown = await profileFrom('pac', file, '--group', 'nobody', '--host', 'gw');
      assert.equal(unknown.code, 1);
      assert.equal(unknown.stdout, '');
      assert.match(unknown.stderr, /group "nobody" is not declared.*--password/);

      const noGroup = await profileFrom('pac', file, '--host', 'gw');
      assert.equal(noGroup.code, 1);
      assert.match(noGroup.stderr, /--group/);
    });
  });

  it('reads POSTERN_* variables like postern gateway does', async () => {
    const { code, stdout, stderr } = await posternWith(
      {
        POSTERN_GATEWAY_PROXY_HTTP_LISTEN_ADDR: '198.51.100.4:8080',
        POSTERN_GATEWAY_GROUPS: '[{"id":"office","password":"pw"}]',
      },
      'profile',
      'pac',
      '--group',
      'office',
    );
    assert.equal(code, 0, stderr);
    assert.equal(loadPac(stdout).find('https://example.com/'), 'PROXY 198.51.100.4:8080');
  });

  it('takes the listener flags of postern gateway, which win over the file', async () => {
    await withConfigFile(ALL_LISTENERS, async (file) => {
      const { code, stdout, stderr } = await profileFrom(
        'pac',
        file,
        '--group',
        'office',
        '--http',
        '192.0.2.8:8080',
        '--https',
        '192.0.2.8:8443',
      );
      assert.equal(code, 0, stderr);
      assert.equal(
        loadPac(stdout).find('https://example.com/'),
        'HTTPS 192.0.2.8:8443; PROXY 192.0.2.8:8080',
      );
    });
  });
});

describe('profile: end to end', () => {
  it('every proxy a profile names carries a request through the tunnel', async (t) => {
    const target = await startHttpServer((request, response) => {
      response.end(`through the tunnel: ${request.method} ${request.url}`);
    });
    t.after(() => target.close());
    const tunnel = await startTunnel({
      proxy: {
        socks5: { listen_addr: '127.0.0.1:0' },
        http: { listen_addr: '127.0.0.1:0' },
        https: { listen_addr: '127.0.0.1:0' },
      },
    });
    t.after(() => tunnel.close());
    const dir = await mkdtemp(join(tmpdir(), 'postern-profile-e2e-'));
    t.after(() => rm(dir, { recursive: true, force: true }));
    const caFile = join(dir, 'gateway.pem');
    await writeFile(caFile, tunnel.gateway.certificate.cert);

    const input: ProfileInput = {
      group: GROUP,
      credentials: groupCredentials(
        { groups: [{ id: GROUP, password: PASSWORD }] },
        GROUP,
        undefined,
      ),
      listeners: dialableListeners(boundListeners(tunnel.gateway.addresses), undefined),
    };
    const url = `http://127.0.0.1:${target.port}/profile`;
    const curl = async (...args: string[]) => {
      const { stdout } = await run('curl', [
        '--silent',
        '--show-error',
        '--max-time',
        '10',
        ...args,
      ]);
      return stdout;
    };

    // PAC: the entries it returns for a public host, with the credentials a browser would ask for.
    const pac = loadPac(buildPac(input));
    const entries = pacEntries(pac.find('http://example.com/'));
    assert.deepEqual(
      entries.map((entry) => entry.scheme),
      ['https', 'http'],
    );
    for (const { scheme, authority } of entries) {
      const proxy = `${scheme}://${authority}`;
      const body = await curl(
        '--proxy',
        proxy,
        '--proxy-user',
        `${GROUP}:${PASSWORD}`,
        ...(scheme === 'https' ? ['--proxy-cacert', caFile] : []),
        url,
      );
      assert.equal(body, 'through the tunnel: GET /profile', proxy);
    }

    // Clash: every proxy entry, as written, with its own credentials.
    const clash = parse(buildClash(input)) as ClashConfig;
    assert.equal(clash.proxies.length, 3);
    for (const proxy of clash.proxies) {
      const scheme = proxy.type === 'socks5' ? 'socks5h' : proxy.tls ? 'https' : 'http';
      const body = await curl(
        '--proxy',
        `${scheme}://${proxy.server}:${proxy.port}`,
        '--proxy-user',
        `${proxy.username}:${proxy.password}`,
        ...(proxy.tls ? ['--proxy-cacert', caFile] : []),
        url,
      );
      assert.equal(body, 'through the tunnel: GET /profile', proxy.name);
    }
  });
});
