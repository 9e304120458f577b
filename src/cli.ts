#!/usr/bin/env -S node --single-threaded-gc
/**
 * The command line: `postern gateway | client | demo | check-config | profile clash|pac`.
 */
import { readFileSync } from 'node:fs';
import { Command, Option } from 'commander';
import { ConfigError, describeConfig, loadConfig, type OverrideValue } from './config/load.js';
import type { PosternConfig } from './config/schema.js';
import { runDemo } from './demo.js';
import { createLogger, type Logger } from './observability/logger.js';
import { buildClash } from './profile/clash.js';
import {
  configuredListeners,
  dialableListeners,
  groupCredentials,
  PROXY_KINDS,
  type ProfileInput,
  type ProxyKind,
} from './profile/listeners.js';
import { buildPac, PAC_KINDS } from './profile/pac.js';
import { runClient, runGateway } from './run.js';

const packageJson = JSON.parse(
  readFileSync(new URL('../../package.json', import.meta.url), 'utf8'),
) as { version: string };

const collect = (value: string, previous: string[] | undefined) => [...(previous ?? []), value];

interface CommonFlags {
  config?: string;
  logLevel?: string;
  logFormat?: string;
}

function commonOptions(command: Command): Command {
  return command
    .option('-c, --config <file>', 'YAML configuration file')
    .addOption(
      new Option('--log-level <level>', 'log level').choices(['debug', 'info', 'warn', 'error']),
    )
    .addOption(new Option('--log-format <format>', 'log format').choices(['pretty', 'json']));
}

function load(
  flags: CommonFlags,
  section: 'gateway' | 'client',
  overrides: Record<string, OverrideValue>,
): PosternConfig {
  return loadConfig({
    ...(flags.config !== undefined && { file: flags.config }),
    sections: [section],
    overrides: { 'log.level': flags.logLevel, 'log.format': flags.logFormat, ...overrides },
  });
}

function loggerFor(config: PosternConfig): Logger {
  return createLogger({ level: config.log.level, format: config.log.format });
}

/** Prints a configuration error (every problem, each naming its key) and exits 1. */
function fail(err: unknown): never {
  if (err instanceof ConfigError) {
    process.stderr.write(`postern: invalid configuration:\n${err.message}\n`);
  } else {
    process.stderr.write(`postern: ${err instanceof Error ? err.message : String(err)}\n`);
  }
  process.exit(1);
}

const program = new Command()
  .name('postern')
  .description(
    'Reverse-tunnel proxy: a public gateway, clients in private networks, one tunnel each.',
  )
  .version(packageJson.version);

commonOptions(
  program
    .command('gateway')
    .description('run the gateway (tunnel endpoint and proxy front doors)')
    .option('--listen <addr>', 'tunnel endpoint address (gateway.listen_addr)')
    .option('--socks5 <addr>', 'SOCKS5 front door address (gateway.proxy.socks5.listen_addr)')
    .option('--http <addr>', 'HTTP proxy address (gateway.proxy.http.listen_addr)')
    .option(
      '--https <addr>',
      'HTTPS proxy address, TLS to the proxy itself (gateway.proxy.https.listen_addr)',
    )
    .option('--tls-cert <file>', 'certificate file (gateway.tls_cert)')
    .option('--tls-key <file>', 'private key file (gateway.tls_key)')
    .option('--auth-username <name>', 'username clients must present (gateway.auth_username)')
    .option('--auth-password <secret>', 'password clients must present (gateway.auth_password)'),
).action(async (flags) => {
  let config: PosternConfig;
  try {
    config = load(flags, 'gateway', {
      'gateway.listen_addr': flags.listen,
      'gateway.proxy.socks5.listen_addr': flags.socks5,
      'gateway.proxy.http.listen_addr': flags.http,
      'gateway.proxy.https.listen_addr': flags.https,
      'gateway.tls_cert': flags.tlsCert,
      'gateway.tls_key': flags.tlsKey,
      'gateway.auth_username': flags.authUsername,
      'gateway.auth_password': flags.authPassword,
    });
  } catch (err) {
    fail(err);
  }
  await runGateway(config.gateway!, loggerFor(config)).catch(fail);
});

commonOptions(
  program
    .command('client')
    .description('run a client (dials the gateway and opens connections for it)')
    .option(
      '--gateway <addr>',
      'gateway host:port or wss:// URL, repeatable (client.gateway.addr)',
      collect,
    )
    .option('--id <id>', 'client id (client.id)')
    .option('--group-id <id>', 'group this client serves (client.group_id)')
    .option('--group-password <secret>', 'group password (client.group_password)')
    .option('--replicas <n>', 'parallel tunnels per gateway (client.replicas)')
    .option('--tls-cert <file>', 'trust this certificate or CA (client.gateway.tls_cert)')
    .option(
      '--tls-fingerprint <sha256>',
      'pin the gateway certificate (client.gateway.tls_fingerprint)',
    )
    .option('--auth-username <name>', 'gateway username (client.gateway.auth_username)')
    .option('--auth-password <secret>', 'gateway password (client.gateway.auth_password)')
    .option('--allow <entry>', 'allowed_hosts entry, repeatable', collect)
    .option('--forbid <entry>', 'forbidden_hosts entry, repeatable', collect),
).action(async (flags) => {
  let config: PosternConfig;
  try {
    config = load(flags, 'client', {
      'client.gateway.addr': flags.gateway,
      'client.id': flags.id,
      'client.group_id': flags.groupId,
      'client.group_password': flags.groupPassword,
      'client.replicas': flags.replicas,
      'client.gateway.tls_cert': flags.tlsCert,
      'client.gateway.tls_fingerprint': flags.tlsFingerprint,
      'client.gateway.auth_username': flags.authUsername,
      'client.gateway.auth_password': flags.authPassword,
      'client.allowed_hosts': flags.allow,
      'client.forbidden_hosts': flags.forbid,
    });
  } catch (err) {
    fail(err);
  }
  await runClient(config.client!, loggerFor(config)).catch(fail);
});

program
  .command('demo')
  .description('run a gateway, a client and a web server on loopback, and print curl lines')
  .addOption(
    new Option('--log-level <level>', 'log level')
      .choices(['debug', 'info', 'warn', 'error'])
      .default('info'),
  )
  .action(async (flags: { logLevel: 'debug' | 'info' | 'warn' | 'error' }) => {
    await runDemo(createLogger({ level: flags.logLevel, format: 'pretty' })).catch(fail);
  });

program
  .command('check-config')
  .description('validate a configuration file without starting anything')
  .argument('<file>', 'YAML configuration file')
  .action((file: string) => {
    try {
      process.stdout.write(`${describeConfig(loadConfig({ file }))}\n`);
    } catch (err) {
      fail(err);
    }
  });

interface ProfileFlags extends CommonFlags {
  group: string;
  password?: string;
  host?: string;
  socks5?: string;
  http?: string;
  https?: string;
  tlsCert?: string;
  tlsKey?: string;
}

/**
 * Reads the gateway's configuration as `postern gateway` does (file, then `POSTERN_*` variables,
 * then the same listener flags) and takes the proxy listeners it opens and the named group's credentials.
 * Listeners left out are named on standard error, so standard output holds only the profile.
 */
function profileInput(flags: ProfileFlags, usable: readonly ProxyKind[]): ProfileInput {
  const config = load(flags, 'gateway', {
    'gateway.proxy.socks5.listen_addr': flags.socks5,
    'gateway.proxy.http.listen_addr': flags.http,
    'gateway.proxy.https.listen_addr': flags.https,
    'gateway.tls_cert': flags.tlsCert,
    'gateway.tls_key': flags.tlsKey,
  });
  const gateway = config.gateway!;
  const { listeners, skipped } = configuredListeners(gateway);
  for (const { kind, reason } of skipped.filter((entry) => usable.includes(entry.kind))) {
    process.stderr.write(`postern: ${kind} proxy left out of the profile: ${reason}\n`);
  }
  return {
    group: flags.group,
    credentials: groupCredentials(gateway, flags.group, flags.password),
    listeners: dialableListeners(listeners, flags.host, usable),
  };
}

const profile = program
  .command('profile')
  .description('print a Clash config or a PAC file for a group, from the gateway configuration');

for (const [name, description, build, usable] of [
  ['clash', 'print a Clash / Mihomo configuration (YAML) for a group', buildClash, PROXY_KINDS],
  ['pac', 'print a proxy auto-config (PAC) file for a group', buildPac, PAC_KINDS],
] as const) {
  profile
    .command(name)
    .description(description)
    .option('-c, --config <file>', "the gateway's YAML configuration file")
    .requiredOption('--group <id>', 'group the profile is for (its id is the proxy user name)')
    .option(
      '--password <secret>',
      'group password (default: the one in gateway.groups, when the group is declared there)',
    )
    .option(
      '--host <host>',
      'host devices dial (required when a listener binds every interface, e.g. 0.0.0.0)',
    )
    .option('--socks5 <addr>', 'as for postern gateway (gateway.proxy.socks5.listen_addr)')
    .option('--http <addr>', 'as for postern gateway (gateway.proxy.http.listen_addr)')
    .option('--https <addr>', 'as for postern gateway (gateway.proxy.https.listen_addr)')
    .option('--tls-cert <file>', 'as for postern gateway (gateway.tls_cert)')
    .option('--tls-key <file>', 'as for postern gateway (gateway.tls_key)')
    .action((flags: ProfileFlags) => {
      let text: string;
      try {
        text = build(profileInput(flags, usable));
      } catch (err) {
        fail(err);
      }
      process.stdout.write(text);
    });
}

await program.parseAsync();
