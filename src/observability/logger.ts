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
