import pino from 'pino';
import pretty from 'pino-pretty';

export type Logger = pino.Logger;
export type LogLevel = 'debug' | 'info' | 'warn' | 'error' | 'silent';
export type LogFormat = 'pretty' | 'json';

export interface LoggerOptions {
  level: LogLevel;
  format: LogFormat;
  /** Where lines go; standard error by default so standard output stays for the user. */
  destination?: NodeJS.WritableStream;
}

/** One line per event; child loggers carry `session` and `stream` ids. */
export function createLogger(options: LoggerOptions): Logger {
  const destination = options.destination ?? process.stderr;
  if (options.format === 'pretty') {
    return pino(
      { level: options.level, base: undefined },
      pretty({ destination, sync: true, translateTime: 'HH:MM:ss.l', ignore: 'pid,hostname' }),
    );
  }
  return pino({ level: options.level, base: undefined }, destination);
}

/** A logger that drops everything: for tests and for embedding. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}

/** The logging calls per-connection code makes; a pino Logger is one, so is a deferred child. */
export interface Log {
  debug: pino.LogFn;
  info: pino.LogFn;
  warn: pino.LogFn;
  error: pino.LogFn;
  isLevelEnabled(level: LogLevel): boolean;
  child(bindings: pino.Bindings): Log;
}

/**
 * A child logger that becomes a pino child only when it first writes a line. A pino child costs
 * a few KiB (bound level methods, its own prototype); one per proxied connection that may never
 * log at the configured level is most of what an idle connection costs. Lines are the same as
 * those of `parent.child(bindings)`.
 */
export function deferredChild(parent: Log, bindings: pino.Bindings): Log {
  return new DeferredChild(parent, bindings);
}

class DeferredChild {
  readonly #parent: Log;
  readonly #bindings: pino.Bindings;
  #logger: Log | undefined;

  constructor(parent: Log, bindings: pino.Bindings) {
    this.#parent = parent;
    this.#bindings = bindings;
  }

  isLevelEnabled(level: LogLevel): boolean {
    return this.#parent.isLevelEnabled(level);
  }

  child(bindings: pino.Bindings): Log {
    return new DeferredChild(this, bindings);
  }

  debug(...args: unknown[]): void {
    this.#write('debug', args);
  }

  info(...args: unknown[]): void {
    this.#write('info', args);
  }

  warn(...args: unknown[]): void {
    this.#write('warn', args);
  }

  error(...args: unknown[]): void {
    this.#write('error', args);
  }

  #write(level: 'debug' | 'info' | 'warn' | 'error', args: unknown[]): void {
    if (!this.isLevelEnabled(level)) return;
    const logger = this.#real();
    Reflect.apply(logger[level], logger, args);
  }

  #real(): Log {
    if (this.#logger === undefined) {
      const parent = this.#parent instanceof DeferredChild ? this.#parent.#real() : this.#parent;
      this.#logger = parent.child(this.#bindings);
    }
    return this.#logger;
  }
}
