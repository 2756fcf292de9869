/**
 * The baseline of bench/api.ts, a process of its own: Koa 3 and @koa/router, no middleware, on the
 * same kind of listener as `terapi start` (node:http's createServer over app.callback(), PORT on
 * HOST, every address when HOST is unset), answering the same bytes as the Terapi endpoints it
 * stands beside. Run by bench/api.ts as `node --import tsx bench/api-bare.ts <bodies.json>`.
 *
 * - GET /connection/:connection_id and GET /auth/token/:provider_config_key/:connection_id answer
 *   the JSON bodies the bench read from Terapi (an object, serialised by Koa on each request, as
 *   Terapi's are).
 * - With BENCH_DATABASE_URL set, GET /pg/connection/:connection_id and GET /pg/auth/token/:pck/:id
 *   each run one `SELECT body FROM bench_api_rows WHERE id = $1` (a primary key) through a pg.Pool
 *   of Terapi's size (20) and answer the row's `json` column, which pg parses and Koa serialises:
 *   the least a server that reads through the database per request can do.
 */
import Koa from 'koa';
import Router from '@koa/router';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import pg from 'pg';

const bodies = JSON.parse(readFileSync(process.argv[2], 'utf8')) as { connection: unknown; token: unknown };
const app = new Koa();
const router = new Router();
router.get('/connection/:connection_id', (ctx) => {
  ctx.body = bodies.connection;
});
router.get('/auth/token/:provider_config_key/:connection_id', (ctx) => {
  ctx.body = bodies.token;
});

const databaseUrl = process.env.BENCH_DATABASE_URL;
if (databaseUrl) {
  const pool = new pg.Pool({ connectionString: databaseUrl, max: 20 });
  const row = async (id: string) => (await pool.query<{ body: unknown }>('SELECT body FROM bench_api_rows WHERE id = $1', [id])).rows[0]?.body;
  router.get('/pg/connection/:connection_id', async (ctx) => {
    ctx.body = await row(`connection/${ctx.params.connection_id}`);
  });
  router.get('/pg/auth/token/:provider_config_key/:connection_id', async (ctx) => {
    ctx.body = await row(`token/${ctx.params.connection_id}`);
  });
}
app.use(router.routes());

const server = createServer(app.callback());
server.listen(Number(process.env.PORT), process.env.HOST || undefined);
process.on('SIGTERM', () => process.exit(0));
