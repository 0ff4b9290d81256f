// Counters in `netstat -s` / /proc/net/snmp families (names as Linux spells
// them), plain numbers in plain objects: the shell copies them into the
// shared stats region; nothing here allocates when counting.

export function ipCounters() {
  return {
    InReceives: 0,
    InHdrErrors: 0,
    InAddrErrors: 0,
    InUnknownProtos: 0,
    InDiscards: 0,
    InDelivers: 0,
    InTruncatedPkts: 0,
    InCsumErrors: 0,
    OutRequests: 0,
    OutDiscards: 0,
    OutNoRoutes: 0,
    ReasmTimeout: 0,
    ReasmReqds: 0,
    ReasmOKs: 0,
    ReasmFails: 0,
    ReasmOverlaps: 0,
    FragOKs: 0,
    FragFails: 0,
    FragCreates: 0,
  }
}
export type IpCounters = ReturnType<typeof ipCounters>

export function icmpCounters() {
  return {
    InMsgs: 0,
    InErrors: 0,
    InCsumErrors: 0,
    InDestUnreachs: 0,
    InTimeExcds: 0,
    InParmProbs: 0,
    InPktTooBigs: 0,
    InEchos: 0,
    InEchoReps: 0,
    InRouterAdvertisements: 0,
    InRouterSolicits: 0,
    InNeighborSolicits: 0,
    InNeighborAdvertisements: 0,
    InRedirects: 0,
    OutMsgs: 0,
    OutErrors: 0,
    OutRateLimited: 0,
    OutDestUnreachs: 0,
    OutTimeExcds: 0,
    OutParmProbs: 0,
    OutPktTooBigs: 0,
    OutEchos: 0,
    OutEchoReps: 0,
    OutNeighborSolicits: 0,
    OutNeighborAdvertisements: 0,
    OutRouterSolicits: 0,
  }
}
export type IcmpCounters = ReturnType<typeof icmpCounters>

export function udpCounters() {
  return {
    InDatagrams: 0,
    NoPorts: 0,
    InErrors: 0,
    InCsumErrors: 0,
    RcvbufErrors: 0,
    OutDatagrams: 0,
    SndbufErrors: 0,
  }
}
export type UdpCounters = ReturnType<typeof udpCounters>

export function arpCounters() {
  return {
    InRequests: 0,
    InReplies: 0,
    InErrors: 0,
    OutRequests: 0,
    OutReplies: 0,
    OutGratuitous: 0,
    AddressConflicts: 0,
  }
}
export type ArpCounters = ReturnType<typeof arpCounters>

export function linkCounters() {
  return {
    InFrames: 0,
    InErrors: 0,
    InUnknownEthertype: 0,
    InOtherHost: 0,
    OutFrames: 0,
    OutNoBuffer: 0,
  }
}
export type LinkCounters = ReturnType<typeof linkCounters>

export interface StackCounters {
  link: LinkCounters
  arp: ArpCounters
  ip: IpCounters
  ip6: IpCounters
  icmp: IcmpCounters
  icmp6: IcmpCounters
  udp: UdpCounters
  udp6: UdpCounters
}
