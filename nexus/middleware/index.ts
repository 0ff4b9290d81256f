// Middleware: wrappers around any NexusPort. Impairment is here; the pcapng
// tap and the tracer join as they land.
export { impair, type ImpairOptions, type ImpairedPort, type ImpairDirectionCounters, type ImpairPoolReport } from './impair.js'
export { ImpairModel, resolveImpairOptions, type ImpairDirectionOptions, type ImpairPlan } from './impair-model.js'
export { realClock, VirtualClock, type TimerClock, type TimerHandle } from './impair-clock.js'
export { Xoshiro128, decisionHash, decisionUnit, mix32 } from './impair-random.js'
export { DepartureQueue } from './impair-queue.js'
