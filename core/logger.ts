import { pino } from 'pino';

export type Logger = pino.Logger;

/**
 * Structured logs, one JSON line per event. Nothing that could hold a secret is ever passed to
 * the logger; the redaction below is a second line of defence against a mistake.
 */
export function createLogger(level = 'info', destination?: pino.DestinationStream): Logger {
  const options: pino.LoggerOptions = {
    level,
    redact: { paths: ['authorization', '*.authorization', 'headers', '*.headers', 'credentials', '*.credentials', 'access_token', 'refresh_token', 'client_secret', '*.client_secret'], censor: '[redacted]' },
  };
  return destination ? pino(options, destination) : pino(options);
}
