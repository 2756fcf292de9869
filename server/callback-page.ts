import { createHash } from 'node:crypto';
import type { ConnectOutcome } from '../core/auth/connect.ts';

const escape = (s: string) => s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

/**
 * The page the OAuth callback ends on: it tells the window that opened the sign-in popup how it
 * went (postMessage), then closes; opened without a popup, it just says so. It posts only to the
 * app's allowed origins (TERAPI_ALLOWED_ORIGINS): a page of any other origin that opened the popup
 * learns nothing. Its one script is allowed by its hash in the page's Content-Security-Policy.
 */
export function callbackPage(outcome: ConnectOutcome, origins: string[]): { html: string; csp: string } {
  const message = { type: 'terapi:connect', ...outcome };
  // JSON in a script: escape < so that no value can close the tag.
  const json = (v: unknown) => JSON.stringify(v).replace(/</g, '\\u003c');
  const title = outcome.ok ? 'Connected' : 'Connection failed';
  const text = outcome.ok ? 'You can close this window.' : escape(outcome.message);
  const script = `
const result = ${json(message)};
const origins = ${json(origins)};
if (window.opener) { for (const origin of origins) window.opener.postMessage(result, origin); window.close(); }
`;
  const hash = createHash('sha256').update(script).digest('base64');
  return {
    html: `<!doctype html>
<html><head><meta charset="utf-8"><title>${title}</title></head>
<body><h1>${title}</h1><p>${text}</p>
<script>${script}</script></body></html>
`,
    csp: `default-src 'none'; script-src 'sha256-${hash}'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'`,
  };
}
