/** The server as `terapi start` runs it, for `node --import tsx server/main.ts`. */
const { run } = await import('./cli.ts');

await run(['start']);
