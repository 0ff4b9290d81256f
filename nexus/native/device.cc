// Opening devices: TUN/TAP through /dev/net/tun, AF_PACKET sockets with a
// TPACKET_V3 receive ring. When a network namespace is named, the whole open
// runs on a short-lived thread that first joins that namespace with setns():
// namespaces are per thread on Linux, and descriptors keep the namespace they
// were created in, so the I/O threads never need to switch.
#include "nexus.h"

#include <arpa/inet.h>
#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_ether.h>
#include <linux/if_tun.h>
#include <net/if_arp.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

namespace flowstack {
namespace {

bool Fail(OsError* error, const char* syscall) {
  error->err = errno;
  error->syscall = syscall;
  return false;
}

void CopyName(struct ifreq* ifr, const std::string& name) {
  std::memset(ifr, 0, sizeof(*ifr));
  std::strncpy(ifr->ifr_name, name.c_str(), IFNAMSIZ - 1);
}

// Link-level settings through a throwaway datagram socket in the device's
// namespace (these ioctls need one; any family works).
bool ConfigureLink(const OpenOptions& options, OpenResult* result, OsError* error) {
  int sock = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (sock < 0) return Fail(error, "socket");
  struct ifreq ifr;
  bool ok = true;
  auto fail = [&](const char* call) {
    ok = Fail(error, call);
    return false;
  };
  do {
    if (options.mtu > 0) {
      CopyName(&ifr, result->name);
      ifr.ifr_mtu = options.mtu;
      if (ioctl(sock, SIOCSIFMTU, &ifr) < 0 && !fail("ioctl(SIOCSIFMTU)")) break;
    }
    if (options.tx_queue_len > 0) {
      CopyName(&ifr, result->name);
      ifr.ifr_qlen = options.tx_queue_len;
      if (ioctl(sock, SIOCSIFTXQLEN, &ifr) < 0 && !fail("ioctl(SIOCSIFTXQLEN)")) break;
    }
    CopyName(&ifr, result->name);
    if (ioctl(sock, SIOCGIFMTU, &ifr) < 0 && !fail("ioctl(SIOCGIFMTU)")) break;
    result->mtu = ifr.ifr_mtu;
    CopyName(&ifr, result->name);
    if (ioctl(sock, SIOCGIFINDEX, &ifr) < 0 && !fail("ioctl(SIOCGIFINDEX)")) break;
    result->ifindex = ifr.ifr_ifindex;
    if (options.kind != DeviceKind::kTun) {
      CopyName(&ifr, result->name);
      if (ioctl(sock, SIOCGIFHWADDR, &ifr) < 0 && !fail("ioctl(SIOCGIFHWADDR)")) break;
      std::memcpy(result->mac, ifr.ifr_hwaddr.sa_data, 6);
      result->has_mac = true;
    }
    if (options.up) {
      CopyName(&ifr, result->name);
      if (ioctl(sock, SIOCGIFFLAGS, &ifr) < 0 && !fail("ioctl(SIOCGIFFLAGS)")) break;
      if (!(ifr.ifr_flags & IFF_UP)) {
        ifr.ifr_flags |= IFF_UP;
        if (ioctl(sock, SIOCSIFFLAGS, &ifr) < 0 && !fail("ioctl(SIOCSIFFLAGS)")) break;
      }
    }
  } while (false);
  close(sock);
  return ok;
}

bool OpenTunQueue(const OpenOptions& options, const std::string& name, OpenResult* result, OsError* error) {
  int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) return Fail(error, "open(/dev/net/tun)");
  result->fds.push_back(fd);
  struct ifreq ifr;
  CopyName(&ifr, name);
  short flags = options.kind == DeviceKind::kTap ? IFF_TAP : IFF_TUN;
  flags |= IFF_NO_PI;
  if (options.vnet_hdr) flags |= IFF_VNET_HDR;
  if (options.multi_queue) flags |= IFF_MULTI_QUEUE;
  // Only the first queue creates; IFF_TUN_EXCL makes "create" fail with EBUSY
  // when a device of that name already exists instead of silently attaching.
  if (!options.attach && result->fds.size() == 1) flags |= IFF_TUN_EXCL;
  ifr.ifr_flags = flags;
  if (ioctl(fd, TUNSETIFF, &ifr) < 0) return Fail(error, "ioctl(TUNSETIFF)");
  result->name = ifr.ifr_name;
  if (options.vnet_hdr) {
    int size = static_cast<int>(kVirtioNetHdrBytes);
    if (ioctl(fd, TUNSETVNETHDRSZ, &size) < 0) return Fail(error, "ioctl(TUNSETVNETHDRSZ)");
    // TSO needs checksum offload; the kernel may then hand us (and accept
    // from us) packets with a partial checksum and up to 64 KiB of payload.
    unsigned long offloads = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6;
    if (ioctl(fd, TUNSETOFFLOAD, offloads) < 0) return Fail(error, "ioctl(TUNSETOFFLOAD)");
    result->vnet_hdr = result->tso4 = result->tso6 = result->csum = true;
  }
  return true;
}

bool OpenTunTap(const OpenOptions& options, OpenResult* result, OsError* error) {
  if (options.attach) {
    // TUNSETIFF would create a missing device; attaching means it must exist.
    int sock = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (sock < 0) return Fail(error, "socket");
    struct ifreq ifr;
    CopyName(&ifr, options.name);
    int rc = ioctl(sock, SIOCGIFINDEX, &ifr);
    int saved = errno;
    close(sock);
    if (rc < 0) {
      errno = saved;
      return Fail(error, "ioctl(SIOCGIFINDEX)");
    }
  }
  uint32_t queues = options.multi_queue ? options.queues : 1;
  std::string name = options.name;
  for (uint32_t q = 0; q < queues; q++) {
    if (!OpenTunQueue(options, name, result, error)) return false;
    name = result->name;  // later queues attach to what the first one created
  }
  return ConfigureLink(options, result, error);
}

bool OpenAfPacketQueue(const OpenOptions& options, OpenResult* result, OsError* error) {
  // Protocol 0 until the ring exists: nothing is queued before we can see it.
  int fd = socket(AF_PACKET, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return Fail(error, "socket(AF_PACKET)");
  result->fds.push_back(fd);
  int version = TPACKET_V3;
  if (setsockopt(fd, SOL_PACKET, PACKET_VERSION, &version, sizeof(version)) < 0) return Fail(error, "setsockopt(PACKET_VERSION)");
  // Our own transmissions would otherwise loop back into the RX ring.
  int one = 1;
  if (setsockopt(fd, SOL_PACKET, PACKET_IGNORE_OUTGOING, &one, sizeof(one)) < 0) return Fail(error, "setsockopt(PACKET_IGNORE_OUTGOING)");
  // A peer with tx checksum offload (a veth end, a local sender) hands over
  // frames whose TCP/UDP checksum is not computed yet (CHECKSUM_PARTIAL,
  // TP_STATUS_CSUMNOTREADY). PACKET_VNET_HDR makes the kernel write a struct
  // virtio_net_hdr (csum_start, csum_offset) in front of every ring frame, so
  // the I/O thread can pass that work up (DESC_VNET_HDR + NEEDS_CSUM, as on a
  // vnet_hdr TUN); it also makes every transmitted frame start with one. It
  // must precede PACKET_RX_RING. Best effort: without it (an old kernel)
  // frames arrive as before, and the I/O thread asks the socket which it is.
  (void)setsockopt(fd, SOL_PACKET, PACKET_VNET_HDR, &one, sizeof(one));
  struct tpacket_req3 req;
  std::memset(&req, 0, sizeof(req));
  req.tp_block_size = options.block_size;
  req.tp_block_nr = options.block_count;
  req.tp_frame_size = 2048;
  req.tp_frame_nr = (options.block_size / req.tp_frame_size) * options.block_count;
  // A block is handed to user space when full or when this timer expires: it
  // bounds latency at low load (DESIGN.md §8: 1 ms gave ~0.55 ms median).
  req.tp_retire_blk_tov = options.block_timeout_ms;
  if (setsockopt(fd, SOL_PACKET, PACKET_RX_RING, &req, sizeof(req)) < 0) return Fail(error, "setsockopt(PACKET_RX_RING)");
  size_t bytes = static_cast<size_t>(options.block_size) * options.block_count;
  void* ring = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_LOCKED, fd, 0);
  if (ring == MAP_FAILED) ring = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (ring == MAP_FAILED) return Fail(error, "mmap(PACKET_RX_RING)");
  result->rings.push_back(static_cast<uint8_t*>(ring));
  result->ring_bytes = bytes;
  struct sockaddr_ll addr;
  std::memset(&addr, 0, sizeof(addr));
  addr.sll_family = AF_PACKET;
  addr.sll_protocol = htons(ETH_P_ALL);
  addr.sll_ifindex = result->ifindex;
  if (bind(fd, reinterpret_cast<struct sockaddr*>(&addr), sizeof(addr)) < 0) return Fail(error, "bind(AF_PACKET)");
  if (options.promiscuous) {
    struct packet_mreq mreq;
    std::memset(&mreq, 0, sizeof(mreq));
    mreq.mr_ifindex = result->ifindex;
    mreq.mr_type = PACKET_MR_PROMISC;
    if (setsockopt(fd, SOL_PACKET, PACKET_ADD_MEMBERSHIP, &mreq, sizeof(mreq)) < 0) return Fail(error, "setsockopt(PACKET_ADD_MEMBERSHIP)");
  }
  if (options.queues > 1) {
    // Spread flows over the queues by hash, each socket with its own thread.
    int fanout = static_cast<int>((options.fanout_group & 0xffff) | (PACKET_FANOUT_HASH << 16));
    if (setsockopt(fd, SOL_PACKET, PACKET_FANOUT, &fanout, sizeof(fanout)) < 0) return Fail(error, "setsockopt(PACKET_FANOUT)");
  }
  return true;
}

bool OpenAfPacket(const OpenOptions& options, OpenResult* result, OsError* error) {
  result->name = options.name;
  // Reads MTU, index and MAC (and applies mtu/up) before the sockets bind.
  if (!ConfigureLink(options, result, error)) return false;
  for (uint32_t q = 0; q < options.queues; q++) {
    if (!OpenAfPacketQueue(options, result, error)) return false;
  }
  return true;
}

bool OpenHere(const OpenOptions& options, OpenResult* result, OsError* error) {
  if (options.kind == DeviceKind::kAfPacket) return OpenAfPacket(options, result, error);
  return OpenTunTap(options, result, error);
}

}  // namespace

void CloseDevice(OpenResult* result) {
  for (uint8_t* ring : result->rings) munmap(ring, result->ring_bytes);
  result->rings.clear();
  for (int fd : result->fds) close(fd);
  result->fds.clear();
}

bool OpenDevice(const OpenOptions& options, OpenResult* result, OsError* error) {
  bool ok = false;
  if (options.netns_path.empty()) {
    ok = OpenHere(options, result, error);
  } else {
    std::thread opener([&] {
      int nsfd = open(options.netns_path.c_str(), O_RDONLY | O_CLOEXEC);
      if (nsfd < 0) {
        Fail(error, "open(netns)");
        return;
      }
      if (setns(nsfd, CLONE_NEWNET) < 0) {
        Fail(error, "setns");
        close(nsfd);
        return;
      }
      close(nsfd);
      ok = OpenHere(options, result, error);
    });
    opener.join();
  }
  if (!ok) CloseDevice(result);
  return ok;
}

}  // namespace flowstack
