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
 *   tcp-send   DST_IP PORT SECONDS [CC]        kernel TCP sender: connect, write() 256 KiB at a
 *                                              time until SECONDS pass, then FIN; prints
 *                                              "BYTES_WRITTEN CPU_SECONDS"; CC picks the
 *                                              congestion control (TCP_CONGESTION)
 *   tun-sink   NAME SECONDS                    minimal TCP receiver on an existing vnet_hdr TUN
 *                                              (the C counterpart of bench/native-tcp-sink.ts,
 *                                              same ACK policy): answers a SYN, ACKs in-order
 *                                              data, FIN -> ACK+FIN (and exits); prints "ready",
 *                                              then "PAYLOAD_BYTES ACTIVE_SECONDS CPU_SECONDS
 *                                              ACKS READS"
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <linux/if_tun.h>
#include <linux/virtio_net.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
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

static double cpu_seconds(void) {
  struct rusage usage;
  getrusage(RUSAGE_SELF, &usage);
  return usage.ru_utime.tv_sec + usage.ru_utime.tv_usec / 1e6 + usage.ru_stime.tv_sec + usage.ru_stime.tv_usec / 1e6;
}

static int tcp_send(char **argv) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) die("socket");
  struct sockaddr_in dst = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[1]))};
  inet_pton(AF_INET, argv[0], &dst.sin_addr);
  /* Bounded: a sink that stops reading must not hang the sender. */
  struct timeval timeout = {.tv_sec = 1};
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof(timeout));
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  if (argv[3] != NULL && setsockopt(fd, IPPROTO_TCP, TCP_CONGESTION, argv[3], (socklen_t)strlen(argv[3])) < 0) die("TCP_CONGESTION");
  if (connect(fd, (struct sockaddr *)&dst, sizeof(dst)) < 0) die("connect");
  static uint8_t chunk[256 * 1024];
  double end = now() + atof(argv[2]);
  long long written = 0;
  while (now() < end) {
    ssize_t n = write(fd, chunk, sizeof(chunk));
    if (n > 0) written += n;
    else if (n < 0 && errno != EAGAIN && errno != EINTR) die("write");
  }
  shutdown(fd, SHUT_WR);
  uint8_t sink[64];
  (void)!read(fd, sink, sizeof(sink)); /* the peer's FIN, or the 1 s timeout */
  printf("%lld %.6f\n", written, cpu_seconds());
  return 0;
}

/*
 * The bench's minimal TCP receiver (IPv4, one connection at a time), written
 * exactly like bench/native-tcp-sink.ts so the two are comparable:
 *  - SYN -> SYN-ACK with MSS and window scale (no SACK, no timestamps);
 *  - in-order data advances rcv_nxt; an ACK goes out for every second
 *    in-order super-packet (RFC 5681 4.2's "every second full-sized segment",
 *    applied to what GRO would have merged) and at the end of each read batch;
 *  - out-of-order or duplicate data: an immediate (duplicate) ACK;
 *  - FIN in order -> ACK + our FIN; RST forgets the connection.
 * The advertised window is 65535 << 7 (8 MiB). Checksums of our packets are
 * complete (gso_type NONE, no NEEDS_CSUM); received checksums are trusted
 * like a virtio receiver trusts NEEDS_CSUM packets.
 */
#define SINK_WINDOW_SCALE 7
#define SINK_MSS 1460

struct sink {
  int active;
  uint32_t local_addr, peer_addr; /* network order */
  uint16_t local_port, peer_port; /* network order */
  uint32_t rcv_nxt, snd_nxt, iss;
  int peer_scales, fin_acked, unacked_segments;
  long long payload;
  long acks;
  double first, last;
};

static uint16_t csum_fold(uint32_t sum) {
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return (uint16_t)~sum;
}

static uint32_t csum_add(const uint8_t *p, size_t n, uint32_t sum) {
  for (size_t i = 0; i + 1 < n; i += 2) sum += (uint32_t)(p[i] << 8 | p[i + 1]);
  if (n & 1) sum += (uint32_t)p[n - 1] << 8;
  return sum;
}

static void put16(uint8_t *p, uint16_t v) { p[0] = v >> 8; p[1] = v & 0xff; }
static void put32(uint8_t *p, uint32_t v) { put16(p, v >> 16); put16(p + 2, v & 0xffff); }
static uint32_t get32(const uint8_t *p) { return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]; }

static void sink_reply(int fd, struct sink *s, uint8_t flags) {
  uint8_t pkt[12 + 20 + 28];
  memset(pkt, 0, sizeof(pkt));
  uint8_t *ip = pkt + 12, *tcp = ip + 20;
  size_t tcp_len = (flags & TH_SYN) ? 28 : 20;
  ip[0] = 0x45;
  put16(ip + 2, (uint16_t)(20 + tcp_len));
  ip[6] = 0x40; /* DF */
  ip[8] = 64;
  ip[9] = IPPROTO_TCP;
  memcpy(ip + 12, &s->local_addr, 4);
  memcpy(ip + 16, &s->peer_addr, 4);
  put16(ip + 10, csum_fold(csum_add(ip, 20, 0)));
  memcpy(tcp, &s->local_port, 2);
  memcpy(tcp + 2, &s->peer_port, 2);
  put32(tcp + 4, (flags & TH_SYN) ? s->iss : s->snd_nxt);
  put32(tcp + 8, s->rcv_nxt);
  tcp[12] = (uint8_t)((tcp_len / 4) << 4);
  tcp[13] = flags;
  put16(tcp + 14, 65535);
  if (flags & TH_SYN) {
    tcp[20] = 2, tcp[21] = 4;
    put16(tcp + 22, SINK_MSS);
    tcp[24] = 1;
    if (s->peer_scales) tcp[25] = 3, tcp[26] = 3, tcp[27] = SINK_WINDOW_SCALE;
    else tcp[25] = tcp[26] = tcp[27] = 1;
  }
  uint32_t pseudo = csum_add(ip + 12, 8, 0) + IPPROTO_TCP + (uint32_t)tcp_len;
  put16(tcp + 16, csum_fold(csum_add(tcp, tcp_len, pseudo)));
  if (write(fd, pkt, 12 + 20 + tcp_len) < 0 && errno != EAGAIN) die("write ack");
  s->acks++;
  s->unacked_segments = 0;
}

/* One read packet (vnet header first). */
static void sink_packet(int fd, struct sink *s, const uint8_t *p, ssize_t n) {
  if (n < 12 + 40) return;
  const uint8_t *ip = p + 12;
  size_t ihl = (size_t)(ip[0] & 15) * 4;
  if ((ip[0] >> 4) != 4 || ip[9] != IPPROTO_TCP || ihl < 20 || (ssize_t)(12 + ihl + 20) > n) return;
  size_t total = (size_t)(ip[2] << 8 | ip[3]);
  if (total > (size_t)(n - 12)) total = (size_t)(n - 12);
  const uint8_t *tcp = ip + ihl;
  size_t doff = (size_t)(tcp[12] >> 4) * 4;
  if (doff < 20 || ihl + doff > total) return;
  uint8_t flags = tcp[13];
  uint32_t seq = get32(tcp + 4);
  uint32_t len = (uint32_t)(total - ihl - doff);
  if (flags & TH_SYN) {
    if (flags & TH_ACK) return;
    memcpy(&s->local_addr, ip + 16, 4);
    memcpy(&s->peer_addr, ip + 12, 4);
    memcpy(&s->local_port, tcp + 2, 2);
    memcpy(&s->peer_port, tcp, 2);
    s->peer_scales = 0;
    for (size_t at = 20; at < doff;) {
      uint8_t kind = tcp[at];
      if (kind == 0) break;
      if (kind == 1) { at++; continue; }
      if (at + 1 >= doff || tcp[at + 1] < 2) break;
      if (kind == 3) s->peer_scales = 1;
      at += tcp[at + 1];
    }
    s->active = 1;
    s->rcv_nxt = seq + 1;
    s->iss = 0x10000000;
    s->snd_nxt = s->iss + 1;
    s->fin_acked = 0;
    s->unacked_segments = 0;
    sink_reply(fd, s, TH_SYN | TH_ACK);
    return;
  }
  if (!s->active || memcmp(&s->peer_addr, ip + 12, 4) || memcmp(&s->peer_port, tcp, 2) || memcmp(&s->local_port, tcp + 2, 2)) return;
  if (flags & TH_RST) {
    s->active = 0;
    return;
  }
  int32_t ahead = (int32_t)(seq - s->rcv_nxt);
  int32_t end = ahead + (int32_t)len;
  if (len > 0) {
    if (ahead > 0 || end <= 0) {
      sink_reply(fd, s, TH_ACK); /* out of order or duplicate: duplicate ACK now */
      return;
    }
    s->rcv_nxt += (uint32_t)end;
    s->payload += end;
    s->last = now();
    if (s->first == 0) s->first = s->last;
    if (++s->unacked_segments >= 2) sink_reply(fd, s, TH_ACK);
  }
  if ((flags & TH_FIN) && seq + len == s->rcv_nxt) {
    s->rcv_nxt++;
    if (!s->fin_acked) {
      sink_reply(fd, s, TH_ACK | TH_FIN);
      s->snd_nxt++;
      s->fin_acked = 1;
    } else {
      sink_reply(fd, s, TH_ACK);
    }
    return;
  }
}

static int tun_sink(char **argv) {
  int fd = open_tun(argv[0], 1, 0);
  static uint8_t buf[70000];
  struct sink s;
  memset(&s, 0, sizeof(s));
  double end = now() + atof(argv[1]);
  long reads = 0;
  struct pollfd pfd = {.fd = fd, .events = POLLIN};
  printf("ready\n");
  fflush(stdout);
  while (now() < end && !s.fin_acked) {
    int got = 0;
    for (int k = 0; k < BATCH; k++) {
      ssize_t n = read(fd, buf, sizeof(buf));
      if (n <= 0) break;
      got++;
      sink_packet(fd, &s, buf, n);
    }
    reads += got;
    if (s.active && s.unacked_segments > 0) sink_reply(fd, &s, TH_ACK); /* one ACK per batch at least */
    if (!got) poll(&pfd, 1, 10);
  }
  printf("%lld %.6f %.6f %ld %ld\n", s.payload, s.last - s.first, cpu_seconds(), s.acks, reads);
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
  if (!strcmp(argv[1], "tcp-send") && argc >= 5) return tcp_send(argv + 2);
  if (!strcmp(argv[1], "tun-sink") && argc >= 4) return tun_sink(argv + 2);
  fprintf(stderr, "usage: see the comment at the top of nexus_loop.c\n");
  return 2;
}
