// Implemented with the pcap reader and the wire layer (issue 2).
export async function decodeCommand(file: string): Promise<number> {
  process.stderr.write(`flowstack decode: not built yet (${file})\n`)
  return 2
}
