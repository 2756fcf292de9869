import { randomUUID } from 'node:crypto';
import { EventEmitter } from 'node:events';
import type { AuthEngine } from '../auth/tokens.ts';
import type { Connections } from '../auth/connections.ts';
import type { Integrations } from '../auth/integrations.ts';
import { badRequest, notFound, TerapiError } from '../errors.ts';
import type { Provider, Sync } from '../format/provider-types.ts';
import type { WorkerPools } from '../jobs/pools.ts';
import type { FreshAnswer, StoreOptions } from '../jobs/worker.ts';
import type { Logger } from '../logger.ts';
import type { RunResult } from './run.ts';
import { recordCursor, type RunHandle, type RunSummary, type SyncRow, type SyncStore } from './sync-store.ts';

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
const NO_TIMINGS = { pages_ms: 0, mapping_ms: 0, storing_ms: 0 };

export interface SyncOptions {
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

export class Syncs extends EventEmitter<{ run: [RunEvent] }> {
  private readonly running = new Map<string, Promise<void>>();
  private reaper?: NodeJS.Timeout;

  constructor(
    private readonly store: SyncStore,
    private readonly pools: WorkerPools,
    private readonly integrations: Integrations,
    private readonly connections: Connections,
    private readonly auth: AuthEngine,
    private readonly storeOptions: StoreOptions,
    private readonly options: SyncOptions,
    private readonly log: Logger,
  ) {
    super();
  }

  /**
   * Marks runs whose process died as interrupted. `everything`: this process owns the store alone
   * (embedded mode), so any run still marked running belongs to a process that is gone.
   */
  async recover(everything: boolean): Promise<void> {
    const expired = await this.store.expireLeases(everything ? new Date('9999-12-31T23:59:59.999Z') : new Date());
    for (const key of expired) this.log.warn({ integration: key.integration, connection: key.connection, sync: key.sync }, 'sync run interrupted: its process stopped during the run');
  }

  /** Looks for runs whose process died, every half lease, for as long as this process runs. */
  watchLeases(): void {
    this.reaper = setInterval(() => void this.recover(false).catch((e) => this.log.warn({ err: (e as Error).message }, 'could not check sync leases')), this.options.leaseMs / 2);
    this.reaper.unref();
  }

  /** triggerSync: starts each named sync now unless it is running; answers each one's status. */
  async trigger(integrationKey: string, connectionId: string, names: string[]): Promise<{ name: string; status: string }[]> {
    const { provider } = await this.integrations.withProvider(integrationKey);
    if (!names.length) throw badRequest('invalid_request', 'body.syncs must name at least one sync');
    const syncs = [...new Set(names)].map((name) => [name, syncOf(provider, name)] as const);
    // Fails now, with 404 or 424, rather than inside the run.
    await this.auth.fresh(integrationKey, connectionId);
    const out = [];
    for (const [name, sync] of syncs) {
      await this.start(provider, sync, { integration: integrationKey, connection: connectionId, sync: name });
      out.push({ name, status: 'running' });
    }
    return out;
  }

  /** Claims a sync and runs it in a worker thread; false when a run already holds it. */
  private async start(provider: Provider, sync: Sync, key: { integration: string; connection: string; sync: string }): Promise<boolean> {
    const claimed = await this.store.claim(key, sync.model.name, randomUUID(), this.options.leaseMs, sync.mode === 'full');
    if (!claimed) return false;
    const { handle, row } = claimed;
    const label = { integration: key.integration, connection: key.connection, sync: key.sync, run: handle.runId };
    this.log.info(label, 'sync run started');
    const run = this.execute(provider, handle, row)
      .then((result) => {
        this.log.info({ ...label, ...logged(result) }, result.summary.outcome === 'success' ? 'sync run succeeded' : 'sync run failed');
        this.emit('run', { ...key, model: handle.model, result });
      })
      .catch((e) => this.log.error({ ...label, err: (e as Error).message }, 'sync run could not be recorded'))
      .finally(() => this.running.delete(handle.runId));
    this.running.set(handle.runId, run);
    return true;
  }

  private async execute(provider: Provider, handle: RunHandle, row: SyncRow): Promise<RunResult> {
    // The lease is kept by this thread, which stays responsive whatever the run's thread does.
    const renew = setInterval(() => void this.store.renew(handle, this.options.leaseMs).catch(() => {}), this.options.leaseMs / 3);
    try {
      const outcome = await this.pools.runSync(
        {
          store: this.storeOptions,
          sources: provider.sources,
          provider: provider.name,
          sync: handle.sync,
          run: { handle, since: row.checkpoint, resume: row.resume, leaseMs: this.options.leaseMs, waitBudgetMs: this.options.waitBudgetMs },
        },
        (id) => this.answerFresh(handle, id),
      );
      if (outcome.ok) return outcome.result;
      // Another run took over, or the connection was deleted: nothing more of this run is written.
      return { summary: { ...(row.last_run ?? ({} as RunSummary)), run_id: handle.runId, outcome: 'error', error: outcome.message }, timings: NO_TIMINGS };
    } catch (e) {
      // The run's thread ended without recording how (stopped by the watchdog or its memory cap,
      // or a fault): the run ends here, keeping every page it stored.
      const summary: RunSummary = { ...(row.last_run ?? ({} as RunSummary)), run_id: handle.runId, outcome: 'error', error: `the run was stopped: ${(e as Error).message}` };
      const done = await this.store.finish(handle, summary, { full: false, resume: null }).catch(() => undefined);
      return { summary, records_count: done?.records_count, timings: NO_TIMINGS };
    } finally {
      clearInterval(renew);
    }
  }

  private async answerFresh(handle: RunHandle, id: number): Promise<FreshAnswer> {
    try {
      const { provider: _provider, ...fresh } = await this.auth.fresh(handle.integration, handle.connection);
      return { id, fresh };
    } catch (e) {
      const err = e instanceof TerapiError ? e : new TerapiError(502, 'provider_error', (e as Error).message);
      return { id, error: { status: err.status, code: err.code, message: err.message } };
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

  /** Stops looking for dead runs, and waits for this process's own. */
  async stop(): Promise<void> {
    clearInterval(this.reaper);
    await this.idle();
  }

  async deleteConnection(integrationKey: string, connectionId: string): Promise<void> {
    await this.store.deleteConnection(integrationKey, connectionId);
  }

  async deleteIntegration(integrationKey: string): Promise<void> {
    await this.store.deleteIntegration(integrationKey);
  }

  /** Waits for the runs this process started (tests, shutdown). */
  async idle(): Promise<void> {
    while (this.running.size) await Promise.allSettled([...this.running.values()]);
  }
}

export function syncOf(provider: Provider, name: string): Sync {
  const sync = Object.hasOwn(provider.syncs ?? {}, name) ? provider.syncs![name] : undefined;
  if (!sync) throw notFound('unknown_sync', `provider "${provider.name}" has no sync "${name}"${provider.syncs ? `; its syncs are ${Object.keys(provider.syncs).join(', ')}` : ''}`);
  return sync;
}

function view(row: SyncRow): SyncStatusView {
  const status = row.status === 'running' ? 'running' : row.paused ? 'paused' : row.status === 'idle' ? 'success' : row.status;
  return {
    sync_name: row.sync,
    connection_id: row.connection,
    status,
    ...(row.finished_at ? { last_sync_date: row.finished_at } : {}),
    ...(row.next_run_at ? { next_sync_date: row.next_run_at } : {}),
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
