import pg from 'pg';
import PgBoss from 'pg-boss';
import type { Logger } from '../logger.ts';
import type { Sql, SqlTx } from '../store/sql.ts';

/** The queues Terapi uses: sync runs, and deliveries of webhooks to the app. */
export type QueueName = 'terapi-sync-run' | 'terapi-webhook';

export interface SendOptions {
  /** While a job with this key waits to start, another one is not queued (a run already due stays one run). */
  singletonKey?: string;
  /** How many times a job that failed is tried again, waiting `retryDelaySeconds` doubled each time (with jitter). */
  retryLimit?: number;
  retryDelaySeconds?: number;
}

/**
 * Durable jobs. With PostgreSQL they are pg-boss jobs (any number of processes send and work them);
 * the embedded mode, where pg-boss cannot run, keeps them in a table of its SQLite file and works
 * them in its one process. The code that sends and works jobs is the same in both modes.
 */
export interface JobQueue {
  /** Queues a job; given a transaction, the job exists only if the transaction commits. */
  send(queue: QueueName, data: object, options?: SendOptions, tx?: SqlTx): Promise<void>;
  /** Works jobs of a queue, `concurrency` at a time; a handler that throws fails the job (retried as sent). */
  work(queue: QueueName, concurrency: number, handler: (data: any) => Promise<void>): Promise<void>;
  /** Jobs waiting to start (the queue's depth), in every process's queue on this database. */
  waiting(queue: QueueName): Promise<number>;
  /** The earliest `due_ms` (ms since the epoch) in the data of the jobs waiting to start; undefined when none has one. */
  earliestDue(queue: QueueName): Promise<number | undefined>;
  /** Stops taking jobs (those in hand go on); sending still works. */
  stopWorking(): Promise<void>;
  /**
   * After stopWorking: waits up to `ms` for the jobs in hand to end (a webhook delivery in flight is
   * finished rather than cut and sent again). Those still going when the queue closes are failed,
   * and tried again later.
   */
  drain(ms: number): Promise<void>;
  close(): Promise<void>;
}

const QUEUES: QueueName[] = ['terapi-sync-run', 'terapi-webhook'];

/** Waits until `jobs` is empty (jobs added meanwhile included) or `ms` has passed. */
async function settle(jobs: Set<Promise<unknown>>, ms: number): Promise<void> {
  const until = Date.now() + ms;
  while (jobs.size && Date.now() < until) {
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([Promise.allSettled([...jobs]), new Promise((r) => (timer = setTimeout(r, until - Date.now())))]);
    clearTimeout(timer);
  }
}

export class PgBossQueue implements JobQueue {
  private readonly inHand = new Set<Promise<void>>();

  private constructor(private readonly boss: PgBoss) {}

  static async open(databaseUrl: string, log: Logger): Promise<PgBossQueue> {
    const boss = new PgBoss({ connectionString: databaseUrl, max: 4, schema: 'pgboss', supervise: true, schedule: false });
    boss.on('error', (e) => log.warn({ err: e.message }, 'job queue error'));
    await boss.start();
    // Two processes creating a queue at once deadlock inside pg-boss: one at a time, across processes.
    const lock = new pg.Client({ connectionString: databaseUrl });
    lock.on('error', () => {});
    await lock.connect();
    try {
      await lock.query(`SELECT pg_advisory_lock(hashtext('terapi_queues'))`);
      // 'short': one waiting job per singleton key, any number running (a run's own lease keeps runs one at a time).
      for (const name of QUEUES) if (!(await boss.getQueue(name))) await boss.createQueue(name, { name, policy: 'short' });
    } finally {
      await lock.end();
    }
    return new PgBossQueue(boss);
  }

  async send(queue: QueueName, data: object, options: SendOptions = {}, tx?: SqlTx): Promise<void> {
    const db = tx ? { executeSql: async (text: string, values: unknown[]) => ({ rows: await tx.query(text, values) }) } : undefined;
    await this.boss.send(queue, data, {
      singletonKey: options.singletonKey,
      retryLimit: options.retryLimit ?? 0,
      // pg-boss counts in whole seconds.
      retryDelay: Math.ceil(options.retryDelaySeconds ?? 0),
      retryBackoff: (options.retryLimit ?? 0) > 0,
      // A run is held by its own lease: pg-boss's expiry only tidies a job whose process died.
      expireInSeconds: 3600,
      ...(db ? { db } : {}),
    });
  }

  async work(queue: QueueName, concurrency: number, handler: (data: any) => Promise<void>): Promise<void> {
    for (let i = 0; i < concurrency; i++) {
      let id = '';
      id = await this.boss.work(queue, { batchSize: 1, pollingIntervalSeconds: 0.5 }, async ([job]) => {
        const done = handler(job.data);
        this.inHand.add(done);
        try {
          await done;
        } finally {
          this.inHand.delete(done);
          // pg-boss waits out the polling interval after each job, which capped a worker at 2 jobs a
          // second per slot (bench/scale.ts): told here, it fetches the next one at once; an empty
          // queue is still polled every half second.
          this.boss.notifyWorker(id);
        }
      });
    }
  }

  waiting(queue: QueueName): Promise<number> {
    return this.boss.getQueueSize(queue);
  }

  async earliestDue(queue: QueueName): Promise<number | undefined> {
    // pg-boss's own table (schema pgboss): states before 'active' wait to start, as in getQueueSize.
    const result = await this.boss.getDb().executeSql(`SELECT min((data ->> 'due_ms')::bigint) AS due FROM pgboss.job WHERE name = $1 AND state < 'active'`, [queue]);
    const due = result.rows[0]?.due;
    return due === null || due === undefined ? undefined : Number(due);
  }

  async stopWorking(): Promise<void> {
    // Fetches no more jobs; handlers in flight go on (the caller waits for them or hands them back).
    await Promise.all(QUEUES.map((q) => this.boss.offWork(q)));
  }

  drain(ms: number): Promise<void> {
    return settle(this.inHand, ms);
  }

  async close(): Promise<void> {
    await this.boss.stop({ graceful: false, wait: true });
  }
}

/**
 * The embedded mode's jobs: rows of one table in the SQLite file, so that a queued webhook or run
 * survives a restart; this process is the only one working them.
 */
export class SqliteQueue implements JobQueue {
  private stopping = false;
  private readonly loops: Promise<void>[] = [];
  private readonly wakers = new Set<() => void>();
  /** Jobs in hand, from their handler to the row's update. */
  private readonly inHand = new Set<Promise<void>>();

  private constructor(
    private readonly sql: Sql,
    private readonly log: Logger,
  ) {}

  static async open(sql: Sql, log: Logger): Promise<SqliteQueue> {
    await sql.query(`CREATE TABLE IF NOT EXISTS terapi_jobs (
      id INTEGER PRIMARY KEY AUTOINCREMENT,
      queue TEXT NOT NULL,
      data TEXT NOT NULL,
      singleton_key TEXT,
      state TEXT NOT NULL DEFAULT 'created',
      attempts INTEGER NOT NULL DEFAULT 0,
      retry_limit INTEGER NOT NULL DEFAULT 0,
      retry_delay_ms INTEGER NOT NULL DEFAULT 0,
      run_after INTEGER NOT NULL
    )`);
    await sql.query(`CREATE UNIQUE INDEX IF NOT EXISTS terapi_jobs_waiting_key ON terapi_jobs (queue, singleton_key) WHERE state = 'created' AND singleton_key IS NOT NULL`);
    await sql.query(`CREATE INDEX IF NOT EXISTS terapi_jobs_next ON terapi_jobs (queue, state, run_after)`);
    // One process owns the file: a job still marked active was in hand when the last one stopped.
    await sql.query(`UPDATE terapi_jobs SET state = 'created' WHERE state = 'active'`);
    return new SqliteQueue(sql, log);
  }

  async send(queue: QueueName, data: object, options: SendOptions = {}, tx?: SqlTx): Promise<void> {
    await (tx ?? this.sql).query(
      `INSERT INTO terapi_jobs (queue, data, singleton_key, retry_limit, retry_delay_ms, run_after) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING`,
      [queue, JSON.stringify(data), options.singletonKey ?? null, options.retryLimit ?? 0, (options.retryDelaySeconds ?? 0) * 1000, Date.now()],
    );
    // Inside a transaction, the job becomes visible at commit: the next poll finds it.
    if (!tx) for (const wake of this.wakers) wake();
  }

  async work(queue: QueueName, concurrency: number, handler: (data: any) => Promise<void>): Promise<void> {
    this.loops.push(this.poll(queue, concurrency, handler));
  }

  /**
   * One poller a queue: it looks with a read (which takes no lock, in WAL mode) and takes a job with
   * a write only when there is one, so that an idle queue does not contend with sync runs for the
   * file's write lock; up to `concurrency` handlers run at once.
   */
  private async poll(queue: QueueName, concurrency: number, handler: (data: any) => Promise<void>) {
    let busy = 0;
    while (!this.stopping) {
      const free = concurrency - busy;
      const ready = free <= 0 ? [] : await this.sql
        .query<{ id: number }>(`SELECT id FROM terapi_jobs WHERE queue = $1 AND state = 'created' AND run_after <= $2 ORDER BY run_after, id LIMIT $3`, [queue, Date.now(), free])
        .catch((e) => {
          this.log.warn({ err: (e as Error).message }, 'job queue error');
          return [];
        });
      for (const { id } of ready) {
        const [job] = await this.sql
          .query<{ id: number; data: string; attempts: number; retry_limit: number; retry_delay_ms: number }>(
            `UPDATE terapi_jobs SET state = 'active', attempts = attempts + 1 WHERE id = $1 AND state = 'created' RETURNING id, data, attempts, retry_limit, retry_delay_ms`,
            [id],
          )
          .catch(() => []);
        if (!job) continue;
        busy++;
        const done: Promise<void> = this.run(queue, job, handler).finally(() => {
          busy--;
          this.inHand.delete(done);
          for (const wake of this.wakers) wake();
        });
        this.inHand.add(done);
      }
      if (!ready.length || busy >= concurrency) {
        await new Promise<void>((resolve) => {
          const wake = () => {
            clearTimeout(timer);
            this.wakers.delete(wake);
            resolve();
          };
          const timer = setTimeout(wake, 250);
          this.wakers.add(wake);
        });
      }
    }
    while (busy > 0) await new Promise((r) => setTimeout(r, 20));
  }

  private async run(queue: QueueName, job: { id: number; data: string; attempts: number; retry_limit: number; retry_delay_ms: number }, handler: (data: any) => Promise<void>) {
    try {
      await handler(JSON.parse(job.data));
      await this.sql.query(`DELETE FROM terapi_jobs WHERE id = $1`, [job.id]);
    } catch (e) {
      const retry = job.attempts <= job.retry_limit;
      // The same backoff as pg-boss: the delay doubled per attempt, half of it random.
      const delay = ((job.retry_delay_ms * 2 ** Math.min(16, job.attempts)) / 2) * (1 + Math.random());
      await this.sql.query(retry ? `UPDATE terapi_jobs SET state = 'created', run_after = $2 WHERE id = $1` : `UPDATE terapi_jobs SET state = 'failed' WHERE id = $1`, retry ? [job.id, Date.now() + delay] : [job.id]).catch(() => {});
      if (!retry) this.log.warn({ queue, err: (e as Error).message }, 'job failed for good');
    }
  }

  async waiting(queue: QueueName): Promise<number> {
    const [row] = await this.sql.query<{ n: number }>(`SELECT count(*) AS n FROM terapi_jobs WHERE queue = $1 AND state = 'created'`, [queue]);
    return Number(row.n);
  }

  async earliestDue(queue: QueueName): Promise<number | undefined> {
    const [row] = await this.sql.query<{ due: number | null }>(`SELECT min(json_extract(data, '$.due_ms')) AS due FROM terapi_jobs WHERE queue = $1 AND state = 'created'`, [queue]);
    return row?.due === null || row?.due === undefined ? undefined : Number(row.due);
  }

  async stopWorking(): Promise<void> {
    this.stopping = true;
    for (const wake of this.wakers) wake();
  }

  drain(ms: number): Promise<void> {
    return settle(this.inHand, ms);
  }

  async close(): Promise<void> {
    // The SQL handle is the engine's, closed with it.
  }
}
