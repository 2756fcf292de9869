import got, { type Method as GotMethod } from 'got';
import { TerapiError } from '../errors.ts';
import type { Retry } from '../format/provider-types.ts';

export interface HttpRequest {
  method: string;
  url: string;
  /** How long the request may take before it is given up (and retried); 30 s by default. */
  timeoutMs?: number;
  headers?: Record<string, string>;
  searchParams?: Record<string, string>;
  json?: unknown;
  form?: Record<string, string>;
}

export interface HttpResponse {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: unknown;
  /** The raw text of the body, for callers that pass it on unchanged (the proxy). */
  text: string;
}

export class ProviderUnreachable extends Error {}

/** The provider failed or could not be reached: the API answers 502. */
export const providerFailed = (message: string) => new TerapiError(502, 'provider_error', message);

const DEFAULT_RETRY: Required<Pick<Retry, 'statuses' | 'max_attempts' | 'retry_after_header' | 'reset_format'>> = {
  statuses: [429, 500, 502, 503, 504],
  max_attempts: 3,
  retry_after_header: 'retry-after',
  reset_format: 'epoch_seconds',
};

/** Longest wait before a retry; a provider asking for more gets its error passed on instead. */
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
}

/**
 * Sends one request to a provider, retrying on the statuses its file lists: it waits as long as
 * Retry-After or the reset header says, else backs off exponentially with full jitter. Network
 * errors and timeouts are retried the same way, and so is a body that does not parse when the
 * caller expects JSON.
 */
export async function send(req: HttpRequest, retry: Retry = {}, options: SendOptions | SendOptions['sleep'] = {}): Promise<HttpResponse> {
  const { expect, budget, sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms)) } = typeof options === 'function' ? { sleep: options } : options;
  const policy = { ...DEFAULT_RETRY, ...retry };
  const host = new URL(req.url).host;
  for (let attempt = 1; ; attempt++) {
    let res;
    try {
      res = await got(withQuery(req.url, req.searchParams), {
        method: req.method as GotMethod,
        headers: req.headers,
        json: req.json,
        form: req.form,
        throwHttpErrors: false,
        retry: { limit: 0 },
        timeout: { request: req.timeoutMs ?? 30_000 },
        followRedirect: false,
      });
    } catch (e) {
      if (attempt >= policy.max_attempts) throw new ProviderUnreachable(`${host} could not be reached: ${(e as Error).message}`);
      await sleep(backoff(attempt));
      continue;
    }
    const body = parse(res.body, res.headers['content-type']);
    if (expect === 'json' && res.statusCode < 300 && (body === undefined || typeof body === 'string')) {
      if (attempt >= policy.max_attempts) {
        throw new MalformedBody(`${host} answered HTTP ${res.statusCode} with a body that is not valid JSON (${res.body.length} bytes: cut off, or not an API answer), ${attempt} times`);
      }
      await sleep(backoff(attempt));
      continue;
    }
    const response: HttpResponse = { status: res.statusCode, headers: res.headers, text: res.body, body };
    if (!policy.statuses.includes(res.statusCode) || attempt >= policy.max_attempts) return response;
    const wait = waitFromHeaders(res.headers, policy) ?? backoff(attempt);
    if (budget) {
      if (wait > budget.remainingMs) throw new RateLimited(wait, host);
      budget.remainingMs -= wait;
    } else if (wait > MAX_WAIT_MS) return response;
    await sleep(wait);
  }
}

/** Adds parameters to a URL's own query: got's `searchParams` would replace the query (a next-page URL's). */
function withQuery(url: string, params: Record<string, string> | undefined): string {
  if (!params || !Object.keys(params).length) return url;
  const u = new URL(url);
  for (const [k, v] of Object.entries(params)) u.searchParams.set(k, v);
  return u.toString();
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

function header(headers: HttpResponse['headers'], name: string): string | undefined {
  const v = headers[name.toLowerCase()];
  return Array.isArray(v) ? v[0] : v;
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
  const remaining = retry.remaining_header ? header(headers, retry.remaining_header) : undefined;
  const reset = retry.reset_header ? header(headers, retry.reset_header) : undefined;
  if (reset === undefined || (remaining !== undefined && Number(remaining) > 0)) return undefined;
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
export async function callProvider(req: HttpRequest, retry: Parameters<typeof send>[1]): Promise<HttpResponse> {
  try {
    return await send(req, retry);
  } catch (e) {
    if (e instanceof ProviderUnreachable) throw providerFailed(e.message);
    throw e;
  }
}
