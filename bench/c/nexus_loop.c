/*
 * Plain C packet loops: the baseline the nexus benchmark compares with, on the
 * same devices in the same run. Each mode runs for a number of seconds and
 * prints one line: the packet count.
 *
 *   flood-udp  DST_IP PORT SECONDS SIZE        kernel UDP sender (sendmmsg, 64 per call)
 *   tun-read   NAME SECONDS VNET TAP           read() loop on a TUN/TAP device
 *   tun-write  NAME SECONDS VNET TAP HEX       write() loop of one packet
 *   pkt-read   IFNAME SECONDS                  TPACKET_V3 ring reader
 *   pkt-write  IFNAME SECONDS HEX              AF_PACKET sendmmsg loop (64 per call)
 *   tun-relay  NAME_A NETNS_B NAME_B SECONDS   relay between two existing vnet_hdr TUNs,
 *                                              (B attached after setns into the netns file
 *                                              NETNS_B), forwarding the read buffer itself;
 *                                              prints "PAYLOAD_BYTES ACTIVE_SECONDS CPU_SECONDS":
 *                                              TCP payload read from A, the time from its
 *                                              first to its last payload-carrying read, and
 *                                              the relay's own user+system CPU time
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <poll.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define BATCH 64

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void die(const char *what) {
  perror(what);
  exit(1);
}

static size_t from_hex(const char *hex, uint8_t *out, size_t cap) {
  size_t n = strlen(hex) / 2;
  if (n > cap) n = cap;
  for (size_t i = 0; i < n; i++) sscanf(hex + 2 * i, "%2hhx", &out[i]);
  return n;
}

static int open_tun(const char *name, int vnet, int tap) {
  int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK);
  if (fd < 0) die("open /dev/net/tun");
  struct ifreq ifr;
  memset(&ifr, 0, sizeof(ifr));
  strncpy(ifr.ifr_name, name, IFNAMSIZ - 1);
  ifr.ifr_flags = (tap ? IFF_TAP : IFF_TUN) | IFF_NO_PI | (vnet ? IFF_VNET_HDR : 0);
  if (ioctl(fd, TUNSETIFF, &ifr) < 0) die("TUNSETIFF");
  if (vnet) {
    int size = 12;
    if (ioctl(fd, TUNSETVNETHDRSZ, &size) < 0) die("TUNSETVNETHDRSZ");
    if (ioctl(fd, TUNSETOFFLOAD, TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6) < 0) die("TUNSETOFFLOAD");
  }
  return fd;
}

static int flood_udp(char **argv) {
  int fd = socket(AF_INET, SOCK_DGRAM, 0);
  struct sockaddr_in dst = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[1]))};
  inet_pton(AF_INET, argv[0], &dst.sin_addr);
  if (connect(fd, (struct sockaddr *)&dst, sizeof(dst)) < 0) die("connect");
  double end = now() + atof(argv[2]);
  size_t size = atoi(argv[3]);
  static uint8_t payload[2048];
  struct iovec iov[BATCH];
  struct mmsghdr msgs[BATCH];
  memset(msgs, 0, sizeof(msgs));
  for (int i = 0; i < BATCH; i++) {
    iov[i].iov_base = payload;
    iov[i].iov_len = size;
    msgs[i].msg_hdr.msg_iov = &iov[i];
    msgs[i].msg_hdr.msg_iovlen = 1;
  }
  long sent = 0;
  while (now() < end) {
    int rc = sendmmsg(fd, msgs, BATCH, 0);
    if (rc > 0) sent += rc;
  }
  printf("%ld\n", sent);
  return 0;
}

static int tun_read(char **argv) {
  int fd = open_tun(argv[0], atoi(argv[2]), atoi(argv[3]));
  static uint8_t buf[70000];
  double end = now() + atof(argv[1]);
  long packets = 0;
  struct pollfd pfd = {.fd = fd, .events = POLLIN};
  while (now() < end) {
    ssize_t n = read(fd, buf, sizeof(buf));
    if (n > 0) {
      packets++;
    } else if (errno == EAGAIN) {
      poll(&pfd, 1, 10);
    }
  }
  printf("%ld\n", packets);
  return 0;
}

static int tun_write(char **argv) {
  int vnet = atoi(argv[2]);
  int fd = open_tun(argv[0], vnet, atoi(argv[3]));
  static uint8_t packet[2048];
  size_t len = from_hex(argv[4], packet, sizeof(packet));
  static uint8_t zero_hdr[12];
  struct iovec iov[2] = {{zero_hdr, 12}, {packet, len}};
  double end = now() + atof(argv[1]);
  long packets = 0;
  while (now() < end) {
    for (int i = 0; i < BATCH; i++) {
      ssize_t n = vnet ? writev(fd, iov, 2) : write(fd, packet, len);
      if (n > 0) packets++;
    }
  }
  printf("%ld\n", packets);
  return 0;
}

static int packet_socket(void) {
  int fd = socket(AF_PACKET, SOCK_RAW, 0);
  if (fd < 0) die("socket");
  int version = TPACKET_V3;
  if (setsockopt(fd, SOL_PACKET, PACKET_VERSION, &version, sizeof(version)) < 0) die("PACKET_VERSION");
  return fd;
}

static void bind_packet(int fd, const char *ifname) {
  struct sockaddr_ll addr = {.sll_family = AF_PACKET, .sll_protocol = htons(ETH_P_ALL), .sll_ifindex = (int)if_nametoindex(ifname)};
  if (bind(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) die("bind");
}

static int pkt_read(char **argv) {
  int fd = packet_socket();
  struct tpacket_req3 req = {.tp_block_size = 1 << 20, .tp_block_nr = 8, .tp_frame_size = 2048, .tp_frame_nr = (1 << 20) / 2048 * 8, .tp_retire_blk_tov = 1};
  if (setsockopt(fd, SOL_PACKET, PACKET_RX_RING, &req, sizeof(req)) < 0) die("PACKET_RX_RING");
  uint8_t *ring = mmap(NULL, (size_t)req.tp_block_size * req.tp_block_nr, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (ring == MAP_FAILED) die("mmap");
  bind_packet(fd, argv[0]);
  double end = now() + atof(argv[1]);
  long packets = 0;
  unsigned block = 0;
  struct pollfd pfd = {.fd = fd, .events = POLLIN};
  while (now() < end) {
    struct tpacket_block_desc *bd = (struct tpacket_block_desc *)(ring + (size_t)block * req.tp_block_size);
    if (!(__atomic_load_n(&bd->hdr.bh1.block_status, __ATOMIC_ACQUIRE) & TP_STATUS_USER)) {
      poll(&pfd, 1, 10);
      continue;
    }
    /* Touch every frame the way a consumer would (read its length). */
    struct tpacket3_hdr *f = (struct tpacket3_hdr *)((uint8_t *)bd + bd->hdr.bh1.offset_to_first_pkt);
    volatile uint32_t sink = 0;
    for (uint32_t i = 0; i < bd->hdr.bh1.num_pkts; i++) {
      sink += f->tp_snaplen;
      f = (struct tpacket3_hdr *)((uint8_t *)f + f->tp_next_offset);
    }
    (void)sink;
    packets += bd->hdr.bh1.num_pkts;
    __atomic_store_n(&bd->hdr.bh1.block_status, TP_STATUS_KERNEL, __ATOMIC_RELEASE);
    block = (block + 1) % req.tp_block_nr;
  }
  printf("%ld\n", packets);
  return 0;
}

static int pkt_write(char **argv) {
  int fd = socket(AF_PACKET, SOCK_RAW, 0);
  if (fd < 0) die("socket");
  bind_packet(fd, argv[0]);
  static uint8_t frame[2048];
  size_t len = from_hex(argv[2], frame, sizeof(frame));
  struct iovec iov[BATCH];
  struct mmsghdr msgs[BATCH];
  memset(msgs, 0, sizeof(msgs));
  for (int i = 0; i < BATCH; i++) {
    iov[i].iov_base = frame;
    iov[i].iov_len = len;
    msgs[i].msg_hdr.msg_iov = &iov[i];
    msgs[i].msg_hdr.msg_iovlen = 1;
  }
  double end = now() + atof(argv[1]);
  long packets = 0;
  while (now() < end) {
    int rc = sendmmsg(fd, msgs, BATCH, 0);
    if (rc > 0) packets += rc;
  }
  printf("%ld\n", packets);
  return 0;
}

/* TCP payload bytes of one vnet_hdr read (12-byte header, then IPv4/IPv6). */
static long tcp_payload(const uint8_t *p, ssize_t n) {
  const uint8_t *ip = p + 12;
  ssize_t len = n - 12;
  size_t l3;
  if (len >= 20 && (ip[0] >> 4) == 4 && ip[9] == 6) l3 = (size_t)(ip[0] & 15) * 4;
  else if (len >= 40 && (ip[0] >> 4) == 6 && ip[6] == 6) l3 = 40;
  else return 0;
  if ((ssize_t)(l3 + 20) > len) return 0;
  size_t l4 = (size_t)(ip[l3 + 12] >> 4) * 4;
  return len > (ssize_t)(l3 + l4) ? (long)(len - l3 - l4) : 0;
}

static int tun_relay(char **argv) {
  int a = open_tun(argv[0], 1, 0);
  int ns = open(argv[1], O_RDONLY);
  if (ns < 0 || setns(ns, CLONE_NEWNET) < 0) die("setns");
  int b = open_tun(argv[2], 1, 0);
  static uint8_t buf[70000];
  double end = now() + atof(argv[3]), first = 0, last = 0;
  long long payload = 0;
  struct pollfd pfd[2] = {{.fd = a, .events = POLLIN}, {.fd = b, .events = POLLIN}};
  while (now() < end) {
    int moved = 0;
    for (int k = 0; k < BATCH; k++) {
      ssize_t n = read(a, buf, sizeof(buf));
      if (n <= 0) break;
      moved++;
      long bytes = tcp_payload(buf, n);
      if (bytes > 0) {
        last = now();
        if (first == 0) first = last;
        payload += bytes;
      }
      if (write(b, buf, n) < 0 && errno != EAGAIN) die("write B");
    }
    for (int k = 0; k < BATCH; k++) {
      ssize_t n = read(b, buf, sizeof(buf));
      if (n <= 0) break;
      moved++;
      if (write(a, buf, n) < 0 && errno != EAGAIN) die("write A");
    }
    if (!moved) poll(pfd, 2, 10);
  }
  struct rusage usage;
  getrusage(RUSAGE_SELF, &usage);
  double cpu = usage.ru_utime.tv_sec + usage.ru_utime.tv_usec / 1e6 + usage.ru_stime.tv_sec + usage.ru_stime.tv_usec / 1e6;
  printf("%lld %.6f %.6f\n", payload, last - first, cpu);
  return 0;
}

int main(int argc, char **argv) {
  if (argc < 2) return 2;
  if (!strcmp(argv[1], "flood-udp") && argc >= 6) return flood_udp(argv + 2);
  if (!strcmp(argv[1], "tun-read") && argc >= 6) return tun_read(argv + 2);
  if (!strcmp(argv[1], "tun-write") && argc >= 7) return tun_write(argv + 2);
  if (!strcmp(argv[1], "pkt-read") && argc >= 4) return pkt_read(argv + 2);
  if (!strcmp(argv[1], "pkt-write") && argc >= 5) return pkt_write(argv + 2);
  if (!strcmp(argv[1], "tun-relay") && argc >= 6) return tun_relay(argv + 2);
  fprintf(stderr, "usage: see the comment at the top of nexus_loop.c\n");
  return 2;
}
