import { randomUUID } from 'node:crypto';
import { EventEmitter } from 'node:events';
import type { AuthEngine } from '../auth/tokens.ts';
import type { Connections } from '../auth/connections.ts';
import type { Integrations } from '../auth/integrations.ts';
import { badRequest, notFound, TerapiError } from '../errors.ts';
import type { Provider, Sync } from '../format/provider-types.ts';
import { limits } from '../http/send.ts';
import type { WorkerPools } from '../jobs/pools.ts';
import { toWire, type FreshAnswer, type StoreAnswer, type WorkerMessage } from '../jobs/run-wire.ts';
import type { Logger } from '../logger.ts';
import type { JobQueue } from '../jobs/queue.ts';
import type { Webhooks } from '../jobs/webhooks.ts';
import type { RunResult } from './run.ts';
import { recordCursor, type PreparedPage, type RunHandle, type RunSummary, type SyncKey, type SyncRow, type SyncStore } from './sync-store.ts';

/** SyncStatus as the API shows it (server/openapi.yaml). */
export interface SyncStatusView {
  sync_name: string;
  connection_id: string;
  status: 'running' | 'success' | 'error' | 'paused';
  last_sync_date?: string;
  next_sync_date?: string;
  records_count: number;
  error?: string;
  last_run?: RunSummary;
}

/** A sync in GET /syncs: its status, or `scheduled` before its first run. */
export interface SyncListItem extends Omit<SyncStatusView, 'status'> {
  provider_config_key: string;
  model: string;
  status: SyncStatusView['status'] | 'scheduled';
}

export interface RecordsQuery {
  provider_config_key: string;
  connection_id: string;
  model: string;
  cursor?: string;
  limit?: number;
  modified_after?: string;
  filter?: string;
}

const ACTIONS = ['added', 'updated', 'deleted'];
const NO_TIMINGS = { pages_ms: 0, mapping_ms: 0, storing_ms: 0, expression_ms: 0, expression_cpu_ms: 0 };
const HANDED_BACK = 'the process is stopping: the run is handed back';

export interface SyncOptions {
  /** Runs this process carries out at once (its run threads). */
  concurrency: number;
  /** How often a worker looks for due syncs. */
  tickMs: number;
  /** How long a run's hold on its sync lasts without renewal: a run whose process died is given up after it. */
  leaseMs: number;
  /** How long one run may wait, in all, for a provider's rate limits before it ends and resumes later. */
  waitBudgetMs: number;
}

/**
 * The syncs of this process, seen from the API thread: starting runs (one at a time per connection
 * and sync, across every process), their status, and the records they stored. Runs themselves
 * execute in worker threads (core/jobs/worker.ts); credentials come from here, where refreshes
 * are single-flight.
 */
/** What Syncs tells after every run this process carried out. */
export interface RunEvent {
  integration: string;
  connection: string;
  sync: string;
  model: string;
  result: RunResult;
}

/** A job of the sync-run queue: run this sync now (`due_ms`: when it was due, for the schedule's lag). */
export interface RunJob extends SyncKey {
  due_ms?: number;
  reason: 'schedule' | 'trigger' | 'resume';
}

/** Records one stored page or run end of this process wrote (a run's own thread stores nothing itself). */
export interface StoredEvent {
  added: number;
  updated: number;
  deleted: number;
}

export class Syncs extends EventEmitter<{ run: [RunEvent]; started: [RunJob & { lag_ms?: number }]; stored: [StoredEvent] }> {
  private readonly running = new Map<string, Promise<void>>();
  private readonly stoppers = new Map<string, AbortController>();
  private ticker?: NodeJS.Timeout;
  /** Jobs in hand (from taking the job to the run's end): a stop waits for them. */
  private readonly jobs = new Set<Promise<void>>();
  private stopping?: Promise<void>;

  constructor(
    private readonly store: SyncStore,
    private readonly pools: WorkerPools,
    private readonly queue: JobQueue,
    private readonly webhooks: Webhooks,
    private readonly integrations: Integrations,
    private readonly connections: Connections,
    private readonly auth: AuthEngine,
    private readonly options: SyncOptions,
    private readonly log: Logger,
  ) {
    super();
  }

  /**
   * Marks runs whose process died as interrupted, and queues each again: it resumes from what it
   * stored. `everything`: this process owns the store alone (embedded mode), so any run still
   * marked running belongs to a process that is gone.
   */
  async recover(everything: boolean): Promise<void> {
    const expired = await this.store.expireLeases(everything ? new Date('9999-12-31T23:59:59.999Z') : new Date());
    for (const key of expired) {
      this.log.warn({ integration: key.integration, connection: key.connection, sync: key.sync }, 'sync run interrupted: its process stopped during the run; queued again');
      await this.queue.send('terapi-sync-run', { ...key, reason: 'resume' } satisfies RunJob, { singletonKey: jobKey(key) });
    }
  }

  /**
   * A worker's duties (TERAPI_ROLE worker or all): run the queued syncs, and every second queue
   * the syncs that are due, the events the last runs left for the app, and the runs whose process
   * died. Every process doing this on one database shares the work.
   */
  async work(): Promise<void> {
    await this.queue.work('terapi-sync-run', this.options.concurrency, (job: RunJob) => this.runJob(job));
    let last = 0;
    const tick = async () => {
      await this.queueDue();
      await this.flushEvents();
      if (Date.now() - last > this.options.leaseMs / 2) {
        last = Date.now();
        await this.recover(false);
      }
    };
    this.ticker = setInterval(() => void tick().catch((e) => this.log.warn({ err: (e as Error).message }, 'sync scheduler: could not reach the store')), this.options.tickMs);
    this.ticker.unref();
  }

  /** Queues the runs that are due, moving their schedule on in the same transaction. */
  async queueDue(): Promise<number> {
    let total = 0;
    for (;;) {
      const n = await this.store.takeDue(500, async (due, tx) => {
        for (const d of due) await this.queue.send('terapi-sync-run', { integration: d.integration, connection: d.connection, sync: d.sync, due_ms: d.due_ms, reason: 'schedule' } satisfies RunJob, { singletonKey: jobKey(d) }, tx);
      });
      total += n;
      if (n < 500) return total;
    }
  }

  /**
   * How late the longest-waiting scheduled run is now (ms), read from the store so that every
   * process on one database tells the same: the earliest due time among runs queued and not yet
   * started, and syncs due but not yet queued. 0 when nothing scheduled waits.
   */
  async scheduleLag(now = Date.now()): Promise<number> {
    const [queued, overdue] = await Promise.all([this.queue.earliestDue('terapi-sync-run'), this.store.earliestOverdue(now)]);
    const earliest = Math.min(queued ?? now, overdue ?? now);
    return Math.max(0, now - earliest);
  }

  /** Sends the events runs left for the app, clearing each in the transaction that queues it. */
  async flushEvents(): Promise<void> {
    if (!this.webhooks.enabled) return;
    while ((await this.store.takeEvents(200, async (events, tx) => {
      for (const e of events) await this.webhooks.send({ ...e.event, provider_config_key: e.integration, connection_id: e.connection, sync_name: e.sync }, tx);
    })) === 200);
  }

  /** triggerSync: queues a run of each named sync, unless one is running; answers each one's status. */
  async trigger(integrationKey: string, connectionId: string, names: string[]): Promise<{ name: string; status: 'queued' | 'running' }[]> {
    const { provider } = await this.integrations.withProvider(integrationKey);
    if (!names.length) throw badRequest('invalid_request', 'body.syncs must name at least one sync');
    const syncs = [...new Set(names)].map((name) => [name, syncOf(provider, name)] as const);
    // Fails now, with 404 or 424, rather than inside the run.
    await this.auth.fresh(integrationKey, connectionId);
    const out: { name: string; status: 'queued' | 'running' }[] = [];
    for (const [name] of syncs) {
      const key = { integration: integrationKey, connection: connectionId, sync: name };
      const row = await this.store.get(key);
      if (row?.status === 'running' && row.lease_until && row.lease_until > new Date().toISOString()) {
        out.push({ name, status: 'running' });
        continue;
      }
      await this.queue.send('terapi-sync-run', { ...key, reason: 'trigger' } satisfies RunJob, { singletonKey: jobKey(key) });
      out.push({ name, status: 'queued' });
    }
    return out;
  }

  /** A new connection's syncs go on their schedule, due at once, except those that say not to start on their own. */
  async scheduleConnection(integrationKey: string, connectionId: string): Promise<void> {
    const { integration, provider } = await this.integrations.withProvider(integrationKey);
    for (const [name, sync] of Object.entries(provider.syncs ?? {})) {
      if (sync.auto_start === false) continue;
      await this.store.schedule({ integration: integrationKey, connection: connectionId, sync: name }, sync.model.name, frequencyMs(integration.sync_frequencies?.[name] ?? sync.frequency), true);
    }
  }

  /** POST /sync/pause and /sync/start: a paused sync runs only when triggered; a started one runs now and then on its schedule. */
  async setPaused(integrationKey: string, connectionId: string, names: string[], paused: boolean): Promise<{ name: string; status: string }[]> {
    const { integration, provider } = await this.integrations.withProvider(integrationKey);
    if (!names.length) throw badRequest('invalid_request', 'body.syncs must name at least one sync');
    const syncs = [...new Set(names)].map((name) => [name, syncOf(provider, name)] as const);
    await this.connections.get(integrationKey, connectionId);
    for (const [name, sync] of syncs) {
      await this.store.setPaused({ integration: integrationKey, connection: connectionId, sync: name }, sync.model.name, paused, frequencyMs(integration.sync_frequencies?.[name] ?? sync.frequency));
    }
    return syncs.map(([name]) => ({ name, status: paused ? 'paused' : 'scheduled' }));
  }

  /** PATCH /integration: each named sync's frequency, for every connection of the integration. */
  async setFrequencies(integrationKey: string, frequencies: Record<string, string>): Promise<void> {
    const { provider } = await this.integrations.withProvider(integrationKey);
    for (const [name, frequency] of Object.entries(frequencies)) {
      syncOf(provider, name);
      await this.store.setFrequency(integrationKey, name, frequencyMs(frequency)!);
    }
  }

  /** A sync-run job: claims the sync and runs it here, unless a run holds it or it no longer exists. */
  private runJob(job: RunJob): Promise<void> {
    const done = this.takeJob(job).finally(() => this.jobs.delete(done));
    this.jobs.add(done);
    return done;
  }

  private async takeJob(job: RunJob): Promise<void> {
    const key = { integration: job.integration, connection: job.connection, sync: job.sync };
    const found = await this.integrations.withProvider(key.integration).catch(() => undefined);
    const sync = found && Object.hasOwn(found.provider.syncs ?? {}, key.sync) ? found.provider.syncs![key.sync] : undefined;
    const connection = await this.connections.get(key.integration, key.connection).catch(() => undefined);
    if (!found || !sync || !connection) return; // deleted since it was queued
    const claimed = await this.store.claim(key, sync.model.name, randomUUID(), this.options.leaseMs, sync.mode === 'full');
    if (!claimed) return; // one run at a time: the one running now does the work
    // A job the queue handed over as the stop began: given back at once, for another worker.
    if (this.stopping) return await this.handBack(claimed.handle);
    this.emit('started', { ...job, ...(job.due_ms ? { lag_ms: Date.now() - job.due_ms } : {}) });
    await this.start(found.provider, claimed.handle, claimed.row);
  }

  /** Runs a claimed sync in a worker thread, and tells what it did. */
  private async start(provider: Provider, handle: RunHandle, row: SyncRow): Promise<void> {
    const label = { integration: handle.integration, connection: handle.connection, sync: handle.sync, run: handle.runId };
    this.log.info(label, 'sync run started');
    const run = this.execute(provider, handle, row)
      .then(async (result) => {
        this.log.info({ ...label, ...logged(result) }, result.summary.outcome === 'success' ? 'sync run succeeded' : 'sync run failed');
        this.emit('run', { integration: handle.integration, connection: handle.connection, sync: handle.sync, model: handle.model, result });
        await this.flushEvents().catch(() => {}); // else the next tick sends them
      })
      .catch((e) => this.log.error({ ...label, err: (e as Error).message }, 'sync run could not be recorded'))
      .finally(() => this.running.delete(handle.runId));
    this.running.set(handle.runId, run);
    await run;
  }

  private async execute(provider: Provider, handle: RunHandle, row: SyncRow): Promise<RunResult> {
    // The lease is kept by this thread, which stays responsive whatever the run's thread does.
    const renew = setInterval(() => void this.store.renew(handle, this.options.leaseMs).catch(() => {}), this.options.leaseMs / 3);
    const stopper = new AbortController();
    this.stoppers.set(handle.runId, stopper);
    // The run's pages, stored one after the other in the order they came (RunStore).
    let stored: Promise<StoreAnswer | undefined> = Promise.resolve(undefined);
    try {
      const outcome = await this.pools.runSync(
        {
          sources: provider.sources,
          provider: provider.name,
          sync: handle.sync,
          run: { handle, summary: row.last_run!, since: row.checkpoint, resume: row.resume, leaseMs: this.options.leaseMs, waitBudgetMs: this.options.waitBudgetMs },
          maxResponseBytes: limits.responseBytes,
        },
        (request) => (request.kind === 'fresh' ? this.answerFresh(handle, request.id, request.stale) : (stored = stored.then((before) => this.answerStore(handle, request, before))) as Promise<StoreAnswer>),
        stopper.signal,
      );
      if (outcome.ok) return outcome.result;
      // Another run took over, or the connection was deleted: nothing more of this run is written.
      return { summary: { ...row.last_run!, outcome: 'error', error: outcome.message }, timings: NO_TIMINGS };
    } catch (e) {
      if (stopper.signal.aborted) {
        await this.handBack(handle);
        return { summary: { ...row.last_run!, outcome: 'interrupted' }, timings: NO_TIMINGS };
      }
      // The run's thread ended without recording how (stopped by the watchdog or its memory cap,
      // or a fault): the run ends here, keeping every page it stored.
      const progress = await this.store.get(handle).catch(() => undefined);
      const summary: RunSummary = { ...(progress?.run_id === handle.runId && progress.last_run ? progress.last_run : row.last_run!), outcome: 'error', error: `the run was stopped: ${(e as Error).message}` };
      const done = await this.store.finish(handle, summary, { full: false, resume: null }).catch(() => undefined);
      return { summary, records_count: done?.records_count, timings: NO_TIMINGS };
    } finally {
      clearInterval(renew);
      this.stoppers.delete(handle.runId);
    }
  }

  /** Marks a run interrupted (what it stored stays, with its checkpoint) and queues it again, to resume on any worker. */
  private async handBack(handle: RunHandle): Promise<void> {
    await this.store.interrupt(handle, 'the run was handed back: its process stopped; it resumes where it stopped');
    await this.queue.send('terapi-sync-run', { integration: handle.integration, connection: handle.connection, sync: handle.sync, reason: 'resume' } satisfies RunJob, { singletonKey: jobKey(handle) });
    this.log.info({ integration: handle.integration, connection: handle.connection, sync: handle.sync, run: handle.runId }, 'sync run handed back: it resumes from its last stored page');
  }

  /** A run thread's page or end, stored here: the thread holds no database handle (core/jobs/sync-worker.ts). */
  private async answerStore(handle: RunHandle, request: Extract<WorkerMessage, { kind: 'store' }>, before?: StoreAnswer): Promise<StoreAnswer> {
    const spent = request.method === 'writePage' ? (request.args[1] as PreparedPage | undefined)?.rows?.buffer : undefined;
    const answered = (a: StoreAnswer): StoreAnswer => (spent instanceof ArrayBuffer ? { ...a, spent } : a);
    // A page sent before the one before it was answered, when that one failed: not stored.
    if (request.method === 'writePage' && before?.error) return answered({ id: request.id, error: before.error });
    try {
      // Only this run's own sync: the handle comes from this thread's claim, not from the worker.
      const args = request.args as [RunHandle, ...unknown[]];
      if (args[0]?.runId !== handle.runId || args[0]?.sync !== handle.sync || args[0]?.connection !== handle.connection || args[0]?.integration !== handle.integration) throw new Error('a run thread asked to store for another run');
      // Counted as pages are stored, not at the run's end: a run handed back or cut keeps what it wrote.
      if (request.method === 'writePage') {
        const counts = await this.store.writePage(handle, ...(args.slice(1) as [any, any, any]));
        this.emit('stored', { added: counts.added, updated: counts.updated, deleted: 0 });
        return answered({ id: request.id, value: counts });
      }
      const done = await this.store.finish(handle, ...(args.slice(1) as [any, any]));
      if (done.deleted) this.emit('stored', { added: 0, updated: 0, deleted: done.deleted });
      return { id: request.id, value: done };
    } catch (e) {
      return answered({ id: request.id, error: toWire(e) });
    }
  }

  private async answerFresh(handle: RunHandle, id: number, stale?: string): Promise<FreshAnswer> {
    try {
      const { provider: _provider, scrub: _scrub, ...fresh } = await this.auth.fresh(handle.integration, handle.connection, stale ? { stale } : false);
      return { id, fresh: { ...fresh, secrets: this.auth.secrets(fresh.integration, fresh.credentials) } };
    } catch (e) {
      return { id, error: toWire(e instanceof TerapiError ? e : new TerapiError(502, 'provider_error', (e as Error).message)) };
    }
  }

  async status(integrationKey: string, connectionId: string, name: string): Promise<SyncStatusView> {
    const { provider } = await this.integrations.withProvider(integrationKey);
    syncOf(provider, name);
    await this.connections.get(integrationKey, connectionId);
    const row = await this.store.get({ integration: integrationKey, connection: connectionId, sync: name });
    if (!row || (!row.last_run && !row.paused)) throw notFound('sync_not_run', `sync "${name}" has not run yet for connection "${connectionId}": POST /sync/trigger starts it`);
    return view(row);
  }

  /** GET /syncs: every sync, or those of one integration, of one connection id (in every integration), or both. */
  async list(integrationKey?: string, connectionId?: string): Promise<SyncListItem[]> {
    const rows = await this.store.list(integrationKey, connectionId);
    return rows.map((r) => ({ provider_config_key: r.integration, model: r.model, ...view(r), ...(!r.last_run && !r.paused ? { status: 'scheduled' as const } : {}) }));
  }

  /** GET /records: what the syncs stored, in change order. */
  async records(q: RecordsQuery): Promise<{ records: Record<string, unknown>[]; next_cursor: string | null }> {
    const { provider } = await this.integrations.withProvider(q.provider_config_key);
    await this.connections.get(q.provider_config_key, q.connection_id);
    const models = Object.values(provider.syncs ?? {}).map((s) => s.model.name);
    if (!models.includes(q.model)) {
      throw notFound('unknown_model', `provider "${provider.name}" has no model "${q.model}"${models.length ? `; its models are ${models.join(', ')}` : ''}`);
    }
    const after = q.cursor === undefined ? 0 : recordCursor.decode(q.cursor);
    const limit = q.limit ?? 100;
    const actions = q.filter === undefined ? undefined : q.filter.split(',').map((a) => a.trim());
    if (actions && (!actions.length || actions.some((a) => !ACTIONS.includes(a)))) {
      throw badRequest('invalid_request', `filter must be a comma-separated list of ${ACTIONS.join(', ')}; got ${JSON.stringify(q.filter)}`);
    }
    const rows = await this.store.read({ integration: q.provider_config_key, connection: q.connection_id, model: q.model, after, limit: limit + 1, modifiedAfter: q.modified_after && new Date(q.modified_after).toISOString(), actions });
    const page = rows.slice(0, limit);
    return {
      records: page.map((r) => ({
        ...(JSON.parse(r.data) as Record<string, unknown>),
        _terapi_metadata: { first_seen_at: r.first_seen_at, last_modified_at: r.last_modified_at, last_action: r.last_action, deleted_at: r.deleted_at, cursor: recordCursor.encode(r.cursor) },
      })),
      next_cursor: rows.length > limit ? recordCursor.encode(page[page.length - 1].cursor) : null,
    };
  }

  /**
   * Stops queuing and taking runs, waits up to `graceMs` for the ones in hand, then hands back
   * those still going: each is marked interrupted and queued again, to resume where it stopped.
   */
  stop(graceMs: number): Promise<void> {
    // A second call (the engine's stop after the server's wind-down) waits for the first.
    this.stopping ??= this.windDown(graceMs);
    return this.stopping;
  }

  private async windDown(graceMs: number): Promise<void> {
    clearInterval(this.ticker);
    await this.queue.stopWorking();
    let grace: NodeJS.Timeout | undefined;
    await Promise.race([Promise.allSettled([...this.jobs]), new Promise((r) => (grace = setTimeout(r, graceMs)))]);
    // Cleared: left running, the grace period kept a stopped process alive to its end.
    clearTimeout(grace);
    for (const stopper of this.stoppers.values()) stopper.abort(HANDED_BACK);
    // Jobs taken after this point see `stopping` and hand their run back at once.
    while (this.jobs.size) await Promise.allSettled([...this.jobs]);
  }

  async deleteConnection(integrationKey: string, connectionId: string): Promise<void> {
    await this.store.deleteConnection(integrationKey, connectionId);
  }

  async deleteIntegration(integrationKey: string): Promise<void> {
    await this.store.deleteIntegration(integrationKey);
  }

  /** Waits until no run is queued and none is in hand here (tests, benches). */
  async idle(): Promise<void> {
    for (let quiet = 0; quiet < 2; ) {
      await Promise.allSettled([...this.running.values()]);
      const busy = this.jobs.size > 0 || this.running.size > 0 || (await this.queue.waiting('terapi-sync-run')) > 0;
      quiet = busy ? 0 : quiet + 1;
      await new Promise((r) => setTimeout(r, busy ? 20 : 60));
    }
  }
}

export function syncOf(provider: Provider, name: string): Sync {
  const sync = Object.hasOwn(provider.syncs ?? {}, name) ? provider.syncs![name] : undefined;
  if (!sync) throw notFound('unknown_sync', `provider "${provider.name}" has no sync "${name}"${provider.syncs ? `; its syncs are ${Object.keys(provider.syncs).join(', ')}` : ''}`);
  return sync;
}

/** One waiting run per sync: the queue's singleton key. */
const jobKey = (k: SyncKey) => JSON.stringify([k.integration, k.connection, k.sync]);

/** `30s`, `15m`, `1h`, `1d` in ms; undefined gives the format's default, an hour. */
export function frequencyMs(frequency = '1h'): number {
  const unit = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }[frequency.slice(-1) as 's' | 'm' | 'h' | 'd'];
  const n = Number(frequency.slice(0, -1));
  if (!unit || !Number.isInteger(n) || n < 1) throw badRequest('invalid_request', `a frequency is a number and a unit (s, m, h or d), like 15m or 1h; got ${JSON.stringify(frequency)}`);
  return n * unit;
}

function view(row: SyncRow): SyncStatusView {
  const status = row.status === 'running' ? 'running' : row.paused ? 'paused' : row.status === 'idle' ? 'success' : row.status;
  return {
    sync_name: row.sync,
    connection_id: row.connection,
    status,
    ...(row.finished_at ? { last_sync_date: row.finished_at } : {}),
    ...(row.next_run_ms !== null && !row.paused ? { next_sync_date: new Date(row.next_run_ms).toISOString() } : {}),
    records_count: row.records_count,
    ...(row.error && status !== 'running' ? { error: row.error } : {}),
    ...(row.last_run ? { last_run: row.last_run } : {}),
  };
}

function logged(result: RunResult) {
  const s = result.summary;
  const ms = Object.fromEntries(Object.entries(result.timings).map(([k, v]) => [k, Math.round(v)]));
  return { ...ms, outcome: s.outcome, pages: s.pages, added: s.added, updated: s.updated, deleted: s.deleted, unchanged: s.unchanged, invalid: s.invalid.count, records_count: result.records_count, ...(s.error ? { error: s.error } : {}) };
}
