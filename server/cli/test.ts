import { resolve } from 'node:path';
import type { Command } from 'commander';
import { replay, type ReplayReport } from '../replay/replay.ts';

/**
 * `terapi test [providers...]` replays providers' recorded exchanges offline through the real engine
 * (CONTRIBUTING.md, "Testing offline"): the requests Terapi sends are checked against the
 * recordings, the records and action results against the snapshots beside them. Exit 1 on any difference.
 */
export function test(program: Command): void {
  program
    .command('test')
    .description("replay providers' recorded HTTP exchanges offline and check requests, records and outputs")
    .argument('[providers...]', 'provider names (default: every provider of the folder)')
    .option('--update', 'write the snapshots of records and outputs instead of comparing them (review them in the diff)')
    .option('--dir <folder>', 'the folder of provider files and their <name>.recordings folders (default: the built-in providers)')
    .addHelpText(
      'after',
      `
Each provider's recordings are in <folder>/<name>.recordings/: connection.yaml, one file per sync or
action, and a <file>.snapshot.yaml beside each. Nothing leaves the machine: the provider's hosts are
played by local servers on 127.0.0.1.`,
    )
    .action(async (providers: string[], options: { update?: boolean; dir?: string }) => {
      const report = await replay({ providers: providers.length ? providers : undefined, update: options.update, dir: options.dir ? resolve(options.dir) : undefined });
      process.exitCode = print(report, options.update === true);
    });
}

function print(report: ReplayReport, update: boolean): number {
  let failed = 0;
  let written = 0;
  let recordings = 0;
  for (const p of report.results) {
    const bad = p.problems.length || p.recordings.some((r) => r.problems.length);
    console.log(`${bad ? '✗' : '✓'} ${p.provider}`);
    for (const problem of p.problems) console.log(indent(problem));
    for (const r of p.recordings) {
      recordings++;
      if (!p.replayed) {
        console.log(`  - ${r.kind} ${r.target} (${r.file}): not replayed`);
        continue;
      }
      if (r.problems.length) failed++;
      if (r.written) written++;
      const what = `${r.kind} ${r.target} (${r.file}, ${r.answered}/${r.exchanges} exchange${r.exchanges === 1 ? '' : 's'})${r.written ? ': snapshot written' : ''}`;
      console.log(`  ${r.problems.length ? '✗' : '✓'} ${what}`);
      for (const problem of r.problems) console.log(indent(problem, '      '));
    }
  }
  const providers = report.results.length;
  const troubled = report.results.filter((p) => p.problems.length).length;
  const outcome = failed || troubled ? [failed ? `${failed} failed` : '', troubled ? `${troubled} provider${troubled === 1 ? '' : 's'} with problems` : ''].filter(Boolean).join(', ') : 'all passed';
  console.log(`\n${providers} provider${providers === 1 ? '' : 's'}, ${recordings} recording${recordings === 1 ? '' : 's'}: ${outcome}${update ? `, ${written} snapshot${written === 1 ? '' : 's'} written` : ''} (${(report.ms / 1000).toFixed(1)} s)`);
  return failed || troubled ? 1 : 0;
}

const indent = (text: string, pad = '    ') => text.split('\n').map((l) => pad + l).join('\n');
