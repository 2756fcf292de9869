#!/usr/bin/env node
// The `terapi` command: TypeScript runs through tsx, registered here before the CLI is imported.
import 'tsx';
await import('./cli.ts');
