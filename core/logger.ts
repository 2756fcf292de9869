import { hostname } from 'node:os';
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
  // pino's destination (sonic-boom) measures the whole string it holds on every write (a
  // Buffer.byteLength of up to 16 KiB per line: a tenth of a token request, bench/api.ts), so lines
  // are gathered here and handed to it 4 KiB at a time; a quiet server still writes within a
  // quarter of a second, and the server flushes what is left at shutdown, the process at exit.
  const batch = new LineBatch();
  // Registered before pino.destination registers its own exit handler, so it runs first.
  process.once('exit', () => batch.flushSync());
  batch.out = pino.destination({ dest: 1, minLength: 0, sync: false });
  setInterval(() => batch.pass(), 250).unref();
  return pino(options, batch);
}

/** Lines gathered into one write of at least `minLength` characters for `out`, an asynchronous destination. */
class LineBatch implements pino.DestinationStream {
  out!: ReturnType<typeof pino.destination>;
  private lines: string[] = [];
  private size = 0;

  constructor(private readonly minLength = 4096) {}

  write(line: string): void {
    this.lines.push(line);
    if ((this.size += line.length) >= this.minLength) this.pass();
  }

  /** Hands what is gathered to the destination. */
  pass(): void {
    if (!this.lines.length) return;
    const text = this.lines.length === 1 ? this.lines[0] : this.lines.join('');
    this.lines = [];
    this.size = 0;
    this.out.write(text);
  }

  /** pino's logger.flush(cb): everything gathered, written. */
  flush(cb?: (err?: Error) => void): void {
    this.pass();
    this.out.flush(cb);
  }

  flushSync(): void {
    this.pass();
    if (!(this.out as unknown as { destroyed?: boolean }).destroyed) this.out.flushSync();
  }
}

/**
 * The request line (one per request, README "Request ids"), written as pino writes a line of
 * `log` (`{"level":30,"time":…,"pid":…,"hostname":…,<fields>,"msg":"request"}`) straight to its
 * destination: pino's general path (the object's keys walked, each value serialised and checked
 * for redaction) cost more than the rest of a request's logging. The fields are fixed and hold no
 * secret: the path only, never the query string.
 */
export function requestLine(log: Logger): (requestId: string, method: string, path: string, status: number, ms: number) => void {
  const stream = (log as unknown as Record<symbol, pino.DestinationStream>)[pino.symbols.streamSym];
  const head = `,"pid":${process.pid},"hostname":${JSON.stringify(hostname())},"request_id":`;
  return (requestId, method, path, status, ms) => {
    if (!log.isLevelEnabled('info')) return;
    stream.write(`{"level":30,"time":${Date.now()}${head}${JSON.stringify(requestId)},"method":${JSON.stringify(method)},"path":${JSON.stringify(path)},"status":${status},"ms":${ms},"msg":"request"}\n`);
  };
}
