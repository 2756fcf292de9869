import { createHash } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { extname } from 'node:path';
import type { Context } from 'koa';

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
};

interface WebFile {
  text: string;
  type: string;
  etag: string;
}

/**
 * The browser side of Terapi, served as it is written (no build step): the connect UI, the
 * operator dashboard, their scripts (plain ES modules) and styles, and connect.js for the app's
 * pages. Read once at start from server/web.
 */
const folder = new URL('./web/', import.meta.url);
const files = new Map<string, WebFile>(
  readdirSync(folder)
    .filter((name) => TYPES[extname(name)])
    .map((name) => {
      const text = readFileSync(new URL(name, folder), 'utf8');
      return [name, { text, type: TYPES[extname(name)], etag: `"${createHash('sha256').update(text).digest('base64url').slice(0, 27)}"` }];
    }),
);

/**
 * The pages' policy: scripts, styles and API calls from this origin only (no inline script or
 * style anywhere), images also from https: (provider logos), no form posts, never framed.
 */
export const PAGE_CSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' https: data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/** Whether server/web has a file of this name (a script, a style) to serve under /web/. */
export const isWebFile = (name: string) => files.has(name) && !name.endsWith('.html');

/** Answers a file of server/web; 304 when the browser has it (files change only with a new version). */
export function serveFile(ctx: Context, name: string): void {
  const file = files.get(name)!;
  ctx.set('cache-control', 'no-cache');
  ctx.set('etag', file.etag);
  if (ctx.get('if-none-match') === file.etag) {
    ctx.status = 304;
    return;
  }
  ctx.type = file.type;
  ctx.body = file.text;
}

/**
 * Answers a page of server/web, with `{{name}}` filled from `values` (HTML-escaped), the page
 * policy, and `referrer` as its Referrer-Policy. Never cached: a page may be personal.
 */
export function servePage(ctx: Context, name: string, values: Record<string, string>, referrer: 'no-referrer' | 'same-origin'): void {
  ctx.type = 'text/html; charset=utf-8';
  ctx.set('cache-control', 'no-store');
  ctx.set('content-security-policy', PAGE_CSP);
  ctx.set('referrer-policy', referrer);
  ctx.body = files.get(name)!.text.replace(/\{\{(\w+)\}\}/g, (_, key: string) => escapeHtml(values[key] ?? ''));
}

export const escapeHtml = (s: string) => s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
