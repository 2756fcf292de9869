/**
 * The provider side of bench/sync.ts, in a process of its own: a paginated REST API over N
 * generated records (1,000 a page, cursor pagination), each page built on request from the
 * record numbers, so that a million records cost no memory here. Prints its port on stdout.
 *
 *   node --import tsx bench/sync-api.ts
 */
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';

const STATUSES = ['active', 'inactive', 'pending'];

/** Record i, the same every time it is asked for. */
export function record(i: number) {
  return {
    id: i,
    name: `  Customer ${i}  `,
    email: `customer${i}@example${i % 97}.com`,
    status: STATUSES[i % 3],
    amount: (i * 37) % 10_000 / 100,
    created_at: new Date(Date.UTC(2025, 0, 1) + i * 1000).toISOString(),
    updated_at: new Date(Date.UTC(2026, 0, 1) + i * 1000).toISOString(),
    tags: [`t${i % 5}`, `t${i % 7}`],
    address: { city: `City ${i % 50}`, country: 'FR' },
  };
}

const server = createServer((req, res) => {
  const url = new URL(req.url!, 'http://x');
  const total = Number(url.searchParams.get('total') ?? 100_000);
  const limit = Number(url.searchParams.get('limit') ?? 1000);
  const from = Number(url.searchParams.get('cursor') ?? 0);
  const items = [];
  for (let i = from; i < Math.min(total, from + limit); i++) items.push(record(i + 1));
  const body = JSON.stringify({ items, next: from + limit < total ? from + limit : null });
  res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
  res.end(body);
});
server.keepAliveTimeout = 60_000;
server.listen(0, '127.0.0.1', () => console.log((server.address() as AddressInfo).port));
