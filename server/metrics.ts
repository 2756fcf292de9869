/**
 * GET /metrics (README, "Metrics"): the Prometheus text format, from prom-client, kept to this one
 * module. Core knows nothing of it: it emits events (token refreshes, sync runs and the pages they
 * store, webhook deliveries) that are counted here, and answers the backlog (queue depth, schedule
 * lag) from the store at each scrape, so that with PostgreSQL every process reports the cluster's.
 *
 * Counters are per process, as Prometheus expects: each API server and worker exposes its own.
 * A sync run's thread keeps no counter: its pages and its end are stored by this process's main
 * thread (core/jobs/sync-worker.ts), which is where they are counted.
 */
import type { Context } from 'koa';
import type Router from '@koa/router';
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { Engine } from '../core/engine.ts';

type Child = ReturnType<Histogram<'method' | 'route' | 'status'>['labels']>;

/** One route and method's histogram children, one per status code seen, made once. */
interface BoundRoute {
  method: string;
  route: string;
  byStatus: (Child | undefined)[];
}

/** The route label of a request no route matched (a 404, a 405): never the raw path, which may hold ids. */
const UNMATCHED = 'unmatched';
/** The proxy is served before the router; its route label is its pattern. */
const PROXY = '/proxy/{path}';

const SECONDS_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
const RUN_BUCKETS = [0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600];

export class Metrics {
  readonly registry = new Registry();
  private readonly requests: Histogram<'method' | 'route' | 'status'>;
  /** route pattern → method → its children. */
  private readonly routes = new Map<string, Map<string, BoundRoute>>();
  private readonly queueDepth: Gauge<'queue'>;
  private readonly scheduleLag: Gauge;

  constructor(private readonly engine: Engine) {
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry });
    this.requests = new Histogram({
      name: 'terapi_http_request_duration_seconds',
      help: 'HTTP requests served, by method, route (the pattern, never the raw path) and status; _count is the number of requests',
      labelNames: ['method', 'route', 'status'],
      buckets: SECONDS_BUCKETS,
      registers,
    });
    const refreshes = new Counter({ name: 'terapi_token_refreshes_total', help: 'Token refreshes this process carried out, by provider and outcome (success, error, needs_reauth)', labelNames: ['provider', 'outcome'], registers });
    const runs = new Counter({ name: 'terapi_sync_runs_total', help: 'Sync runs this process carried out, by outcome (success, error, interrupted, rate_limited)', labelNames: ['outcome'], registers });
    const runSeconds = new Histogram({ name: 'terapi_sync_run_duration_seconds', help: 'How long the sync runs of this process took, start to end', buckets: RUN_BUCKETS, registers });
    const startLag = new Histogram({
      name: 'terapi_sync_start_lag_seconds',
      help: 'How late the scheduled runs this process started began, against the time they were due',
      buckets: [0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600],
      registers,
    });
    const records = new Counter({ name: 'terapi_sync_records_total', help: 'Records written by the sync runs of this process, by action (added, updated, deleted)', labelNames: ['action'], registers });
    const deliveries = new Counter({ name: 'terapi_webhook_deliveries_total', help: 'Webhook delivery attempts of this process, by outcome (delivered, refused: a non-2xx answer, unreachable)', labelNames: ['outcome'], registers });
    this.queueDepth = new Gauge({ name: 'terapi_job_queue_depth', help: 'Jobs waiting to start, by queue (terapi-sync-run, terapi-webhook); from the database, the same on every process', labelNames: ['queue'], registers });
    this.scheduleLag = new Gauge({ name: 'terapi_schedule_lag_seconds', help: 'How late the longest-waiting scheduled run is now (0 when none waits); from the database, the same on every process', registers });

    // Children made once: each event below costs a counter's increment.
    const added = records.labels('added');
    const updated = records.labels('updated');
    const deleted = records.labels('deleted');
    for (const action of ['added', 'updated', 'deleted']) records.labels(action).inc(0);
    for (const outcome of ['success', 'error', 'interrupted', 'rate_limited']) runs.labels(outcome).inc(0);
    for (const outcome of ['delivered', 'refused', 'unreachable']) deliveries.labels(outcome).inc(0);
    engine.auth.on('refreshed', (e) => refreshes.labels(e.provider, 'success').inc());
    engine.auth.on('refresh_failed', (e) => refreshes.labels(e.provider, e.needs_reauth ? 'needs_reauth' : 'error').inc());
    engine.syncs.on('run', ({ result: { summary } }) => {
      runs.labels(summary.outcome === 'running' ? 'error' : summary.outcome).inc();
      if (summary.finished_at) runSeconds.observe((Date.parse(summary.finished_at) - Date.parse(summary.started_at)) / 1000);
    });
    engine.syncs.on('started', (job) => {
      if (job.lag_ms !== undefined) startLag.observe(Math.max(0, job.lag_ms) / 1000);
    });
    engine.syncs.on('stored', (s) => {
      if (s.added) added.inc(s.added);
      if (s.updated) updated.inc(s.updated);
      if (s.deleted) deleted.inc(s.deleted);
    });
    engine.webhooks.on('delivery', (d) => deliveries.labels(d.outcome).inc());
  }

  /** Binds a child per route and method of the router, so that a request finds its own by two map lookups and an index. */
  bindRoutes(router: Router): void {
    const bind = (route: string, methods: string[]) => {
      const byMethod = this.routes.get(route) ?? new Map<string, BoundRoute>();
      for (const method of methods) if (!byMethod.has(method)) byMethod.set(method, { method, route, byStatus: [] });
      this.routes.set(route, byMethod);
    };
    for (const layer of router.stack) if (typeof layer.path === 'string' && layer.methods.length) bind(layer.path, layer.methods);
    bind(PROXY, ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS']);
  }

  /** Counts a request once it is answered: no allocation here beyond prom-client's observe. */
  observe(ctx: Context, seconds: number): void {
    const matched = (ctx as { _matchedRoute?: unknown })._matchedRoute;
    const route = typeof matched === 'string' ? matched : ctx.path.startsWith('/proxy/') ? PROXY : UNMATCHED;
    let bound = this.routes.get(route)?.get(ctx.method);
    if (!bound) {
      // A method or route not bound up front (an unmatched request): bound now, once.
      this.bindRoute(route, ctx.method);
      bound = this.routes.get(route)!.get(ctx.method)!;
    }
    const status = ctx.status;
    let child = bound.byStatus[status];
    if (!child) child = bound.byStatus[status] = this.requests.labels(bound.method, bound.route, String(status));
    child.observe(seconds);
  }

  private bindRoute(route: string, method: string): void {
    // Methods are the few the HTTP parser accepts; an unknown one becomes OTHER, so labels stay bounded.
    const known = /^[A-Z]{3,7}$/.test(method) ? method : 'OTHER';
    const byMethod = this.routes.get(route) ?? new Map<string, BoundRoute>();
    byMethod.set(method, byMethod.get(known) ?? { method: known, route, byStatus: [] });
    this.routes.set(route, byMethod);
  }

  /** GET /metrics: the backlog read now from the store, then every metric in the text format. */
  async serve(ctx: Context): Promise<void> {
    try {
      const backlog = await this.engine.backlog();
      for (const [queue, n] of Object.entries(backlog.waiting)) this.queueDepth.labels(queue).set(n);
      this.scheduleLag.set(backlog.scheduleLagMs / 1000);
    } catch (e) {
      // The store is down: the process's own counters still answer; the backlog is left out rather than stale.
      this.queueDepth.reset();
      this.scheduleLag.reset();
      this.engine.log.warn({ err: (e as Error).message }, 'metrics: the backlog could not be read from the store');
    }
    ctx.type = this.registry.contentType;
    ctx.set('cache-control', 'no-store');
    ctx.body = await this.registry.metrics();
  }
}
