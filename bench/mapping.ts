/**
 * Mapping throughput, interpreted against compiled: every sync mapping of the built-in catalogue, and
 * a 7-field mapping with functions ($string, $trim, $substringAfter, $toMillis, a condition), each over
 * the same generated records (shaped by test/expression-records.ts from what the mapping reads).
 *
 *   npm run bench:mapping [-- --records 100000] [--page 1000] [--rounds 3] [--seven]
 *
 * The records go through in pages, as a sync maps them: JSONata's interpreter (jsonata 2.2.2's
 * evaluate, once per record, as Terapi ran mappings before the compiler) against Expression.evaluateEach
 * (one call per page, compiled). Each page is kept until the next one is mapped. Rates are records per
 * second of CPU time (steadier than wall time on a shared machine), the best of `--rounds` rounds that
 * alternate the two (a shared machine slows either at times); the ratio is the figure to compare.
 * The first page of every mapping is checked to come out identical both ways before anything is timed.
 */
import { isDeepStrictEqual } from 'node:util';
import jsonata from 'jsonata';
import { Expression } from '../core/expression/expression.ts';
import { BUILTIN_PROVIDERS_DIR, loadCatalog, providerFiles } from '../core/format/provider-loader.ts';
import { seeded, typicalRecord } from '../test/expression-records.ts';

function option(name: string, fallback: number): number {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : fallback;
}
const RECORDS = option('records', 100_000);
const PAGE = option('page', 1000);
const ROUNDS = Math.max(1, option('rounds', 3));
/** `--seven`: only the 7-field mapping. */
const SEVEN_ONLY = process.argv.includes('--seven');

/** The bench mapping of issue 11: seven fields, four functions and a condition. */
export const SEVEN_FIELDS = `{
  "id": $string(id),
  "name": $trim(name),
  "email": email,
  "domain": $substringAfter(email, "@"),
  "created_at": $toMillis(created_at),
  "status": active ? "active" : "inactive",
  "owner": owner.login
}`;

function sevenFieldRecords(n: number): unknown[] {
  const r = seeded(7);
  return Array.from({ length: n }, (_, i) => ({
    id: i,
    name: `  ${['Ada', 'Grace', 'Alan', 'Edsger'][i % 4]} ${['Lovelace', 'Hopper', 'Turing', 'Dijkstra'][(i >> 2) % 4]} `,
    email: `user${i}@example${i % 7}.com`,
    created_at: new Date(Date.UTC(2020, 0, 1) + Math.floor(r() * 4 * 365 * 86400000)).toISOString(),
    active: r() < 0.5,
    owner: { login: `owner${i % 100}` },
  }));
}

const cpu = () => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
};

async function interpreted(source: string, records: unknown[], bindings: Record<string, unknown>): Promise<number> {
  const expression = jsonata(source);
  let page: unknown[] = [];
  const started = cpu();
  for (let i = 0; i < records.length; i += PAGE) {
    const out = [];
    for (const record of records.slice(i, i + PAGE)) out.push(await expression.evaluate(record, bindings));
    page = out;
  }
  void page;
  return records.length / ((cpu() - started) / 1000);
}

async function compiled(expression: Expression, records: unknown[], bindings: Record<string, unknown>): Promise<number> {
  let page: unknown[] = [];
  const started = cpu();
  for (let i = 0; i < records.length; i += PAGE) page = await expression.evaluateEach(records.slice(i, i + PAGE), bindings);
  void page;
  return records.length / ((cpu() - started) / 1000);
}

async function bench(name: string, source: string, records: unknown[], bindings: Record<string, unknown>): Promise<number> {
  const expression = new Expression(source);
  if (expression.unsupported) throw new Error(`${name} does not compile: ${expression.unsupported}`);
  const first = records.slice(0, PAGE);
  const reference = [];
  for (const record of first) reference.push(await jsonata(source).evaluate(record, bindings));
  if (!isDeepStrictEqual(await expression.evaluateEach(first, bindings), reference)) throw new Error(`${name}: compiled results differ from the interpreter's`);
  await compiled(expression, first, bindings); // warm up
  let slow = 0;
  let fast = 0;
  for (let round = 0; round < ROUNDS; round++) {
    slow = Math.max(slow, await interpreted(source, records, bindings));
    fast = Math.max(fast, await compiled(expression, records, bindings));
  }
  const ratio = fast / slow;
  console.log(`${name.padEnd(30)} ${Math.round(slow).toLocaleString('en').padStart(10)} ${Math.round(fast).toLocaleString('en').padStart(12)} ${ratio.toFixed(1).padStart(7)}x`);
  return ratio;
}

const { providers, errors } = loadCatalog([providerFiles(BUILTIN_PROVIDERS_DIR)]);
if (errors.length) throw new Error(`the catalogue does not load: ${errors[0].message}`);

console.log(`${RECORDS.toLocaleString('en')} records per mapping, pages of ${PAGE}; records/s of CPU time, best of ${ROUNDS} rounds\n`);
console.log(`${'mapping'.padEnd(30)} ${'interpreter'.padStart(10)} ${'compiled'.padStart(12)} ${'ratio'.padStart(8)}`);
const seven = await bench('7-field bench mapping', SEVEN_FIELDS, sevenFieldRecords(RECORDS), {});
const ratios: number[] = [];
let k = 0;
for (const [name, provider] of SEVEN_ONLY ? [] : [...providers].sort(([a], [b]) => a.localeCompare(b))) {
  for (const [syncName, sync] of Object.entries(provider.syncs ?? {})) {
    const source = sync.mapping.source;
    const r = seeded(++k);
    const { bindings } = typicalRecord(source, r, 0);
    const records = Array.from({ length: RECORDS }, (_, i) => typicalRecord(source, r, i).input);
    try {
      ratios.push(await bench(`${name}.${syncName}`, source, records, bindings));
    } catch (e) {
      console.log(`${name}.${syncName}: not measured, ${(e as Error).message ?? JSON.stringify(e)}`);
    }
  }
}
const geomean = Math.exp(ratios.reduce((s, x) => s + Math.log(x), 0) / ratios.length);
console.log(`\n7-field mapping: ${seven.toFixed(1)}x (target 50x)`);
if (ratios.length) console.log(`catalogue syncs: geometric mean ${geomean.toFixed(1)}x, from ${Math.min(...ratios).toFixed(1)}x to ${Math.max(...ratios).toFixed(1)}x`);
