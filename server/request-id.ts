import { randomUUID } from 'node:crypto';

/**
 * Request ids the server makes (README, "Request ids"): UUIDs, as the document says, whose first
 * 20 hex digits are random once per process and whose last 12 count the requests. Unique in the
 * process by the count, and across processes and restarts by the random part (74 bits). A request
 * id is no secret, and randomUUID's random bytes for each one were a tenth of the server's own
 * work on a token read (bench/api.ts).
 */
const prefix = randomUUID().slice(0, 24);
let count = 0;

export function newRequestId(): string {
  count = (count + 1) % 0x1000000000000;
  return prefix + count.toString(16).padStart(12, '0');
}
