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

program
  .command('run')
  .description('run the runtime in the foreground: ports, switch, one worker per instance (SIGINT/SIGTERM stop, SIGHUP reloads rules)')
  .argument('<config>', 'ProtoJSON (.json) or binary (.binpb) config')
  .option('-s, --socket <path>', 'control socket path (default: the config\'s control.path, or $XDG_RUNTIME_DIR/flowstack.sock)')
  .action(async (config: string, options: { socket?: string }) => {
    const { runCommand } = await import('./commands/run.js')
    process.exitCode = await runCommand(config, options)
  })

program
  .command('stat')
  .description('counters of a running runtime: per port, per instance (netstat -s families) and per classifier reason')
  .option('-s, --socket <path>', 'control socket path')
  .option('--json', 'one ProtoJSON StatResponse')
  .action(async (options: { socket?: string; json?: boolean }) => {
    const { statCommand } = await import('./commands/ops.js')
    process.exitCode = await statCommand(options)
  })

program
  .command('flows')
  .description('the flow table of a running runtime: key, owner, state, packets, bytes')
  .option('-s, --socket <path>', 'control socket path')
  .option('-o, --owner <name>', 'only flows of this instance, "kernel", "drop" or "wire" (sends of an instance that nothing behind its port claimed)')
  .option('-n, --limit <n>', 'at most n flows', (v: string) => Number.parseInt(v, 10))
  .option('--json', 'one ProtoJSON FlowsResponse')
  .action(async (options: { socket?: string; json?: boolean; owner?: string; limit?: number }) => {
    const { flowsCommand } = await import('./commands/ops.js')
    process.exitCode = await flowsCommand(options)
  })

program
  .command('reload')
  .description('swap the rules of a running runtime without dropping established flows')
  .argument('[config]', 'config to take the rules from (default: the file the runtime started with)')
  .option('-s, --socket <path>', 'control socket path')
  .action(async (config: string | undefined, options: { socket?: string }) => {
    const { reloadCommand } = await import('./commands/ops.js')
    process.exitCode = await reloadCommand({ ...options, config })
  })

program
  .command('demo')
  .description('the embedded demo (what npm start runs): two instances and the switch on memory ports, no privileges')
  .action(async () => {
    const { demoCommand } = await import('./commands/demo.js')
    process.exitCode = await demoCommand()
  })

await program.parseAsync(process.argv)
