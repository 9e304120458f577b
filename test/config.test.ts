import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import {
  formatDuration,
  MAX_DURATION_MS,
  parseDuration,
  parseListenAddr,
} from '../src/config/duration.js';
import {
  ConfigError,
  describeConfig,
  ENV_KEYS,
  type LoadConfigOptions,
  loadConfig,
} from '../src/config/load.js';
import type { PosternConfig } from '../src/config/schema.js';
import { isPosternError } from '../src/errors.js';

const directory = mkdtempSync(join(tmpdir(), 'postern-config-'));
let fileCount = 0;

after(() => {
  rmSync(directory, { recursive: true, force: true });
});

/** Writes `yaml` to a new file in the test directory and returns its path. */
function yamlFile(yaml: string): string {
  fileCount += 1;
  const path = join(directory, `config-${fileCount}.yaml`);
  writeFileSync(path, yaml);
  return path;
}

/** Loads with an empty environment unless the test gives one, so the runner's env cannot leak in. */
function load(options: LoadConfigOptions): PosternConfig {
  return loadConfig({ env: {}, ...options });
}

/** The ConfigError that loading throws; fails the test when loading succeeds. */
function loadError(options: LoadConfigOptions): ConfigError {
  try {
    load(options);
  } catch (err) {
    assert.ok(err instanceof ConfigError, `expected a ConfigError, got ${String(err)}`);
    return err;
  }
  assert.fail('expected loadConfig to throw');
}

function issueAt(error: ConfigError, path: string): string {
  const issue = error.issues.find((candidate) => candidate.path === path);
  assert.ok(issue, `no issue at ${path}; issues:\n${error.message}`);
  return issue.message;
}

const MINIMAL_CLIENT = `
client:
  group_id: team
  group_password: secret
  gateway:
    addr: gw.example.com:8443
`;

const FINGERPRINT_HEX = 'ab12'.repeat(16);

describe('defaults', () => {
  test('a gateway section given as empty gets every default', () => {
    const config = load({ file: yamlFile('gateway:\n') });
    assert.deepEqual(config.log, { level: 'info', format: 'pretty' });
    assert.deepEqual(config.gateway, {
      listen_addr: ':8443',
      heartbeat: { interval: 10_000, timeout: 30_000 },
      handshake_timeout: 10_000,
      drain_timeout: 10_000,
      open_timeout: 15_000,
      proxy: { socks5: {}, http: {}, https: {} },
      groups: [],
    });
    assert.equal(config.client, undefined);
  });

  test('a client section gets every default and an id made of the host name and 6 hex digits', () => {
    const client = load({ file: yamlFile(MINIMAL_CLIENT) }).client!;
    const { id, ...rest } = client;
    assert.match(id, /^.+-[0-9a-f]{6}$/);
    assert.ok(id.startsWith(`${hostname().slice(0, 121)}-`), id);
    assert.deepEqual(rest, {
      group_id: 'team',
      group_password: 'secret',
      replicas: 1,
      gateway: { urls: ['wss://gw.example.com:8443/tunnel'] },
      heartbeat: { interval: 10_000, timeout: 30_000 },
      reconnect: { initial_delay: 500, max_delay: 30_000 },
      allowed_hosts: [],
      forbidden_hosts: [],
      dial_timeout: 10_000,
      drain_timeout: 10_000,
    });
  });

  test('an empty value means unset and an empty section means its defaults', () => {
    const config = load({ file: yamlFile('log:\ngateway:\n  tls_cert:\n  tls_key:\n') });
    assert.deepEqual(config.log, { level: 'info', format: 'pretty' });
    assert.equal(config.gateway?.tls_cert, undefined);
    assert.equal(config.gateway?.listen_addr, ':8443');
  });

  test('a configuration with neither a gateway nor a client section is refused', () => {
    const error = loadError({ file: yamlFile('log:\n  level: debug\n') });
    assert.match(issueAt(error, 'config'), /gateway section, a client section, or both/);
  });

  test('the sections option creates a section the caller needs', () => {
    const config = load({ sections: ['gateway'] });
    assert.equal(config.gateway?.listen_addr, ':8443');
    const error = loadError({ sections: ['client'] });
    assert.match(issueAt(error, 'client.gateway.addr'), /^is required$/);
    assert.deepEqual(
      error.issues.map((issue) => issue.path),
      ['client.group_id', 'client.group_password', 'client.gateway.addr'],
    );
  });
});

describe('durations', () => {
  test('units, compounds, fractions and plain milliseconds become whole milliseconds', () => {
    assert.equal(parseDuration('500ms'), 500);
    assert.equal(parseDuration('20s'), 20_000);
    assert.equal(parseDuration('5m'), 300_000);
    assert.equal(parseDuration('1h'), 3_600_000);
    assert.equal(parseDuration('1m30s'), 90_000);
    assert.equal(parseDuration('1.5s'), 1_500);
    assert.equal(parseDuration(250), 250);
    assert.equal(parseDuration('250'), 250);
  });

  test('formatDuration writes what parseDuration reads back', () => {
    for (const ms of [1, 500, 1_000, 90_000, 3_600_001, MAX_DURATION_MS]) {
      assert.equal(parseDuration(formatDuration(ms)), ms);
    }
    assert.equal(formatDuration(90_000), '1m30s');
  });

  test('malformed, zero, negative and too long durations are refused', () => {
    for (const bad of ['ten seconds', '10sec', '-5s', '', 'ms', '1.5']) {
      assert.throws(
        () => parseDuration(bad),
        (err) => isPosternError(err, 'POSTERN_ERR_CONFIG'),
      );
    }
    assert.throws(() => parseDuration(0), /at least 1ms/);
    assert.throws(() => parseDuration(-1), /at least 1ms/);
    assert.throws(() => parseDuration(MAX_DURATION_MS + 1), /at most/);
  });

  test('durations in a file, in the environment and as numbers all reach the config', () => {
    const config = load({
      file: yamlFile(`gateway:\n  heartbeat:\n    interval: 2s\n    timeout: 5000\n`),
      env: { POSTERN_GATEWAY_OPEN_TIMEOUT: '1m' },
    });
    assert.deepEqual(config.gateway?.heartbeat, { interval: 2_000, timeout: 5_000 });
    assert.equal(config.gateway?.open_timeout, 60_000);
  });
});

describe('listen addresses', () => {
  test('host:port, [ipv6]:port, :port and port 0 parse', () => {
    assert.deepEqual(parseListenAddr('0.0.0.0:8443'), { host: '0.0.0.0', port: 8443 });
    assert.deepEqual(parseListenAddr('127.0.0.1:1080'), { host: '127.0.0.1', port: 1080 });
    assert.deepEqual(parseListenAddr('[::1]:1080'), { host: '::1', port: 1080 });
    assert.deepEqual(parseListenAddr(':1080'), { host: '0.0.0.0', port: 1080 });
    assert.deepEqual(parseListenAddr('localhost:0'), { host: 'localhost', port: 0 });
  });

  test('addresses without a port, with a bad port or with bare IPv6 are refused', () => {
    const cases: [string, RegExp][] = [
      ['127.0.0.1', /no :port/],
      ['8443', /did you mean ":8443"/],
      ['host:65536', /invalid port/],
      ['host:http', /invalid port/],
      ['::1:1080', /IPv6 address in brackets/],
      ['[nope]:1', /IPv6/],
      ['999.1.1.1:1', /invalid host/],
    ];
    for (const [text, reason] of cases) {
      assert.throws(
        () => parseListenAddr(text),
        (err) => isPosternError(err, 'POSTERN_ERR_CONFIG') && reason.test(err.message),
        text,
      );
    }
  });

  test('a bad listen address in the file names its key', () => {
    const error = loadError({
      file: yamlFile('gateway:\n  proxy:\n    socks5:\n      listen_addr: "1080"\n'),
    });
    assert.match(issueAt(error, 'gateway.proxy.socks5.listen_addr'), /did you mean ":1080"/);
  });
});

describe('precedence', () => {
  const file = () => yamlFile('log:\n  level: warn\ngateway:\n  listen_addr: 0.0.0.0:9000\n');

  test('environment variables override the file', () => {
    const config = load({
      file: file(),
      env: {
        POSTERN_GATEWAY_LISTEN_ADDR: '127.0.0.1:9001',
        POSTERN_GATEWAY_PROXY_SOCKS5_LISTEN_ADDR: '127.0.0.1:1080',
        HOME: '/ignored',
      },
    });
    assert.equal(config.log.level, 'warn');
    assert.equal(config.gateway?.listen_addr, '127.0.0.1:9001');
    assert.equal(config.gateway?.proxy.socks5.listen_addr, '127.0.0.1:1080');
  });

  test('overrides (command-line flags) override environment variables', () => {
    const config = load({
      file: file(),
      env: { POSTERN_GATEWAY_LISTEN_ADDR: '127.0.0.1:9001', POSTERN_LOG_LEVEL: 'error' },
      overrides: { 'gateway.listen_addr': '127.0.0.1:9002', 'log.format': undefined },
    });
    assert.equal(config.gateway?.listen_addr, '127.0.0.1:9002');
    assert.equal(config.log.level, 'error');
    assert.equal(config.log.format, 'pretty');
  });

  test('a POSTERN_CLIENT_* variable creates the client section; lists split at commas', () => {
    const config = load({
      env: {
        POSTERN_CLIENT_GROUP_ID: 'team',
        POSTERN_CLIENT_GROUP_PASSWORD: 'secret',
        POSTERN_CLIENT_GATEWAY_ADDR: 'a.example:8443, wss://b.example:9443/t ,',
        POSTERN_CLIENT_ALLOWED_HOSTS: '*.internal,10.0.0.0/8:22',
        POSTERN_CLIENT_REPLICAS: '3',
        POSTERN_CLIENT_HEARTBEAT_INTERVAL: '5s',
        POSTERN_CLIENT_GATEWAY_AUTH_USERNAME: 'edge',
        POSTERN_CLIENT_GATEWAY_AUTH_PASSWORD: 'pw',
        POSTERN_CLIENT_ID: '',
      },
    });
    const client = config.client!;
    assert.deepEqual(client.gateway.urls, [
      'wss://a.example:8443/tunnel',
      'wss://b.example:9443/t',
    ]);
    assert.deepEqual(client.allowed_hosts, ['*.internal', '10.0.0.0/8:22']);
    assert.equal(client.replicas, 3);
    assert.equal(client.heartbeat.interval, 5_000);
    assert.equal(client.gateway.auth_password, 'pw');
    assert.notEqual(client.id, '', 'an empty variable counts as unset');
    assert.equal(config.gateway, undefined);
  });

  test('POSTERN_GATEWAY_GROUPS is a JSON array; arrays in overrides are taken as they are', () => {
    const config = load({
      env: { POSTERN_GATEWAY_GROUPS: '[{"id":"a","password":"x"},{"id":"b","password":"y"}]' },
      overrides: {
        'client.group_id': 'team',
        'client.group_password': 'secret',
        'client.gateway.addr': ['gw.example.com:8443'],
        'client.forbidden_hosts': ['evil.example', '192.0.2.0/24'],
        'client.replicas': 2,
      },
    });
    assert.deepEqual(config.client?.forbidden_hosts, ['evil.example', '192.0.2.0/24']);
    assert.equal(config.client?.replicas, 2);
    assert.deepEqual(config.gateway?.groups, [
      { id: 'a', password: 'x' },
      { id: 'b', password: 'y' },
    ]);
    const error = loadError({ env: { POSTERN_GATEWAY_GROUPS: '[{"id":' } });
    assert.match(issueAt(error, 'POSTERN_GATEWAY_GROUPS'), /must be JSON/);
  });

  test('a problem in a value from a variable or a flag says where it came from', () => {
    const error = loadError({
      file: yamlFile(MINIMAL_CLIENT),
      env: { POSTERN_CLIENT_REPLICAS: 'many' },
      overrides: { 'client.dial_timeout': 'soon' },
    });
    assert.match(issueAt(error, 'client.replicas'), /\(from POSTERN_CLIENT_REPLICAS\)$/);
    assert.match(issueAt(error, 'client.dial_timeout'), /\(from the command line\)$/);
  });

  test('ENV_KEYS lists a variable for every key, and each one is accepted', () => {
    const byEnv = new Map(ENV_KEYS.map(({ env, path }) => [env, path]));
    assert.equal(byEnv.get('POSTERN_GATEWAY_LISTEN_ADDR'), 'gateway.listen_addr');
    assert.equal(byEnv.get('POSTERN_CLIENT_GATEWAY_AUTH_PASSWORD'), 'client.gateway.auth_password');
    assert.equal(byEnv.get('POSTERN_CLIENT_HEARTBEAT_INTERVAL'), 'client.heartbeat.interval');
    assert.equal(byEnv.get('POSTERN_LOG_LEVEL'), 'log.level');
    assert.equal(
      byEnv.get('POSTERN_GATEWAY_PROXY_SOCKS5_LISTEN_ADDR'),
      'gateway.proxy.socks5.listen_addr',
    );
    for (const { env, path } of ENV_KEYS) {
      assert.equal(env, `POSTERN_${path.replaceAll('.', '_').toUpperCase()}`);
      const error = loadError({ env: { [env]: '%' } });
      assert.doesNotMatch(error.message, /unknown environment variable/, env);
    }
  });
});

describe('problems', () => {
  test('every problem in a file is reported, each naming its key', () => {
    const error = loadError({
      file: yamlFile(`
gateway:
  heartbeat:
    interval: 30s
    timeout: 10s
client:
  group_id: team
  group_password: secret
  replicas: 0
  gateway:
    addr: gw.example.com:8443
    tls_fingerprint: sha256:abc
`),
    });
    assert.deepEqual(
      error.issues.map((issue) => issue.path),
      ['gateway.heartbeat.timeout', 'client.replicas', 'client.gateway.tls_fingerprint'],
    );
    assert.equal(error.code, 'POSTERN_ERR_CONFIG');
    assert.ok(isPosternError(error, 'POSTERN_ERR_CONFIG'));
    assert.equal(error.message.split('\n').length, 3);
    assert.match(error.message, /^gateway\.heartbeat\.timeout: must be longer than interval/m);
    assert.match(issueAt(error, 'client.replicas'), /at least 1 \(.*:9\)$/);
  });

  test('an unknown key is an error naming it, with the likely intended key', () => {
    const error = loadError({ file: yamlFile('gateway:\n  listen_adr: ":8443"\n') });
    assert.deepEqual(error.issues, [
      {
        path: 'gateway.listen_adr',
        message: `unknown key (did you mean "listen_addr"?) (${join(directory, `config-${fileCount}.yaml`)}:2)`,
      },
    ]);
    const nested = loadError({
      env: { POSTERN_GATEWAY_GROUPS: '[{"id":"a","password":"x"},{"id":"b","pasword":"y"}]' },
    });
    assert.match(issueAt(nested, 'gateway.groups[1].pasword'), /unknown key/);
    assert.match(issueAt(nested, 'gateway.groups[1].password'), /is required/);
  });

  test('an unknown POSTERN_ variable or override key is an error naming it', () => {
    const error = loadError({
      file: yamlFile('gateway:\n'),
      env: { POSTERN_GATEWAY_LISTEN_ADR: ':1', OTHER_VARIABLE: 'x' },
      overrides: { 'client.groupid': 'g' },
    });
    assert.deepEqual(
      error.issues.map((issue) => issue.path),
      ['POSTERN_GATEWAY_LISTEN_ADR', 'client.groupid'],
    );
    assert.match(issueAt(error, 'POSTERN_GATEWAY_LISTEN_ADR'), /POSTERN_GATEWAY_LISTEN_ADDR/);
  });

  test('paired keys: one without the other names the missing one', () => {
    const error = loadError({
      file: yamlFile(`
gateway:
  tls_cert: gateway.pem
  auth_password: pw
${MINIMAL_CLIENT.replace('client:\n', 'client:\n  reconnect:\n    initial_delay: 5s\n    max_delay: 1s\n')}
    auth_username: edge
`),
    });
    assert.match(issueAt(error, 'gateway.tls_key'), /required when tls_cert is set/);
    assert.match(issueAt(error, 'gateway.auth_username'), /required when auth_password is set/);
    assert.match(issueAt(error, 'client.gateway.auth_password'), /required when auth_username/);
    assert.match(issueAt(error, 'client.reconnect.max_delay'), /at least initial_delay \(5s\)/);
    assert.equal(error.issues.length, 4);
  });

  test('group ids must be unique; the duplicate is named by its index', () => {
    const error = loadError({
      file: yamlFile(`
gateway:
  groups:
    - { id: a, password: x }
    - { id: a, password: y }
    - { id: "b:c", password: z }
`),
    });
    assert.match(issueAt(error, 'gateway.groups[1].id'), /duplicate group id "a"/);
    assert.match(issueAt(error, 'gateway.groups[2].id'), /must not contain ":"/);
  });

  test('a YAML syntax error is reported with its line', () => {
    const path = yamlFile('gateway:\n  listen_addr: ":8443"\n  heartbeat: interval: 5s\n');
    const error = loadError({ file: path });
    assert.equal(error.issues.length, 1);
    assert.equal(error.issues[0]!.path, path);
    assert.match(error.issues[0]!.message, /^YAML syntax error: .* at line 3, column \d+$/);
  });

  test('a duplicate YAML key is reported with its line', () => {
    const error = loadError({
      file: yamlFile('gateway:\n  listen_addr: ":1"\n  listen_addr: ":2"\n'),
    });
    assert.match(error.issues[0]!.message, /unique at line 3/);
  });

  test('a missing file, a directory and a file that is not a mapping are ConfigErrors', () => {
    const missing = join(directory, 'absent.yaml');
    assert.deepEqual(loadError({ file: missing }).issues, [
      { path: missing, message: 'file not found' },
    ]);
    const folder = join(directory, 'folder.yaml');
    mkdirSync(folder);
    assert.match(issueAt(loadError({ file: folder }), folder), /directory/);
    const list = yamlFile('- gateway\n');
    assert.match(issueAt(loadError({ file: list }), list), /must hold a mapping/);
  });
});

describe('client gateway addresses and pins', () => {
  function urlsFor(addr: string | string[]): string[] {
    return load({
      overrides: {
        'client.group_id': 'g',
        'client.group_password': 'p',
        'client.gateway.addr': addr,
      },
    }).client!.gateway.urls;
  }

  test('host:port and wss:// URLs become wss URLs, with /tunnel when there is no path', () => {
    assert.deepEqual(urlsFor('gw.example.com:8443'), ['wss://gw.example.com:8443/tunnel']);
    assert.deepEqual(urlsFor('[::1]:8443'), ['wss://[::1]:8443/tunnel']);
    assert.deepEqual(urlsFor(['wss://gw:8443', 'wss://gw:8443/', 'WSS://GW:9/custom']), [
      'wss://gw:8443/tunnel',
      'wss://gw:8443/tunnel',
      'wss://gw:9/custom',
    ]);
  });

  test('ws:// is refused with a reason, never downgraded', () => {
    const error = loadError({
      file: yamlFile(MINIMAL_CLIENT.replace('gw.example.com:8443', '[wss://a:1, ws://b:2]')),
    });
    assert.deepEqual(
      error.issues.map((issue) => issue.path),
      ['client.gateway.addr[1]'],
    );
    assert.match(error.issues[0]!.message, /ws:\/\/.*no TLS.*wss:\/\//);
    for (const bad of ['https://gw:443', 'wss://user:pw@gw:1', 'gw.example.com', ':8443']) {
      assert.throws(() => urlsFor(bad), ConfigError, bad);
    }
  });

  test('fingerprints are normalised to sha256: and lowercase hex without colons', () => {
    const colons = `SHA256:${FINGERPRINT_HEX.toUpperCase().match(/../g)!.join(':')}`;
    for (const pin of [colons, `sha256:${FINGERPRINT_HEX}`, FINGERPRINT_HEX.toUpperCase()]) {
      const config = load({
        file: yamlFile(MINIMAL_CLIENT),
        env: { POSTERN_CLIENT_GATEWAY_TLS_FINGERPRINT: pin },
      });
      assert.equal(config.client!.gateway.tls_fingerprint, `sha256:${FINGERPRINT_HEX}`);
    }
    for (const bad of [`sha1:${FINGERPRINT_HEX}`, `sha256:${FINGERPRINT_HEX}00`, 'sha256:xyz']) {
      const error = loadError({
        file: yamlFile(MINIMAL_CLIENT),
        env: { POSTERN_CLIENT_GATEWAY_TLS_FINGERPRINT: bad },
      });
      assert.match(issueAt(error, 'client.gateway.tls_fingerprint'), /64 hex digits/);
    }
  });
});

describe('describeConfig', () => {
  test('summarises both sections on one line', () => {
    const config = load({
      file: yamlFile(`
gateway:
  proxy:
    socks5:
      listen_addr: 127.0.0.1:1080
${MINIMAL_CLIENT}
  id: office
  replicas: 2
`),
    });
    assert.equal(
      describeConfig(config),
      'ok: gateway on :8443 (socks5 127.0.0.1:1080), client "office" in group "team" -> wss://gw.example.com:8443/tunnel (2 replicas)',
    );
    assert.equal(
      describeConfig(load({ sections: ['gateway'] })),
      'ok: gateway on :8443 (socks5 off)',
    );
  });

  test('names the HTTP and HTTPS proxies when they are on', () => {
    const config = load({
      sections: ['gateway'],
      overrides: {
        'gateway.proxy.http.listen_addr': '127.0.0.1:8080',
        'gateway.proxy.https.listen_addr': ':8443',
      },
    });
    assert.equal(
      describeConfig(config),
      'ok: gateway on :8443 (socks5 off, http 127.0.0.1:8080, https :8443)',
    );
  });
});

describe('HTTP and HTTPS proxy keys', () => {
  test('listen addresses and the HTTPS certificate are read from the file and the environment', () => {
    const config = load({
      file: yamlFile(`
gateway:
  proxy:
    http:
      listen_addr: 127.0.0.1:3128
    https:
      tls_cert: /etc/postern/proxy.pem
      tls_key: /etc/postern/proxy.key
`),
      env: { POSTERN_GATEWAY_PROXY_HTTPS_LISTEN_ADDR: '[::1]:3129' },
    });
    assert.deepEqual(config.gateway?.proxy.http, { listen_addr: '127.0.0.1:3128' });
    assert.deepEqual(config.gateway?.proxy.https, {
      listen_addr: '[::1]:3129',
      tls_cert: '/etc/postern/proxy.pem',
      tls_key: '/etc/postern/proxy.key',
    });
  });

  test('an HTTPS proxy certificate needs its key, and a bad address is named', () => {
    const error = loadError({
      file: yamlFile(`
gateway:
  proxy:
    http:
      listen_addr: "3128"
    https:
      tls_cert: /etc/postern/proxy.pem
`),
    });
    assert.match(issueAt(error, 'gateway.proxy.https.tls_key'), /required when tls_cert is set/);
    assert.match(issueAt(error, 'gateway.proxy.http.listen_addr'), /did you mean ":3128"/);
  });
});

describe('allowed_sources and no_auth_group', () => {
  const NO_AUTH = `
gateway:
  proxy:
    socks5:
      listen_addr: 127.0.0.1:1080
      allowed_sources: [127.0.0.0/8, "::1", 10.1.2.3, "fd00::/8", 0.0.0.0/0]
      no_auth_group: office
    http:
      allowed_sources: [192.168.0.0/16]
  groups:
    - id: office
      password: secret
`;

  test('both keys are read for every listener kind, from the file and the environment', () => {
    const config = load({
      file: yamlFile(NO_AUTH),
      env: {
        POSTERN_GATEWAY_PROXY_HTTPS_ALLOWED_SOURCES: '10.0.0.0/8, ::ffff:127.0.0.1 ,',
        POSTERN_GATEWAY_PROXY_HTTPS_NO_AUTH_GROUP: 'office',
      },
    });
    assert.deepEqual(config.gateway?.proxy.socks5, {
      listen_addr: '127.0.0.1:1080',
      allowed_sources: ['127.0.0.0/8', '::1', '10.1.2.3', 'fd00::/8', '0.0.0.0/0'],
      no_auth_group: 'office',
    });
    assert.deepEqual(config.gateway?.proxy.http, { allowed_sources: ['192.168.0.0/16'] });
    assert.deepEqual(config.gateway?.proxy.https, {
      allowed_sources: ['10.0.0.0/8', '::ffff:127.0.0.1'],
      no_auth_group: 'office',
    });
    assert.equal(
      describeConfig(config),
      'ok: gateway on :8443 (socks5 127.0.0.1:1080 no-auth "office", 1 group)',
    );
  });

  test('no_auth_group without allowed_sources is refused, saying it would be an open proxy', () => {
    for (const kind of ['socks5', 'http', 'https']) {
      const error = loadError({
        file: yamlFile(`
gateway:
  proxy:
    ${kind}:
      listen_addr: 127.0.0.1:0
      no_auth_group: office
  groups:
    - id: office
      password: secret
`),
      });
      assert.deepEqual(
        error.issues.map((issue) => issue.path),
        [`gateway.proxy.${kind}.allowed_sources`],
      );
      const message = issueAt(error, `gateway.proxy.${kind}.allowed_sources`);
      assert.match(message, /required when no_auth_group is set/);
      assert.match(message, /open proxy/);
      assert.match(message, /"office"/);
    }
  });

  test('an empty allowed_sources is refused, with or without no_auth_group', () => {
    const error = loadError({
      file: yamlFile(`
gateway:
  proxy:
    socks5:
      allowed_sources: []
      no_auth_group: office
    http:
      allowed_sources: []
  groups:
    - id: office
      password: secret
`),
    });
    assert.match(issueAt(error, 'gateway.proxy.socks5.allowed_sources'), /at least one address/);
    assert.match(issueAt(error, 'gateway.proxy.http.allowed_sources'), /remove the key/);
  });

  test('a bad address or CIDR is named by its key and index, from a file or a variable', () => {
    const error = loadError({
      file: yamlFile(`
gateway:
  proxy:
    socks5:
      allowed_sources: [10.0.0.0/33, "fd00::/129", intranet.local, 10.0.0.0/8/8, "fe80::1%eth0", 10.0.0.0/-1, "127.1"]
`),
      env: { POSTERN_GATEWAY_PROXY_HTTP_ALLOWED_SOURCES: '127.0.0.1,300.1.2.3' },
    });
    const at = (index: number) => issueAt(error, `gateway.proxy.socks5.allowed_sources[${index}]`);
    assert.match(at(0), /"10\.0\.0\.0\/33" has an invalid prefix length: .*\/0 to \/32/);
    assert.match(at(1), /"fd00::\/129" has an invalid prefix length: .*\/0 to \/128/);
    assert.match(at(2), /"intranet\.local" is not an IP address or CIDR range/);
    assert.match(at(3), /not an IP address or CIDR range/);
    assert.match(at(4), /not an IP address or CIDR range/);
    assert.match(at(5), /invalid prefix length/);
    assert.match(at(6), /not an IP address or CIDR range/);
    assert.match(
      issueAt(error, 'gateway.proxy.http.allowed_sources[1]'),
      /"300\.1\.2\.3" is not an IP address .*\(from POSTERN_GATEWAY_PROXY_HTTP_ALLOWED_SOURCES\)/,
    );
    assert.equal(error.issues.length, 8);
  });

  test('a no_auth_group that is not declared in gateway.groups is refused', () => {
    const error = loadError({
      file: yamlFile(`
gateway:
  proxy:
    http:
      allowed_sources: [127.0.0.1]
      no_auth_group: ghost
`),
    });
    assert.match(
      issueAt(error, 'gateway.proxy.http.no_auth_group'),
      /group "ghost" is not declared in gateway\.groups/,
    );
  });
});

describe('docs/configuration.md', () => {
  const docs = readFileSync(new URL('../../docs/configuration.md', import.meta.url), 'utf8');
  const yamlBlocks = [...docs.matchAll(/```yaml\n([\s\S]*?)```/g)].map((match) => match[1]!);

  test('its complete example is a valid configuration', () => {
    const complete = docs.slice(docs.indexOf('## A complete example'));
    const example = /```yaml\n([\s\S]*?)```/.exec(complete)?.[1];
    assert.ok(example, 'no yaml block under "A complete example" in docs/configuration.md');
    const config = load({ file: yamlFile(example) });
    assert.equal(config.client?.gateway.urls.length, 2);
    assert.equal(config.gateway?.groups.length, 1);
    assert.equal(config.gateway?.proxy.socks5.no_auth_group, 'office');
  });

  test('every other YAML example is a valid configuration too', () => {
    assert.ok(yamlBlocks.length >= 2, 'expected the complete example and at least one more');
    for (const block of yamlBlocks) load({ file: yamlFile(block) });
  });

  test('it lists every environment variable', () => {
    for (const { env, path } of ENV_KEYS) {
      assert.ok(docs.includes(`| \`${env}\` | \`${path}\` |`), `${env} is not documented`);
    }
  });
});
