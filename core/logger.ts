import { pino } from 'pino';

export type Logger = pino.Logger;

/**
 * An error as a log line shows it: what and where, never its other properties, which for an
 * HTTP client's error include the request it sent, credentials and all.
 */
function serializeError(e: unknown): unknown {
  if (!(e instanceof Error)) return e;
  const code = (e as { code?: unknown }).code;
  return { type: e.name, message: e.message, stack: e.stack, ...(typeof code === 'string' ? { code } : {}) };
}

/** An error with provider text taken out of its message and stack (core/auth/secrets.ts), for a log line. */
export function scrubbedError(e: unknown, scrub: (text: string) => string): Error {
  const error = e instanceof Error ? e : new Error(String(e));
  const copy = new Error(scrub(error.message));
  copy.name = error.name;
  copy.stack = scrub(error.stack ?? '');
  const code = (error as { code?: unknown }).code;
  if (typeof code === 'string') Object.assign(copy, { code });
  return copy;
}

/**
 * Structured logs, one JSON line per event. Nothing that could hold a secret is ever passed to
 * the logger; the redaction below is a second line of defence against a mistake.
 */
export function createLogger(level = 'info', destination?: pino.DestinationStream): Logger {
  const options: pino.LoggerOptions = {
    level,
    // Top-level paths only: wildcard paths cost several microseconds on every line (bench/api.ts).
    redact: { paths: ['authorization', 'headers', 'credentials', 'access_token', 'refresh_token', 'client_secret', 'api_key', 'password'], censor: '[redacted]' },
    serializers: { err: serializeError },
  };
  if (destination) return pino(options, destination);
  // Lines are written 4 KiB at a time rather than one write per line, which cost a tenth of a
  // request's time (bench/api.ts); a quiet server still writes within a quarter of a second, and
  // the server flushes what is left at shutdown.
  const stdout = pino.destination({ dest: 1, minLength: 4096, sync: false });
  setInterval(() => stdout.flush(), 250).unref();
  return pino(options, stdout);
}
