import got, { type Method as GotMethod } from 'got';
import type { Readable } from 'node:stream';
import { TerapiError } from '../errors.ts';
import { evaluate } from '../format/evaluate.ts';
import type { Retry } from '../format/provider-types.ts';

export interface HttpRequest {
  method: string;
  url: string;
  /** How long the answer may take to start, or to send its next chunk, before the request is given up (and retried); 30 s by default. */
  timeoutMs?: number;
  headers?: Record<string, string>;
  searchParams?: Record<string, string>;
  json?: unknown;
  form?: Record<string, string>;
  /** Headers computed for each attempt from the final URL (an OAuth 1.0a signature, with its own nonce and time). */
  sign?: (url: URL, req: HttpRequest) => Record<string, string>;
}

export interface HttpResponse {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: unknown;
  /** The raw text of the body, for callers that pass it on unchanged (the proxy). */
  text: string;
}

/** A provider's answer whose body is passed on as it arrives (the proxy): any size, in constant memory. */
export interface StreamedResponse {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Readable;
}

export class ProviderUnreachable extends Error {}

/** The provider failed or could not be reached: the API answers 502. */
export const providerFailed = (message: string) => new TerapiError(502, 'provider_error', message);

/**
 * The provider's own words in an error answer, from where providers usually put them (an OAuth
 * error_description, error.message, message, errors[0].message, detail...), or a short plain-text
 * body; undefined for anything else (an HTML page). At most 300 characters, on one line. The caller
 * scrubs it of the connection's secrets.
 */
export function providerWords(body: unknown): string | undefined {
  const b = (body && typeof body === 'object' ? body : {}) as Record<string, any>;
  const first = Array.isArray(b.errors) ? b.errors[0] : undefined;
  const found = [b.error_description, b.error?.message, b.message, first?.message, first?.detail, b.detail, b.error, b.title, typeof first === 'string' ? first : undefined, typeof body === 'string' && !body.trimStart().startsWith('<') ? body : undefined]
    .find((v): v is string => typeof v === 'string' && v.trim() !== '');
  if (found === undefined) return undefined;
  const line = found.replace(/\s+/g, ' ').trim();
  return line.length > 300 ? `${line.slice(0, 299)}…` : line;
}

/** The default of TERAPI_MAX_RESPONSE_BYTES: 50 MiB. */
export const DEFAULT_MAX_RESPONSE_BYTES = 50 * 1024 * 1024;

/**
 * The most bytes of one provider answer read into memory (after decompression): past it, the
 * request fails with 502 response_too_large instead of the server filling its memory (a 300 MB
 * answer once took it to 1.68 GB). Set from the configuration when the engine starts.
 */
export const limits = { responseBytes: DEFAULT_MAX_RESPONSE_BYTES };

const tooLarge = (host: string) =>
  new TerapiError(502, 'response_too_large', `${host} answered more than ${limits.responseBytes} bytes, the most Terapi reads into memory (TERAPI_MAX_RESPONSE_BYTES); the proxy passes answers of any size on as they come`);

/**
 * The URL a request goes to. A URL that does not parse was built from values a provider file let
 * through (a loose connection_config pattern): the request is refused before anything is sent. The
 * URL itself is not repeated: its query may hold a credential.
 */
export function targetUrl(url: string, params?: Record<string, string>): URL {
  let target: URL;
  try {
    target = new URL(url);
  } catch {
    throw new TerapiError(400, 'invalid_url', 'the request URL built from the provider file and this connection\'s values is not a valid URL: check the connection\'s connection_config values');
  }
  // Added to the URL's own query: got's `searchParams` would replace it (a next-page URL's).
  for (const [k, v] of Object.entries(params ?? {})) target.searchParams.set(k, v);
  return target;
}

/** The defaults of schemas/provider.schema.json's retry (test/format-requests.test.ts checks they agree). */
export const DEFAULT_RETRY: Required<Pick<Retry, 'statuses' | 'max_attempts' | 'retry_after_header' | 'reset_format'>> = {
  statuses: [429, 500, 502, 503, 504],
  max_attempts: 3,
  retry_after_header: 'retry-after',
  reset_format: 'epoch_seconds',
};

/** Longest wait before a retry, without a budget; a provider asking for more gets its error passed on instead. */
const MAX_WAIT_MS = 60_000;

/** A provider's body that does not parse as the format the request expects (cut off, or an HTML error page). */
export class MalformedBody extends Error {}

/**
 * The provider asked to wait longer than a run may: the run ends as rate-limited and resumes at
 * `resumeAt` from its checkpoint, rather than fail or hold a worker.
 */
export class RateLimited extends Error {
  constructor(
    readonly waitMs: number,
    readonly host: string,
  ) {
    super(`${host} is rate-limiting: it asked to wait ${Math.ceil(waitMs / 1000)} s, more than this run may wait`);
  }
  get resumeAt(): Date {
    return new Date(Date.now() + this.waitMs);
  }
}

/** How long a run may still spend waiting for rate limits, across all its requests. */
export interface WaitBudget {
  remainingMs: number;
}

export interface SendOptions {
  /** `json`: a body that does not parse as JSON is retried like a 5xx, then fails (syncs). */
  expect?: 'json';
  /** Waits come out of this budget (however long each is); one longer than what is left ends in RateLimited. Without one, a wait over a minute returns the answer as it is. */
  budget?: WaitBudget;
  sleep?: (ms: number) => Promise<void>;
  /**
   * false for a request that must not be applied twice (an action's POST): a failure to connect is
   * retried (nothing was sent), a timeout or a dropped connection is not (it may have been applied).
   * Which statuses are retried is the caller's `retry.statuses`.
   */
  repeatable?: boolean;
}

/** Network errors that happen before any byte of the request reaches the provider. */
const NOT_SENT = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN']);

/**
 * Sends one request to a provider, retrying on the statuses its file lists: it waits as long as
 * Retry-After or the reset header says, else backs off exponentially with full jitter. Network
 * errors and timeouts are retried the same way, and so is a body that does not parse when the
 * caller expects JSON. The body is read into memory, up to the response limit.
 */
export async function send(req: HttpRequest, retry: Retry = {}, options: SendOptions | SendOptions['sleep'] = {}): Promise<HttpResponse> {
  const opts = typeof options === 'function' ? { sleep: options } : options;
  const url = targetUrl(req.url, req.searchParams);
  return attempts(req, url, retry, opts, (res) => res.body, async (res) => {
    const text = (await readAll(res.body, url.host)).toString('utf8');
    const body = parse(text, header(res.headers, 'content-type'));
    if (opts.expect === 'json' && res.status < 300 && (body === undefined || typeof body === 'string')) {
      throw new MalformedBody(`${url.host} answered HTTP ${res.status} with a body that is not valid JSON (${Buffer.byteLength(text)} bytes: cut off, or not an API answer)`);
    }
    return { status: res.status, headers: res.headers, text, body };
  });
}

/** As `send`, but the body of the final answer is passed on as it arrives, whatever its size (the proxy). */
export async function sendStreamed(req: HttpRequest, retry: Retry = {}, options: Pick<SendOptions, 'sleep' | 'repeatable'> = {}): Promise<StreamedResponse> {
  return attempts(req, targetUrl(req.url, req.searchParams), retry, options, () => undefined, async (res) => res);
}

const wait = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/**
 * The retry loop shared by both ways of reading an answer; `take` reads the body of one answer and
 * `bodyOf` gives it parsed (undefined for a streamed one: its body rules cannot be read).
 */
async function attempts<T extends { status: number; headers: HttpResponse['headers'] }>(req: HttpRequest, url: URL, retry: Retry, options: SendOptions, bodyOf: (res: T) => unknown, take: (res: StreamedResponse) => Promise<T>): Promise<T> {
  const policy = { ...DEFAULT_RETRY, ...retry };
  const { budget, sleep = wait, repeatable = true } = options;
  for (let attempt = 1; ; attempt++) {
    let response: T;
    try {
      response = await take(await open(req, url));
    } catch (e) {
      if (e instanceof TerapiError) throw e;
      const code = (e as { code?: string }).code;
      if (attempt >= policy.max_attempts || (!repeatable && !NOT_SENT.has(code ?? ''))) {
        if (e instanceof MalformedBody) throw new MalformedBody(`${e.message}, ${attempt} times`);
        throw new ProviderUnreachable(`${url.host} could not be reached: ${(e as Error).message}`);
      }
      await sleep(backoff(attempt));
      continue;
    }
    const body = bodyOf(response);
    // A body that says "rate limited" is retried whatever its status (Linear's 400, Slack's 200).
    const saysLimited = policy.rate_limited !== undefined && body !== undefined && truthy(await evaluate(policy.rate_limited, body));
    if ((!saysLimited && !policy.statuses.includes(response.status)) || attempt >= policy.max_attempts) return response;
    const limited = saysLimited || response.status === 429;
    const fromBody = policy.wait_seconds && body !== undefined ? await evaluate(policy.wait_seconds, body) : undefined;
    const stated = typeof fromBody === 'number' && Number.isFinite(fromBody) ? Math.max(0, fromBody * 1000) : waitFromHeaders(response.headers, policy);
    const ms = stated ?? (limited && policy.penalty_seconds !== undefined ? policy.penalty_seconds * 1000 : backoff(attempt));
    if (budget) {
      if (ms > budget.remainingMs) throw new RateLimited(ms, url.host);
      budget.remainingMs -= ms;
    } else if (ms > MAX_WAIT_MS) return response;
    ((response as { body?: unknown }).body as Readable | undefined)?.destroy?.();
    await sleep(ms);
  }
}

/** A rule's result that says yes: anything but undefined, null, false, 0, "" and an empty array or object. */
export function truthy(value: unknown): boolean {
  if (value === undefined || value === null || value === false || value === 0 || value === '') return false;
  if (Array.isArray(value)) return value.some(truthy);
  if (typeof value === 'object') return Object.keys(value).length > 0;
  return true;
}

/** Starts a request; resolves with the status and headers once they arrive, the body still to read. */
function open(req: HttpRequest, url: URL): Promise<StreamedResponse> {
  const stream = got.stream(url, {
    method: req.method as GotMethod,
    headers: req.sign ? { ...req.headers, ...req.sign(url, req) } : req.headers,
    json: req.json,
    form: req.form,
    throwHttpErrors: false,
    retry: { limit: 0 },
    // Until the answer starts, and between its chunks: a large answer may take longer than 30 s in all.
    timeout: { lookup: 10_000, connect: 10_000, secureConnect: 10_000, send: 30_000, response: req.timeoutMs ?? 30_000, socket: req.timeoutMs ?? 30_000 },
    followRedirect: false,
  });
  // A stream of a method that may carry a body waits for one to be written: without a body, end it,
  // or a DELETE (or a POST with no body) would never be sent.
  if (req.json === undefined && req.form === undefined && req.method !== 'GET' && req.method !== 'HEAD') stream.end();
  return new Promise((resolve, reject) => {
    stream.once('error', reject);
    stream.once('response', (res: { statusCode: number; headers: HttpResponse['headers'] }) => {
      stream.off('error', reject);
      // An error after this point reaches whoever reads the body; until then it must not go unheard.
      stream.on('error', () => {});
      resolve({ status: res.statusCode, headers: res.headers, body: stream });
    });
  });
}

/** Reads a body into memory, refusing one over the response limit (declared or actual). */
async function readAll(body: Readable, host: string): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of body) {
    size += (chunk as Buffer).length;
    if (size > limits.responseBytes) {
      body.destroy();
      throw tooLarge(host);
    }
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks);
}

function parse(text: string, contentType: string | undefined): unknown {
  if (!text) return undefined;
  if (contentType?.includes('application/x-www-form-urlencoded')) return Object.fromEntries(new URLSearchParams(text));
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

const backoff = (attempt: number) => Math.random() * Math.min(MAX_WAIT_MS, 500 * 2 ** (attempt - 1));

/** A header's value; of several names, the first one present. */
function header(headers: HttpResponse['headers'], names: string | string[]): string | undefined {
  for (const name of Array.isArray(names) ? names : [names]) {
    const v = headers[name.toLowerCase()];
    const value = Array.isArray(v) ? v[0] : v;
    if (value !== undefined) return value;
  }
  return undefined;
}

/** How long the provider asked us to wait, in ms, if it said. */
export function waitFromHeaders(headers: HttpResponse['headers'], retry: Retry, now = Date.now()): number | undefined {
  const after = header(headers, retry.retry_after_header ?? 'retry-after');
  if (after !== undefined) {
    const seconds = Number(after);
    if (Number.isFinite(seconds)) return Math.max(0, seconds * 1000);
    const date = Date.parse(after);
    if (!Number.isNaN(date)) return Math.max(0, date - now);
  }
  // Of several reset headers, the first present whose window is spent: a list of remaining headers
  // pairs with them by position (Linear's requests and complexity budgets), a single one goes with each.
  const resets = [retry.reset_header ?? []].flat();
  const remainings = retry.remaining_header;
  const reset = resets
    .map((name, i) => ({ value: header(headers, name), left: remainings === undefined ? undefined : header(headers, Array.isArray(remainings) ? remainings[i] ?? [] : remainings) }))
    .find((r) => r.value !== undefined && !(r.left !== undefined && Number(r.left) > 0))?.value;
  if (reset === undefined) return undefined;
  const value = Number(reset);
  switch (retry.reset_format ?? 'epoch_seconds') {
    case 'epoch_seconds':
      return Math.max(0, value * 1000 - now);
    case 'epoch_ms':
      return Math.max(0, value - now);
    case 'seconds':
      return Math.max(0, value * 1000);
    case 'iso_date':
      return Math.max(0, Date.parse(reset) - now);
  }
}

/** Sends a request, turning an unreachable provider into a 502 the API can answer with. */
export async function callProvider(req: HttpRequest, retry: Retry | undefined, options: SendOptions = {}): Promise<HttpResponse> {
  return reachable(() => send(req, retry, options));
}

/** As callProvider, the answer's body streamed (the proxy). */
export async function callProviderStreamed(req: HttpRequest, retry: Retry | undefined, options: Pick<SendOptions, 'repeatable'> = {}): Promise<StreamedResponse> {
  return reachable(() => sendStreamed(req, retry, options));
}

async function reachable<T>(run: () => Promise<T>): Promise<T> {
  try {
    return await run();
  } catch (e) {
    if (e instanceof ProviderUnreachable) throw providerFailed(e.message);
    throw e;
  }
}
