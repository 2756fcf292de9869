import type { Deployed } from '../format/provider-registry.ts';
import { createTables, type Sql, type SqlTx } from './sql.ts';

/**
 * Provider files deployed through the API (PUT /providers/{name}), in the store's database so that
 * every server and worker on it loads the same ones. Each PUT or DELETE is a new row: `id` counts
 * every change of every name (what processes poll: one cheap MAX), `version` counts the changes of
 * one name. A DELETE is a row without text. The newest row of a name is what is in force.
 */
export type DeployedFile = Deployed;

const TABLES = (bigint: string) => [
  `CREATE TABLE IF NOT EXISTS terapi_provider_files (
    id ${bigint} NOT NULL PRIMARY KEY,
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    text TEXT,
    deployed_at TEXT NOT NULL,
    UNIQUE (name, version)
  )`,
];

export class ProviderFiles {
  constructor(private readonly sql: Sql) {}

  async migrate(): Promise<void> {
    await createTables(this.sql, TABLES(this.sql.dialect === 'postgres' ? 'BIGINT' : 'INTEGER'));
  }

  /** The number of the last change of any deployed file (0 before the first): what every process polls. */
  async latest(): Promise<number> {
    const [row] = await this.sql.query<{ latest: string | number | null }>('SELECT MAX(id) AS latest FROM terapi_provider_files');
    return Number(row?.latest ?? 0);
  }

  /** The files in force: the newest version of each name that is not deleted, by name. */
  async current(tx: Pick<SqlTx, 'query'> = this.sql): Promise<DeployedFile[]> {
    const rows = await tx.query<DeployedFile & { version: number | string }>(
      `SELECT f.name, f.version, f.text, f.deployed_at FROM terapi_provider_files f
       WHERE f.id = (SELECT MAX(g.id) FROM terapi_provider_files g WHERE g.name = f.name) AND f.text IS NOT NULL
       ORDER BY f.name`,
    );
    return rows.map((r) => ({ ...r, version: Number(r.version) }));
  }

  /**
   * Writes a new version of `name` (`text` null: deletes it), after `check` has accepted the
   * files that will then be in force: changes are serialised, so each is checked against the one
   * before it. Answers the new version and whether a version was in force before.
   */
  async write(name: string, text: string | null, check: (before: DeployedFile[], after: DeployedFile[]) => void): Promise<{ version: number; existed: boolean }> {
    return this.sql.transaction(async (tx) => {
      // SQLite's transaction holds the file's write lock already; PostgreSQL needs a lock of its own.
      if (tx.dialect === 'postgres') await tx.query(`SELECT pg_advisory_xact_lock(hashtext('terapi_provider_files'))`);
      const before = await this.current(tx);
      const [top] = await tx.query<{ id: string | number | null; version: string | number | null }>(
        'SELECT (SELECT MAX(id) FROM terapi_provider_files) AS id, (SELECT MAX(version) FROM terapi_provider_files WHERE name = $1) AS version',
        [name],
      );
      const version = Number(top?.version ?? 0) + 1;
      const deployed_at = new Date().toISOString();
      const after = before.filter((f) => f.name !== name);
      if (text !== null) after.push({ name, version, text, deployed_at });
      check(before, after);
      await tx.query('INSERT INTO terapi_provider_files (id, name, version, text, deployed_at) VALUES ($1, $2, $3, $4, $5)', [Number(top?.id ?? 0) + 1, name, version, text, deployed_at]);
      return { version, existed: before.some((f) => f.name === name) };
    });
  }
}
