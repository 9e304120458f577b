/**
 * Runs gateways and clients as a process: start them, then on SIGINT/SIGTERM stop them in
 * order and exit 0. A second signal exits at once.
 */
import { Client, type ClientSettings } from './client/client.js';
import { Gateway, type GatewaySettings } from './gateway/gateway.js';
import type { Logger } from './observability/logger.js';

export interface Stoppable {
  close(): Promise<void>;
}

/** Waits for SIGINT or SIGTERM, then closes `parts` in reverse order of start. */
export function stopOnSignal(parts: readonly Stoppable[], logger: Logger): Promise<void> {
  return new Promise((resolve) => {
    const onSignal = (signal: NodeJS.Signals) => {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
      const forced = (again: NodeJS.Signals) => {
        logger.warn({ signal: again }, 'second signal: exiting without draining');
        process.exit(130);
      };
      process.once('SIGINT', forced);
      process.once('SIGTERM', forced);
      logger.info({ signal }, 'shutting down');
      void (async () => {
        for (const part of [...parts].reverse()) await part.close();
        process.off('SIGINT', forced);
        process.off('SIGTERM', forced);
        resolve();
      })();
    };
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
  });
}

export async function runGateway(settings: GatewaySettings, logger: Logger): Promise<void> {
  const gateway = await Gateway.start(settings, logger);
  process.stderr.write(`gateway certificate fingerprint: ${gateway.certificate.fingerprint}\n`);
  await stopOnSignal([gateway], logger);
}

export async function runClient(settings: ClientSettings, logger: Logger): Promise<void> {
  const client = new Client(settings, logger);
  await stopOnSignal([client], logger);
}
