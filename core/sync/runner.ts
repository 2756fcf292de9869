import { freshValues, type Fresh } from '../auth/tokens.ts';
import { callProvider, providerFailed } from '../http/send.ts';
import { apiRequest } from '../http/provider-request.ts';
import type { Sync } from '../format/provider-types.ts';

/** What one run of a sync read: the mapped records, and the checkpoint after its last page. */
export interface SyncRun {
  records: Record<string, unknown>[];
  checkpoint?: unknown;
  pages: number;
}

const MAX_PAGES = 10_000;

/**
 * Reads every page of a sync, following its pagination, and maps each record with its JSONata
 * mapping. Storing records and scheduling runs are the job of the records and scheduler modules.
 */
export async function runSync(fresh: Fresh, sync: Sync, since?: unknown): Promise<SyncRun> {
  const provider = fresh.provider;
  const values = freshValues(fresh);
  const config = fresh.record.connection_config;
  const records: Record<string, unknown>[] = [];
  const p = sync.pagination;
  let cursor: unknown;
  let nextUrl: string | undefined;
  let page = p?.type === 'page' ? p.start ?? 1 : 0;
  let offset = 0;
  let pages = 0;
  // Every page of a run asks with the checkpoint the run started from: a filter that moved between
  // pages would no longer match the provider's cursor. The new checkpoint is kept for the next run.
  let checkpoint = since;
  for (;;) {
    const searchParams: Record<string, string> = {};
    if (sync.mode === 'incremental' && since !== undefined && sync.checkpoint?.param) searchParams[sync.checkpoint.param] = String(since);
    if (p?.page_size) searchParams[p.page_size.param] = String(p.page_size.value);
    if (p?.type === 'cursor' && p.param && cursor !== undefined) searchParams[p.param] = String(cursor);
    if (p?.type === 'offset') searchParams[p.param] = String(offset);
    if (p?.type === 'page') searchParams[p.param] = String(page);
    const bindings = { cursor, checkpoint: since, config, page_size: p?.page_size?.value };
    const json = sync.request.body ? await sync.request.body.evaluate({}, bindings) : undefined;
    const req = apiRequest(provider, values, sync.request, { json, searchParams });
    if (nextUrl) {
      // The provider's next URL carries its own query; credentials still go where the file says.
      const next = new URL(nextUrl, req.url);
      if (next.host !== new URL(req.url).host) throw providerFailed(`${provider.display_name} gave a next page on another host (${next.host}): refused`);
      req.url = next.toString();
      req.searchParams = Object.fromEntries(Object.entries(req.searchParams ?? {}).filter(([k]) => !next.searchParams.has(k) && !(k in searchParams)));
    }
    const res = await callProvider(req, provider.api.retry);
    if (res.status >= 400) throw providerFailed(`${provider.display_name} answered HTTP ${res.status}: ${res.text.slice(0, 200)}`);
    pages++;
    const found = await sync.records.evaluate(res.body);
    const items = found === undefined ? [] : Array.isArray(found) ? found : [found];
    const mapped: Record<string, unknown>[] = [];
    for (const item of items) mapped.push((await sync.mapping.evaluate(item, { config })) as Record<string, unknown>);
    records.push(...mapped);
    if (sync.mode === 'incremental' && sync.checkpoint && mapped.length) checkpoint = await sync.checkpoint.value.evaluate(mapped, { checkpoint });
    if (!p || !items.length || pages >= MAX_PAGES) break;
    if (p.stop && (await p.stop.evaluate(res.body))) break;
    if (p.type === 'cursor') {
      const next = await p.cursor.evaluate(res.body);
      if (next === undefined || next === null || next === '') break;
      if (next === cursor) throw stuck(provider.display_name);
      cursor = next;
    } else if (p.type === 'next_url') {
      const next = p.from === 'link_header' ? linkNext(res.headers.link) : ((await p.path?.evaluate(res.body)) as string | undefined);
      if (!next) break;
      if (next === nextUrl) throw stuck(provider.display_name);
      nextUrl = next;
    } else if (p.type === 'offset') {
      offset += items.length;
    } else page++;
  }
  return { records, checkpoint, pages };
}

const stuck = (name: string) => providerFailed(`${name} gave the same next page twice: the sync's pagination does not advance (check its cursor or next URL)`);

/** The rel="next" target of an RFC 8288 Link header. */
export function linkNext(header: string | string[] | undefined): string | undefined {
  const text = Array.isArray(header) ? header.join(',') : header;
  for (const part of text?.split(/,(?=\s*<)/) ?? []) {
    const m = /<([^>]*)>\s*;(.*)/.exec(part.trim());
    if (m && /\brel="?([^";]*\s)?next(\s[^";]*)?"?/.test(m[2])) return m[1];
  }
  return undefined;
}
