/**
 * Headless Chromium for the tests of Terapi's pages (the connect UI, the dashboard): Debian's
 * chromium driven by playwright-core. .ci/run installs chromium where it is missing; a machine
 * without it fails these tests, never skips them.
 */
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { chromium, type Browser, type ConsoleMessage, type Page } from 'playwright-core';
import { ROOT } from './support.ts';

export const CHROMIUM = process.env.TERAPI_TEST_CHROMIUM ?? '/usr/bin/chromium';

/** Screenshots of the browser tests, kept as artifacts (gitignored). */
export const SCREENSHOTS = join(ROOT, 'test-artifacts', 'screenshots');

export async function launchChromium(): Promise<Browser> {
  if (!existsSync(CHROMIUM)) throw new Error(`Chromium is not installed at ${CHROMIUM}: apt-get install -y chromium (.ci/run does), or set TERAPI_TEST_CHROMIUM`);
  mkdirSync(SCREENSHOTS, { recursive: true });
  console.log(`screenshots: ${SCREENSHOTS}`);
  // The flags this machine needs: run as root, no GPU, and no calls home (the network is closed).
  return chromium.launch({
    executablePath: CHROMIUM,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--disable-default-apps'],
  });
}

/** Saves a screenshot of `page` as `<name>.png` among the artifacts. */
export async function screenshot(page: Page, name: string): Promise<void> {
  await page.screenshot({ path: join(SCREENSHOTS, `${name}.png`), fullPage: true });
}

/**
 * Collects what the page reports that a user would never see but a test must: errors thrown by
 * its scripts, and Content-Security-Policy refusals (an inline script or style, a foreign image).
 */
export function watchConsole(page: Page): string[] {
  const problems: string[] = [];
  page.on('console', (m: ConsoleMessage) => {
    // An error answer the page handles is the API's business, tested through the API.
    if (m.type() === 'error' && !/^Failed to load resource: the server responded with a status of 4\d\d/.test(m.text())) problems.push(`${page.url()}: ${m.text()}`);
  });
  page.on('pageerror', (e) => problems.push(`${page.url()}: ${e.message}`));
  page.on('response', (r) => {
    if (r.status() === 404) problems.push(`${page.url()}: ${r.url()} is not found`);
  });
  return problems;
}

/** Whether the page fits its viewport's width (a phone's): nothing to scroll sideways. */
export async function fitsWidth(page: Page): Promise<boolean> {
  return page.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth);
}
