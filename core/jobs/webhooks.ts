import { createHmac, randomUUID } from 'node:crypto';
import { EventEmitter } from 'node:events';
import got from 'got';
import type { Logger } from '../logger.ts';
import type { SqlTx } from '../store/sql.ts';
import type { JobQueue } from './queue.ts';

/** What the app is told: a sync changed records or failed, a connection was made or needs its user again. */
export interface WebhookEvent {
  type: 'sync.changed' | 'sync.error' | 'connection.created' | 'connection.needs_reauth';
  provider_config_key: string;
  connection_id: string;
  [field: string]: unknown;
}

interface Delivery {
  id: string;
  created_at: string;
  event: WebhookEvent;
}

export interface WebhookOptions {
  url?: string;
  /** The secret key: deliveries are signed with it. */
  secret: string;
  /** The first retry's delay; each later one doubles it (about 17 hours over 12 retries at 10 s). */
  retrySeconds: number;
}

export const WEBHOOK_RETRIES = 12;

/** How one delivery attempt ended: taken by the app (2xx), refused (any other status), or the app not reached. */
export type DeliveryOutcome = 'delivered' | 'refused' | 'unreachable';

/**
 * Webhooks to the app (TERAPI_WEBHOOK_URL). Each event is a durable job, queued in the same
 * transaction as what it reports where there is one, and delivered at least once: retried with
 * exponential backoff while the app is down or answers other than 2xx, across restarts.
 *
 * Each POST carries `X-Terapi-Delivery` (the same id on every attempt: deduplicate on it),
 * `X-Terapi-Timestamp` (Unix seconds of this attempt) and `X-Terapi-Signature`:
 * `sha256=` + hex HMAC-SHA256, under the secret key, of `<timestamp>.<raw body>` (README, "Webhooks").
 */
export class Webhooks extends EventEmitter<{ delivery: [{ type: WebhookEvent['type']; outcome: DeliveryOutcome }] }> {
  constructor(
    private readonly queue: JobQueue,
    private readonly options: WebhookOptions,
    private readonly log: Logger,
  ) {
    super();
  }

  get enabled(): boolean {
    return this.options.url !== undefined;
  }

  async send(event: WebhookEvent, tx?: SqlTx): Promise<void> {
    if (!this.options.url) return;
    const delivery: Delivery = { id: randomUUID(), created_at: new Date().toISOString(), event };
    await this.queue.send('terapi-webhook', delivery, { retryLimit: WEBHOOK_RETRIES, retryDelaySeconds: this.options.retrySeconds }, tx);
  }

  /** One attempt; throws when the app did not take it, so that the queue tries again later. */
  async deliver(delivery: Delivery): Promise<void> {
    if (!this.options.url) return;
    const body = JSON.stringify({ id: delivery.id, created_at: delivery.created_at, ...delivery.event });
    const timestamp = String(Math.floor(Date.now() / 1000));
    let status: number;
    try {
      const res = await got.post(this.options.url, {
        body,
        headers: {
          'content-type': 'application/json',
          'user-agent': 'terapi-webhooks',
          'x-terapi-delivery': delivery.id,
          'x-terapi-timestamp': timestamp,
          'x-terapi-signature': signature(this.options.secret, timestamp, body),
        },
        throwHttpErrors: false,
        retry: { limit: 0 },
        followRedirect: false,
        timeout: { request: 10_000 },
      });
      status = res.statusCode;
    } catch (e) {
      this.log.warn({ delivery: delivery.id, type: delivery.event.type, err: (e as Error).message }, 'webhook not delivered: the app could not be reached');
      this.emit('delivery', { type: delivery.event.type, outcome: 'unreachable' });
      throw e;
    }
    if (status < 200 || status >= 300) {
      this.log.warn({ delivery: delivery.id, type: delivery.event.type, status }, 'webhook not delivered: the app answered an error');
      this.emit('delivery', { type: delivery.event.type, outcome: 'refused' });
      throw new Error(`the app answered HTTP ${status}`);
    }
    this.log.info({ delivery: delivery.id, type: delivery.event.type }, 'webhook delivered');
    this.emit('delivery', { type: delivery.event.type, outcome: 'delivered' });
  }
}

/** `sha256=` + hex HMAC-SHA256 of `<timestamp>.<body>` under the secret key. */
export function signature(secret: string, timestamp: string, body: string): string {
  return `sha256=${createHmac('sha256', secret).update(`${timestamp}.${body}`).digest('hex')}`;
}
