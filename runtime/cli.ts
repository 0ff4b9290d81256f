#!/usr/bin/env node
// The `flowstack` command. Each subcommand lives in runtime/commands/NAME.ts and
// is imported only when used, so `flowstack decode` does not load the runtime.
import { Command } from 'commander'
import { readFileSync } from 'node:fs'

// dist/runtime/cli.js when built, runtime/cli.ts under a TypeScript loader.
const packageJsonUrl = new URL(import.meta.url.endsWith('.ts') ? '../package.json' : '../../package.json', import.meta.url)
const pkg = JSON.parse(readFileSync(packageJsonUrl, 'utf8')) as { version: string }

const program = new Command()
program.name('flowstack').description('Multi-instance user-space TCP/IP stack runtime for Node.js').version(pkg.version)

program
  .command('decode')
  .description('print one JSON object per packet of a pcap or pcapng file, as the wire layer understands it')
  .argument('<file>', 'pcap or pcapng file')
  .action(async (file: string) => {
    const { decodeCommand } = await import('./commands/decode.js')
    process.exitCode = await decodeCommand(file)
  })

await program.parseAsync(process.argv)
