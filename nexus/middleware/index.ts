// Middleware: wrappers around any NexusPort (impairment, the pcapng tap), and
// the capture file formats the tap and the pcap port share.
export { impair, type ImpairOptions, type ImpairedPort, type ImpairDirectionCounters, type ImpairPoolReport } from './impair.js'
export { ImpairModel, resolveImpairOptions, type ImpairDirectionOptions, type ImpairPlan } from './impair-model.js'
export { realClock, VirtualClock, type TimerClock, type TimerHandle } from './impair-clock.js'
export { Xoshiro128, decisionHash, decisionUnit, mix32 } from './impair-random.js'
export { DepartureQueue } from './impair-queue.js'
export { pcapTap, type PcapTapOptions, type TapCounters, type TappedPort } from './pcap-tap.js'
export * as capture from './pcap.js'
