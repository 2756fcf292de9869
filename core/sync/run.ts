import { hash } from 'node:crypto';
import type { ValidateFunction } from 'ajv';
import type { Fresh } from '../auth/tokens.ts';
import { TerapiError } from '../errors.ts';
import { ExpressionError, pageTimeLimitMs, type Expression } from '../expression/expression.ts';
import { compileInputSchema } from '../format/provider-schema.ts';
import type { Sync } from '../format/provider-types.ts';
import { MalformedBody, RateLimited, type WaitBudget } from '../http/send.ts';
import { readPages, type Page, type Position } from './pages.ts';
import { ConnectionGone, RunLost, type PreparedPage, type Resume, type RunHandle, type RunSummary, type SyncStore } from './sync-store.ts';

/**
 * What a run writes: its pages and its end (SyncStore's, reached from a run thread through its
 * port). A run sends a page before the one before it is answered (PAGES_IN_STORE): the store
 * stores pages in the order they are sent, and refuses a page after one that failed.
 */
export type RunStore = Pick<SyncStore, 'writePage' | 'finish'>;

/** What a run needs from where it runs: the store, and fresh credentials from the process that owns refreshes. */
export interface RunDeps {
  store: RunStore;
  /** `stale`: the sealed credentials the API refused with a 401 (refresh_on_401), to be refreshed. */
  fresh: (stale?: string) => Promise<Fresh>;
  /** Told after every stored page (progress for logs and dry runs); answering false ends the run there (a dry run's --limit). */
  onPage?: (page: { number: number; records: number; summary: RunSummary }) => void | boolean;
}

export interface RunTask {
  handle: RunHandle;
  /** What the claim recorded of this run so far. */
  summary: RunSummary;
  /** Incremental: the checkpoint the run starts from. */
  since?: unknown;
  /** Full: where an unfinished run stopped. */
  resume?: Resume | null;
  leaseMs: number;
  /** How long the run may wait for rate limits in all. */
  waitBudgetMs: number;
}

export interface RunResult {
  summary: RunSummary;
  /**
   * Where the run's time went, in ms: waiting for pages (network, parsing), mapping and checking,
   * and waiting for the store (a page is stored while the next one is read and mapped: only what
   * is left of its storing after that counts). They add up to the run. `expression_ms` is the part
   * of mapping_ms spent in the mapping expression itself, and `expression_cpu_ms` the CPU time the
   * run's thread spent in it (0 where the system does not tell): less, when the thread gave way
   * to others meanwhile.
   */
  timings: { pages_ms: number; mapping_ms: number; storing_ms: number; expression_ms: number; expression_cpu_ms: number };
  records_count?: number;
  /** Set when the run ended as rate-limited: when to try again. */
  resume_at?: string;
}

/**
 * Pages a run hands the store before the first of them is answered: the next page's write is
 * already waiting where the store is when the one before it commits, instead of a round trip
 * between threads later.
 */
const PAGES_IN_STORE = 2;

const utf8 = new TextEncoder();

/** Records checked and serialised between two turns of the event loop (see prepare). */
const PREPARE_SLICE = 250;

/** Examples of invalid records kept on the status: enough to see the problem, never the whole page. */
const EXAMPLES = 5;

/**
 * One run of a sync, page by page: map, check against the model, store with the checkpoint, and at
 * the end of a complete full run mark what was not seen as deleted. It holds one page at a time,
 * whatever the number of records. Every failure ends the run with its error on the status and
 * every page stored before it kept.
 */
export async function runSync(deps: RunDeps, sync: Sync, task: RunTask): Promise<RunResult> {
  const { handle } = task;
  const full = sync.mode === 'full';
  const summary: RunSummary = structuredClone(task.summary);
  const budget: WaitBudget = { remainingMs: task.waitBudgetMs };
  const check = sync.model.schema ? schemaCheck(sync) : undefined;
  let checkpoint = task.since;
  let resume = full ? task.resume ?? null : null;
  const timings = { pages_ms: 0, mapping_ms: 0, storing_ms: 0, expression_ms: 0, expression_cpu_ms: 0 };
  // Provider text in an error (a body, an expression's message) may repeat the credentials.
  let scrub: ((text: string) => string) | undefined;
  let clock = performance.now();
  const lap = (part: 'pages_ms' | 'mapping_ms' | 'storing_ms') => {
    const now = performance.now();
    timings[part] += now - clock;
    clock = now;
  };
  try {
    const pages = readPages(deps.fresh, sync, { since: task.since, start: resume?.position as Position | undefined, startPage: resume?.pages, budget });
    // Pages are read and mapped ahead of the store: page N+2 is read and mapped while pages N and
    // N+1 are in the store's hands, which stores them in order and none after one that failed
    // (RunStore). What a later page brings, a failure included, counts only once the pages before
    // it are stored, as if they had run in turn: a failed store ends the run before it.
    const storing: Promise<boolean>[] = [];
    /** Waits for the oldest page in the store's hands: false when the run should end after it. */
    const stored = async () => {
      const goOn = await storing.shift()!;
      lap('storing_ms');
      return goOn;
    };
    let failure: { error: unknown } | undefined;
    // Set as soon as a page in the store's hands failed or ended the run: nothing more is read
    // (a deleted connection's credentials are not used for pages nobody will store).
    let ended = false;
    try {
      for (;;) {
        if (ended) break;
        let mapped: MappedPage | undefined;
        try {
          const next = await pages.next();
          lap('pages_ms');
          if (!next.done) {
            mapped = await mapPage(deps, sync, next.value, handle, checkpoint, summary.invalid, check);
            scrub = mapped.scrub;
            timings.expression_ms += mapped.expression.ms;
            timings.expression_cpu_ms += mapped.expression.cpuMs;
          }
          lap('mapping_ms');
        } catch (e) {
          failure = { error: e };
          break;
        }
        // Checked again now that the page is read: a store that answers at once (a dry run's) has
        // answered meanwhile, and its --limit stores nothing past itself.
        if (!mapped || ended) break;
        if (storing.length === PAGES_IN_STORE && !(await stored())) break;
        const { page, prepared } = mapped;
        checkpoint = mapped.checkpoint;
        summary.invalid = mapped.invalid;
        resume = full && page.next ? { run: handle.run, position: page.next, pages: page.number } : null;
        summary.pages = page.number;
        // A copy: the summary moves on with the next page while this one is stored (its counts
        // of pages still in the store's hands are the store's to add: see writePage).
        const write = deps.store.writePage(handle, prepared, { checkpoint, resume, full, summary: structuredClone(summary) }, task.leaseMs);
        const counted = write.then((counts) => {
          summary.added += counts.added;
          summary.updated += counts.updated;
          summary.unchanged += counts.unchanged;
          return deps.onPage?.({ number: page.number, records: prepared.count, summary }) !== false;
        });
        // Awaited before anything else happens to the run; until then, its failure is not unhandled.
        counted.then(
          (goOn) => (ended ||= !goOn),
          () => (ended = true),
        );
        storing.push(counted);
      }
      // The pages in the store's hands are stored (or fail the run) before a later failure counts.
      while (storing.length) await stored();
      if (failure) throw failure.error;
    } finally {
      await pages.return(undefined);
    }
    summary.outcome = 'success';
    lap('pages_ms');
    const done = await deps.store.finish(handle, summary, { full, resume: null });
    lap('storing_ms');
    summary.deleted = done.deleted;
    return { summary: { ...summary, finished_at: new Date().toISOString() }, records_count: done.records_count, timings };
  } catch (e) {
    if (e instanceof RunLost || e instanceof ConnectionGone) throw e; // nothing of this run's may be written now
    const limited = e instanceof RateLimited ? e : undefined;
    summary.outcome = limited ? 'rate_limited' : 'error';
    // Failed before its first page: the credentials it would have used are the ones to scrub.
    scrub ??= await deps.fresh().then((f) => f.scrub, () => (text: string) => text);
    summary.error = scrub(describeFailure(e));
    const resumeAt = limited?.resumeAt;
    // A full run carries on where it stopped only after a rate limit, soon after; after an error
    // the next run starts over (a page position may not mean the same thing later).
    const done = await deps.store.finish(handle, summary, { full, resume: limited ? resume : null, nextRunMs: resumeAt?.getTime() });
    return { summary: { ...summary, finished_at: new Date().toISOString() }, records_count: done.records_count, resume_at: resumeAt?.toISOString(), timings };
  }
}

interface MappedPage {
  page: Page;
  prepared: PreparedPage;
  /** The checkpoint after this page, and the invalid records counted with it. */
  checkpoint: unknown;
  invalid: RunSummary['invalid'];
  scrub: (text: string) => string;
  /** Time spent in the mapping expression, and CPU time. */
  expression: { ms: number; cpuMs: number };
}

/** Maps and checks one page, from the checkpoint and invalid count of the pages before it (left as they are). */
async function mapPage(deps: RunDeps, sync: Sync, page: Page, handle: RunHandle, checkpoint: unknown, invalidBefore: RunSummary['invalid'], check?: ValidateFunction): Promise<MappedPage> {
  const fresh = await deps.fresh();
  const where = `sync "${handle.sync}", page ${page.number}`;
  const spent = { ms: 0, cpuMs: 0 };
  const mapped = page.items.length ? await evaluating(sync.mapping, where, () => sync.mapping.evaluateEach(page.items, { config: fresh.record.connection_config }, pageTimeLimitMs(page.items.length), spent)) : [];
  const invalid = structuredClone(invalidBefore);
  const { prepared, valid } = await prepare(sync, mapped, where, page.number, invalid, check);
  if (sync.mode === 'incremental' && sync.checkpoint && valid.length) {
    const value = sync.checkpoint.value;
    checkpoint = await evaluating(value, where, () => value.evaluate(valid, { checkpoint }));
  }
  return { page, prepared, checkpoint, invalid, scrub: fresh.scrub, expression: spent };
}

/**
 * Checks each mapped record and gives it its id, JSON text and hash. A record without an id, or
 * an id twice in a page, fails the run; one that does not fit the model's schema is skipped or
 * fails the run, as the sync declares.
 */
async function prepare(sync: Sync, mapped: unknown[], where: string, page: number, invalid: RunSummary['invalid'], check?: ValidateFunction) {
  const idField = sync.model.id ?? 'id';
  const rows: [string, string, string][] = [];
  const valid: unknown[] = [];
  const seen = new Set<string>();
  for (let i = 0; i < mapped.length; i++) {
    // The page read ahead is on the critical path: its answer, come meanwhile, is taken in (and
    // the next page asked for) between slices, not after the whole page.
    if (i % PREPARE_SLICE === PREPARE_SLICE - 1) await new Promise((r) => setImmediate(r));
    const m = mapped[i];
    if (!m || typeof m !== 'object' || Array.isArray(m)) {
      throw new RunFailure(`${where}: the mapping gave ${m === undefined ? 'nothing' : Array.isArray(m) ? 'an array' : typeof m} for record ${i + 1}, not an object`);
    }
    const raw = (m as Record<string, unknown>)[idField];
    const id = typeof raw === 'number' && Number.isFinite(raw) ? String(raw) : raw;
    if (typeof id !== 'string' || !id) throw new RunFailure(`${where}: mapped record ${i + 1} has no "${idField}" (the model's id): every record needs one, a non-empty string or a number`);
    if (seen.has(id)) throw new RunFailure(`${where}: two records have the id ${JSON.stringify(id)}: the model's id must identify one record`);
    seen.add(id);
    if (check && !check(m)) {
      const problem = (check.errors ?? []).map((e) => `${e.instancePath.replace(/\//g, '.').slice(1) || 'the record'} ${e.message}`).join('; ');
      if (sync.invalid_records === 'fail') throw new RunFailure(`${where}: record ${JSON.stringify(id)} does not fit model ${sync.model.name}: ${problem}`);
      invalid.count++;
      if (invalid.examples.length < EXAMPLES) invalid.examples.push({ id, page, problem });
      continue;
    }
    const data = JSON.stringify(m);
    rows.push([id, data, hash('sha1', data, 'base64url')]);
    valid.push(m);
  }
  return { prepared: { rows: utf8.encode(JSON.stringify(rows)), count: rows.length }, valid };
}

class RunFailure extends Error {}

const checks = new WeakMap<Sync, ValidateFunction>();
function schemaCheck(sync: Sync): ValidateFunction {
  let check = checks.get(sync);
  if (!check) checks.set(sync, (check = compileInputSchema(sync.model.schema!)));
  return check;
}

/** Runs an evaluation; its error names the provider file's place, the sync and the page. */
async function evaluating<T>(expr: Expression, where: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (e) {
    if (e instanceof ExpressionError) throw new RunFailure(`${expr.describe()}: ${e.message} (${where})`);
    throw e;
  }
}

function describeFailure(e: unknown): string {
  if (e instanceof RunFailure || e instanceof TerapiError || e instanceof MalformedBody || e instanceof RateLimited) return e.message;
  return `the run failed: ${(e as Error)?.message ?? String(e)}`;
}
