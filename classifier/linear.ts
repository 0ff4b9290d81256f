// Rules checked one by one in priority order: the plain baseline the
// tuple-space RuleSet is measured against (bench/classifier.bench.ts), kept
// numeric and allocation-free so the comparison is about the algorithm.
import { Direction, W_LOCAL, W_META, W_PORTS, W_REMOTE, prefixMask, protocolHasPorts } from './key.js'
import type { RuleSpec } from './rules.js'

const STRIDE = 24

export class LinearRuleScan {
  private readonly order: Int32Array
  /** Per rule (in priority order), STRIDE words: see the constructor. */
  private readonly words: Uint32Array
  private readonly ranges: Int32Array

  constructor(readonly rules: readonly RuleSpec[]) {
    const order = rules.map((_, i) => i).sort((a, b) => rules[b].priority - rules[a].priority || a - b)
    this.order = Int32Array.from(order)
    this.words = new Uint32Array(order.length * STRIDE)
    this.ranges = new Int32Array(order.length * 5)
    order.forEach((index, k) => {
      const rule = rules[index]
      const w = k * STRIDE
      const ipVersion = rule.ipVersion ?? rule.localPrefix?.ipVersion ?? rule.remotePrefix?.ipVersion
      // [0] meta mask, [1] meta value, [2] direction (0 any), [3..10] local mask/value, [11..18] remote mask/value
      let metaMask = 0
      let meta = 0
      if (ipVersion !== undefined) {
        metaMask |= 0xff000000
        meta |= ipVersion << 24
      }
      if (rule.protocol !== undefined) {
        metaMask |= 0xff0000
        meta |= rule.protocol << 16
      }
      if (rule.port !== undefined) {
        metaMask |= 0xffff
        meta |= rule.port
      }
      this.words[w] = metaMask >>> 0
      this.words[w + 1] = meta >>> 0
      this.words[w + 2] = rule.direction ?? 0
      for (const [prefix, base] of [[rule.localPrefix, w + 3], [rule.remotePrefix, w + 11]] as const) {
        if (prefix === undefined) continue
        prefixMask(prefix.length, this.words, base)
        for (let i = 0; i < 4; i++) this.words[base + 4 + i] = prefix.words[i]
      }
      const r = k * 5
      this.ranges[r] = rule.localPorts !== undefined || rule.remotePorts !== undefined ? 1 : 0
      this.ranges[r + 1] = rule.localPorts?.from ?? 0
      this.ranges[r + 2] = rule.localPorts?.to ?? 65535
      this.ranges[r + 3] = rule.remotePorts?.from ?? 0
      this.ranges[r + 4] = rule.remotePorts?.to ?? 65535
    })
  }

  lookup(key: Uint32Array, direction: Direction): number {
    const words = this.words
    const ranges = this.ranges
    const meta = key[W_META]
    for (let k = 0; k < this.order.length; k++) {
      const w = k * STRIDE
      if (((meta & words[w]) >>> 0) !== words[w + 1]) continue
      if (words[w + 2] !== 0 && words[w + 2] !== direction) continue
      let ok = true
      for (let i = 0; i < 4 && ok; i++) {
        if (((key[W_LOCAL + i] & words[w + 3 + i]) >>> 0) !== words[w + 7 + i]) ok = false
        else if (((key[W_REMOTE + i] & words[w + 11 + i]) >>> 0) !== words[w + 15 + i]) ok = false
      }
      if (!ok) continue
      const r = k * 5
      if (ranges[r] === 1) {
        if (!protocolHasPorts((meta >>> 16) & 0xff)) continue
        const local = key[W_PORTS] >>> 16
        const remote = key[W_PORTS] & 0xffff
        if (local < ranges[r + 1] || local > ranges[r + 2] || remote < ranges[r + 3] || remote > ranges[r + 4]) continue
      }
      return this.order[k]
    }
    return -1
  }
}
