/** The server as `terapi start` runs it, for `node --import tsx server/main.ts`. */
// SQLite statements run on libuv's thread pool (4 threads by default), shared by every worker
// thread: a few statements waiting for the file's write lock must not leave none for the one that
// would release it. Set before anything uses the pool.
process.env.UV_THREADPOOL_SIZE ??= '16';
const { run } = await import('./cli.ts');

await run(['start']);
