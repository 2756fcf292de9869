import { createHash } from 'node:crypto';
import type { ConnectOutcome } from '../core/auth/connect.ts';
import { escapeHtml } from './web.ts';

/** Where the connect UI keeps its session token in the tab (server/web/connect-page.js): cleared once connected. */
const SESSION_STORAGE_KEY = 'terapi_connect_session';

/**
 * The page the OAuth callback ends on: it tells the window that opened the sign-in popup how it
 * went (postMessage), shows it in words, and on success closes itself after a moment; on failure it
 * offers to try again (back to the connect UI, when it started there). It posts only to the app's
 * allowed origins (TERAPI_ALLOWED_ORIGINS): a page of any other origin that opened the popup
 * learns nothing. Its one script is allowed by its hash in the page's Content-Security-Policy; it
 * also takes the spent code and state out of the address bar and the tab's history.
 */
export function callbackPage(outcome: ConnectOutcome, origins: string[], displayName?: string): { html: string; csp: string } {
  const message = { type: 'terapi:connect', ...outcome };
  // JSON in a script: escape < so that no value can close the tag.
  const json = (v: unknown) => JSON.stringify(v).replace(/</g, '\\u003c');
  const name = displayName ?? outcome.provider_config_key;
  const title = outcome.ok ? (name ? `Connected to ${name}` : 'Connected') : 'Connection failed';
  const text = outcome.ok ? 'You can close this window and go back to the app.' : outcome.message;
  const script = `
const result = ${json(message)};
const origins = ${json(origins)};
history.replaceState(null, '', location.pathname);
if (result.ok) sessionStorage.removeItem(${json(SESSION_STORAGE_KEY)});
else if (!sessionStorage.getItem(${json(SESSION_STORAGE_KEY)})) document.getElementById('again').remove();
document.getElementById('close').addEventListener('click', () => window.close());
if (window.opener) {
  for (const origin of origins) window.opener.postMessage(result, origin);
  if (result.ok) setTimeout(() => window.close(), 1500);
}
`;
  const hash = createHash('sha256').update(script).digest('base64');
  const actions = outcome.ok
    ? '<button type="button" id="close" class="primary" autofocus>Close this window</button>'
    : '<a id="again" class="button primary" href="../connect">Try again</a> <button type="button" id="close">Close</button>';
  return {
    html: `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>${escapeHtml(title)}</title><link rel="icon" href="data:,"><link rel="stylesheet" href="../web/terapi.css"></head>
<body class="connect"><main class="card">
<div class="result ${outcome.ok ? 'success' : 'failure'}" role="${outcome.ok ? 'status' : 'alert'}">
<h1>${escapeHtml(title)}</h1><p>${escapeHtml(text)}</p>
</div>
<p class="actions">${actions}</p>
</main>
<script>${script}</script></body></html>
`,
    csp: `default-src 'none'; script-src 'sha256-${hash}'; style-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'`,
  };
}
