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

program
  .command('check')
  .description('validate a config: a one-screen summary and exit 0, or every problem (path: reason) and exit 1')
  .argument('<config>', 'ProtoJSON (.json) or binary (.binpb) config')
  .action(async (config: string) => {
    const { checkCommand } = await import('./commands/check.js')
    process.exitCode = await checkCommand(config)
  })

program
  .command('classify')
  .description("print the classifier's decision for every packet of a capture, as if received on a port of the config")
  .argument('<file>', 'pcap or pcapng file')
  .requiredOption('-c, --config <config>', 'config whose rules and ports decide')
  .option('-p, --port <name>', 'ingress port (default: the first port of the config)')
  .option('-w, --workers <n>', 'worker threads for large captures', (v: string) => Number.parseInt(v, 10))
  .action(async (file: string, options: { config: string; port?: string; workers?: number }) => {
    const { classifyCommand } = await import('./commands/classify.js')
    process.exitCode = await classifyCommand(file, options)
  })

await program.parseAsync(process.argv)
