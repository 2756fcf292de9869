import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { basename } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { diffLines, sameJson, toYaml, unify } from './diff.ts';
import type { CredentialPlace, Exchange, RecordedRequest } from './recordings.ts';

/** A request Terapi sent, seen with the provider's real host. */
export interface Sent {
  method: string;
  url: URL;
  /** Lower-case names, repeated headers joined. */
  headers: Record<string, string>;
  text: string;
}

/** Exchanges expected in order: one sync run, one action, or the connection's requests. */
export interface Track {
  label: string;
  exchanges: Exchange[];
  next: number;
  problems: string[];
}

/** Stands for a base URL not known yet: no recorded path under the base URL matches it. */
const UNKNOWN_BASE = 'unknown://base-url';

/** The status a request that is not in the recording gets: no provider file retries it. */
const NOT_RECORDED = 421;

/**
 * Stands in for one provider's hosts on 127.0.0.1, a port for each host (origin) its file sends
 * requests to, and answers from the recordings. A request is answered when it is exactly the next
 * exchange of one of the active tracks (several syncs of a connection run at once); any other is a
 * problem, shown as a diff against the exchange it most resembles, and answered 421.
 *
 * Recorded answers hold the provider's real URLs (a Link header, Salesforce's nextRecordsUrl): they
 * are rewritten to the local hosts on the way out, and what Terapi hands back (records, outputs,
 * errors) is rewritten back before it is compared, so snapshots never hold a local port.
 */
export class ReplayServer {
  private readonly hosts = new Map<string, { server: Server; local: string }>();
  private active: Track[] = [];
  /** Requests that came while no exchange was waiting. */
  readonly unexpected: string[] = [];
  /** Set while the connection is being made (its post-connection request may be what the base URL needs). */
  connecting = false;

  private constructor(
    /**
     * The provider's base URL as the connection renders it: `now` from the values known so far,
     * `later` once the connection is made (post_connection may add the values it needs, Jira's cloud id).
     */
    private readonly base: { now: () => string | undefined; later: Promise<string> },
    private readonly credential: CredentialPlace,
    /** Values that may appear only where the credential goes. */
    private readonly secrets: string[],
  ) {}

  static async open(origins: string[], options: { base: { now: () => string | undefined; later: Promise<string> }; credential: CredentialPlace; secrets: string[] }): Promise<ReplayServer> {
    const replay = new ReplayServer(options.base, options.credential, options.secrets.filter((s) => s.length >= 4));
    for (const origin of origins) {
      const server = createServer((req, res) => void replay.handle(origin, req, res).catch((e) => {
        res.writeHead(500).end(String(e));
      }));
      server.listen(0, '127.0.0.1');
      await new Promise((r) => server.once('listening', r));
      replay.hosts.set(origin, { server, local: `http://127.0.0.1:${(server.address() as AddressInfo).port}` });
    }
    return replay;
  }

  /** The local origin standing in for a real one. */
  local(origin: string): string {
    return this.hosts.get(origin)!.local;
  }

  toLocal(text: string): string {
    for (const [origin, { local }] of this.hosts) text = text.split(origin).join(local);
    return text;
  }

  toReal(text: string): string {
    for (const [origin, { local }] of this.hosts) text = text.split(local).join(origin);
    return text;
  }

  activate(...tracks: Track[]): void {
    this.active.push(...tracks);
  }

  deactivate(...tracks: Track[]): void {
    this.active = this.active.filter((t) => !tracks.includes(t));
  }

  async close(): Promise<void> {
    await Promise.all([...this.hosts.values()].map(({ server }) => new Promise((r) => (server.closeAllConnections(), server.close(r)))));
  }

  private async handle(origin: string, req: IncomingMessage, res: ServerResponse): Promise<void> {
    let text = '';
    for await (const chunk of req) text += chunk;
    const headers: Record<string, string> = {};
    for (const [k, v] of Object.entries(req.headers)) if (v !== undefined) headers[k] = Array.isArray(v) ? v.join(', ') : v;
    const sent: Sent = { method: req.method!, url: new URL(req.url!, origin), headers, text };
    let base = this.base.now();
    let match = this.match(sent, base ?? UNKNOWN_BASE);
    // A request under a base URL not known yet waits for the connection to be made. While it is
    // being made the wait is bounded: a wrong post-connection request would be waiting for itself.
    if (!match && base === undefined) {
      base = await (this.connecting ? Promise.race([this.base.later, delay(2000)]) : this.base.later);
      if (base !== undefined) match = this.match(sent, base);
    }
    base ??= UNKNOWN_BASE;
    if (match) {
      match.next++;
      return this.answer(res, match.exchanges[match.next - 1].response);
    }
    const waiting = this.active.filter((t) => t.next < t.exchanges.length);
    const best = closest(waiting, sent, base);
    if (best) {
      const exchange = best.exchanges[best.next];
      const { expected, actual, leaks } = compare(exchange, sent, base, exchange.credential ?? this.credential, this.secrets);
      const where = `${basename(exchange.at.file)}:${exchange.at.line}`;
      const lines = [`a request does not match exchange ${best.next + 1} of ${best.label} (${where}); - recorded, + sent:`, indent(diffLines(toYaml(expected), toYaml(actual), 1000))];
      for (const leak of leaks) lines.push(`  the credential also goes in ${leak}: it must go only where the recording says`);
      best.problems.push(lines.join('\n'));
    } else {
      this.unexpected.push(`a request no recording expects (every recorded exchange was already answered):\n${indent(toYaml(view(sent, base)))}`);
    }
    res.writeHead(NOT_RECORDED, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ error: 'not_recorded', message: 'terapi test: this request is not in the recording' }));
  }

  /** The active track whose next exchange is this request. */
  private match(sent: Sent, base: string): Track | undefined {
    return this.active.find((t) => {
      const exchange = t.exchanges[t.next];
      return exchange && compare(exchange, sent, base, exchange.credential ?? this.credential, this.secrets).same;
    });
  }

  private answer(res: ServerResponse, response: Exchange['response']): void {
    const headers: Record<string, string> = {};
    for (const [k, v] of Object.entries(response.headers ?? {})) headers[k.toLowerCase()] = this.toLocal(v);
    let body = '';
    if (typeof response.body === 'string') body = response.body;
    else if (response.body !== undefined) {
      body = JSON.stringify(response.body);
      headers['content-type'] ??= 'application/json';
    }
    res.writeHead(response.status, headers);
    res.end(this.toLocal(body));
  }
}

const delay = (ms: number) => sleep(ms, undefined, { ref: false });
const indent = (text: string) => text.replace(/\n$/, '').split('\n').map((l) => `    ${l}`).join('\n');

const stripSlash = (url: string) => url.replace(/\/$/, '');

/** Under `base`: the path below it; elsewhere the absolute URL. */
function relative(absolute: string, base: string): string {
  const b = stripSlash(base);
  return absolute.startsWith(`${b}/`) ? absolute.slice(b.length) : absolute;
}

const absolute = (path: string, base: string) => (path.startsWith('/') ? stripSlash(base) + path : path);

function params(search: URLSearchParams, skip?: string): Record<string, string | string[]> | undefined {
  const out: Record<string, string | string[]> = {};
  for (const key of [...new Set(search.keys())].sort()) {
    if (key === skip) continue;
    const values = search.getAll(key);
    out[key] = values.length === 1 ? values[0] : values;
  }
  return Object.keys(out).length ? out : undefined;
}

const sorted = <T>(o: Record<string, T> | undefined): Record<string, T> | undefined =>
  o && Object.keys(o).length ? Object.fromEntries(Object.entries(o).sort(([a], [b]) => a.localeCompare(b))) : undefined;

/** A sent request in the recording's terms, with the headers `names` (lower case). */
function view(sent: Sent, base: string, names: string[] = []): RecordedRequest {
  const out: RecordedRequest = { method: sent.method, path: relative(sent.url.origin + sent.url.pathname, base) };
  out.query = params(sent.url.searchParams);
  const headers = Object.fromEntries(names.filter((n) => sent.headers[n] !== undefined).map((n) => [n, sent.headers[n]]));
  out.headers = sorted(headers);
  if (sent.text) {
    const type = sent.headers['content-type'] ?? '';
    if (type.includes('application/x-www-form-urlencoded')) out.form = params(new URLSearchParams(sent.text)) ?? {};
    else {
      try {
        out.body = JSON.parse(sent.text);
      } catch {
        out.body = sent.text;
      }
    }
  }
  return clean(out);
}

const clean = (v: RecordedRequest): RecordedRequest => Object.fromEntries(Object.entries(v).filter(([, x]) => x !== undefined)) as RecordedRequest;

/**
 * Whether a sent request is the recorded one: method, URL, every query parameter, the recorded
 * headers, the body, and the credential where the recording says and nowhere else.
 */
function compare(exchange: Exchange, sent: Sent, base: string, place: CredentialPlace, secrets: string[]): { same: boolean; expected: RecordedRequest; actual: RecordedRequest; leaks: string[] } {
  const r = exchange.request;
  const headers = Object.fromEntries(Object.entries(r.headers ?? {}).map(([k, v]) => [k.toLowerCase(), v]));
  const query = { ...r.query };
  if (place !== 'none') {
    if ('header' in place) headers[place.header.toLowerCase()] = place.value;
    else query[place.query] = place.value;
  }
  const actual = view(sent, base, Object.keys(headers));
  const expected = unify(clean({ method: r.method, path: relative(absolute(r.path, base), base), query: sorted(query), headers: sorted(headers), body: r.body, form: r.form }), actual) as RecordedRequest;
  // Checked on API calls; a request without the credential (a token request) carries secrets by design.
  const leaks = place === 'none' ? [] : leaksOf(sent, place, secrets);
  return { same: sameJson(expected, actual) && !leaks.length, expected, actual, leaks };
}

/** Where else a secret of the connection went. */
function leaksOf(sent: Sent, place: Exclude<CredentialPlace, 'none'>, secrets: string[]): string[] {
  const found: string[] = [];
  const own = 'header' in place ? `header ${place.header.toLowerCase()}` : `query ${place.query}`;
  const spots: [string, string][] = [['the path', decodeURIComponent(sent.url.pathname)], ['the body', sent.text]];
  for (const [k, v] of sent.url.searchParams) spots.push([`query ${k}`, v]);
  for (const [k, v] of Object.entries(sent.headers)) spots.push([`header ${k}`, v]);
  for (const [where, text] of spots) {
    if (where !== own && secrets.some((s) => text.includes(s))) found.push(where);
  }
  return found;
}

/** The waiting exchange a stray request most resembles: same method and path, then same path, then same method. */
function closest(tracks: Track[], sent: Sent, base: string): Track | undefined {
  const score = (t: Track) => {
    const r = t.exchanges[t.next].request;
    const samePath = absolute(r.path, base) === sent.url.origin + sent.url.pathname;
    return (samePath ? 2 : 0) + (r.method === sent.method ? 1 : 0);
  };
  let best: Track | undefined;
  for (const t of tracks) if (!best || score(t) > score(best)) best = t;
  return best;
}
