// The pure stack core below TCP (TCP itself: ./tcp/index.js).
export * from './contracts.js'
export * from './counters.js'
export { createStackCore, StackCore, type StackCoreOptions, type StackCoreEvents, type RouteSpec, type LocalAddress, type AddressState } from './stack.js'
export { RoutingTable, type Route, type RouteInput, type RouteSource } from './routing.js'
export { NeighborCache, DEFAULT_NEIGHBOR_CONFIG, type NeighborConfig, type NeighborEntry, type NeighborState } from './neighbor.js'
export { Reassembler, type ReassemblyLimits, type FragmentOutcome, type ReassemblyTimeout } from './reassembly.js'
export { PmtuCache, DEFAULT_PMTU_CONFIG, type PmtuConfig } from './pmtu.js'
export { TokenBucket } from './rate-limit.js'
export {
  UdpLayer,
  UdpEndpoint,
  EPHEMERAL_PORT_MIN,
  EPHEMERAL_PORT_MAX,
  type UdpHandler,
  type UdpRemoteInfo,
  type UdpBindOptions,
  type UdpBindError,
  type UdpSendError,
  type UdpErrorCode,
} from './udp.js'
