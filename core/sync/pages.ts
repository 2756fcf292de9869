import LinkHeader from 'http-link-header';
import { freshValues, refreshesOn401, type Fresh } from '../auth/tokens.ts';
import { pageTimeLimitMs } from '../expression/expression.ts';
import type { Sync } from '../format/provider-types.ts';
import { apiRequest, bodyError, requestRetry } from '../http/provider-request.ts';
import { ProviderUnreachable, providerFailed, send, type HttpRequest, type HttpResponse, type WaitBudget } from '../http/send.ts';

/** Where a page is: what the pagination sends for it. Stored after each page so a full run can resume. */
export interface Position {
  cursor?: unknown;
  next_url?: string;
  offset?: number;
  page?: number;
}

export interface Page {
  /** 1-based, counted over the run (a resumed run goes on counting). */
  number: number;
  /** The provider's records on this page that pass the sync's filter. */
  items: unknown[];
  /** Where the next page is; undefined after the last page. */
  next?: Position;
}

/** A run reads at most this many pages: a pagination that never ends is an error, not a hang. */
export const MAX_PAGES = 100_000;

/**
 * Reads a sync's pages one at a time, following its pagination: only the pagination ends the data
 * (no next cursor or URL, an empty page from the provider, the stop condition), never a page
 * whose records the sync's own filter left out. Every page of a run asks with the checkpoint the
 * run started from: a filter that moved between pages would no longer match the provider's cursor.
 */
export async function* readPages(
  fresh: (stale?: string) => Promise<Fresh>,
  sync: Sync,
  options: { since?: unknown; start?: Position; startPage?: number; budget: WaitBudget },
): AsyncGenerator<Page> {
  const p = sync.pagination;
  const first: Position = options.start ?? { offset: 0, page: p?.type === 'page' ? p.start ?? 1 : undefined };
  // The next page is fetched while the caller maps and stores this one: the network and the
  // provider's time overlap our own. Only the request goes ahead; expressions stay in order.
  let pending = await request(fresh, sync, first, options);
  for (let number = (options.startPage ?? 0) + 1; ; number++) {
    if (number > MAX_PAGES) throw providerFailed(`the sync read ${MAX_PAGES} pages without reaching the end: check its pagination`);
    const { current, position } = pending;
    const res = await pending.response;
    if (res.status >= 400) throw providerFailed(`${current.provider.display_name} answered HTTP ${res.status} to page ${number}: ${res.text.slice(0, 300)}`);
    // Before the records are read: an error in a 200 (GraphQL, Slack) is not an empty last page.
    const failed = await bodyError(current.provider, sync.request, res.body);
    if (failed) throw providerFailed(`${current.provider.display_name} answered page ${number} with an error: ${failed}`);
    const found = await sync.records.evaluate(res.body);
    const raw = found === undefined ? [] : Array.isArray(found) ? found : [found];
    const keep = sync.filter && raw.length ? await sync.filter.evaluateEach(raw, {}, pageTimeLimitMs(raw.length)) : undefined;
    const items = keep ? raw.filter((_, i) => keep[i] === true) : raw;
    const next = raw.length ? await nextPosition(current, sync, position, res, raw.length) : undefined;
    if (next) pending = await request(fresh, sync, next, options);
    yield { number, items, next };
    if (!next) return;
  }
}

interface Pending {
  current: Fresh;
  position: Position;
  response: Promise<HttpResponse>;
}

/** Builds a page's request (credentials, body expression) and sends it; the answer is awaited later. */
async function request(fresh: (stale?: string) => Promise<Fresh>, sync: Sync, position: Position, options: { since?: unknown; budget: WaitBudget }): Promise<Pending> {
  let current = await fresh();
  const { retry } = requestRetry(current.provider, sync.request, true);
  const sent = (with_: Fresh) => pageRequest(with_, sync, position, options.since).then((req) => send(req, retry, { expect: 'json', budget: options.budget }));
  // A request that cannot be built fails when its page is read, after the pages before it are stored.
  const response = sent(current)
    .then(async (res) => {
      // refresh_on_401: one refresh (shared by every request refused with this token), one more try.
      if (!refreshesOn401(current, res.status)) return res;
      current = await fresh(current.record.credentials);
      return sent(current);
    })
    .catch((e) => {
      // RateLimited and MalformedBody pass through as they are: the run tells them apart.
      throw e instanceof ProviderUnreachable ? providerFailed(e.message) : e;
    });
  // Awaited by the reader unless the run stops first; then its failure must not go unhandled.
  response.catch(() => {});
  return { current, position, response };
}

async function pageRequest(fresh: Fresh, sync: Sync, position: Position, since: unknown): Promise<HttpRequest> {
  const p = sync.pagination;
  const { provider } = fresh;
  const searchParams: Record<string, string> = {};
  if (sync.mode === 'incremental' && since !== undefined && since !== null && sync.checkpoint?.param) searchParams[sync.checkpoint.param] = String(since);
  if (p?.page_size) searchParams[p.page_size.param] = String(p.page_size.value);
  if (p?.type === 'cursor' && p.param && position.cursor !== undefined) searchParams[p.param] = String(position.cursor);
  if (p?.type === 'offset') searchParams[p.param] = String(position.offset ?? 0);
  if (p?.type === 'page') searchParams[p.param] = String(position.page);
  const config = fresh.record.connection_config;
  const bindings = { cursor: position.cursor, checkpoint: since, config, page_size: p?.page_size?.value };
  const json = sync.request.body ? await sync.request.body.evaluate({}, bindings) : undefined;
  const req = apiRequest(provider, freshValues(fresh), sync.request, { json, searchParams });
  if (position.next_url) {
    // The provider's next URL carries its own query; credentials still go where the file says,
    // and only to the same origin: scheme, host and port (an https API's http:// link would send
    // the token in clear).
    const base = new URL(req.url);
    const next = new URL(position.next_url, base);
    if (next.origin !== base.origin) throw providerFailed(`${provider.display_name} gave a next page at another origin (${next.origin}, not ${base.origin}): refused`);
    req.url = next.toString();
    // The next URL is the next request as the provider wants it: the sync's own parameters are not
    // added again (Salesforce's nextRecordsUrl takes no `q`); what every request carries (a
    // credential in the query, the API's static parameters) still is.
    const own = new Set([...Object.keys(sync.request.params ?? {}), ...Object.keys(searchParams)]);
    req.searchParams = Object.fromEntries(Object.entries(req.searchParams ?? {}).filter(([k]) => !next.searchParams.has(k) && !own.has(k)));
  }
  return req;
}

async function nextPosition(fresh: Fresh, sync: Sync, position: Position, res: HttpResponse, count: number): Promise<Position | undefined> {
  const p = sync.pagination;
  if (!p) return undefined;
  if (p.stop && (await p.stop.evaluate(res.body))) return undefined;
  const name = fresh.provider.display_name;
  switch (p.type) {
    case 'cursor': {
      const next = await p.cursor.evaluate(res.body);
      if (next === undefined || next === null || next === '') return undefined;
      if (next === position.cursor) throw stuck(name);
      return { cursor: next };
    }
    case 'next_url': {
      const next = p.from === 'link_header' ? linkNext(res.headers.link) : ((await p.path?.evaluate(res.body)) as string | undefined);
      if (!next) return undefined;
      if (typeof next !== 'string') throw providerFailed(`${name}'s next page URL is not a string: check the sync's pagination.path`);
      if (next === position.next_url) throw stuck(name);
      return { next_url: next };
    }
    case 'offset':
      // By what the provider sent, not by what the filter kept.
      return { offset: (position.offset ?? 0) + count };
    case 'page':
      return { page: (position.page ?? 1) + 1 };
  }
}

const stuck = (name: string) => providerFailed(`${name} gave the same next page twice: the sync's pagination does not advance (check its cursor or next URL)`);

/** The rel="next" target of an RFC 8288 Link header. */
export function linkNext(header: string | string[] | undefined): string | undefined {
  const text = Array.isArray(header) ? header.join(', ') : header;
  if (!text) return undefined;
  try {
    return LinkHeader.parse(text).rel('next')[0]?.uri;
  } catch {
    return undefined;
  }
}
