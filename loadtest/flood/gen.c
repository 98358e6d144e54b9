/*
 * A bounded UDP flood generator for loopback: sends one payload template,
 * with a per-packet counter and random hex patched in, to one 127.0.0.0/8
 * destination, from one or many 127.0.0.0/8 source addresses.
 *
 *   gen --dst 127.0.0.1:5060 --template FILE --count N --seconds S
 *       [--rate PPS] [--batch 64] [--src 127.0.0.66] [--src-port P]
 *       [--sources N [--src-mode bind|pktinfo|packet]] [--procs P]
 *       [--counter-start N] [--seed N]
 *
 * Both --count and --seconds are required; whichever is reached first ends
 * the run, and so do SIGTERM, SIGINT and an alarm a few seconds past
 * --seconds.  The destination and every source must lie in 127.0.0.0/8;
 * anything else is refused before a socket is opened.
 *
 * Sources: --src A binds one socket to A.  --sources N cycles over the N
 * consecutive addresses starting at --src (default 127.1.0.0):
 *   pktinfo  (the default) one socket, the source of each packet set with an
 *            IP_PKTINFO control message (ipi_spec_dst), batches of --batch
 *            per sendmmsg; any number of sources.  Every address of
 *            127.0.0.0/8 is local on Linux, so the kernel accepts each one as
 *            a source without IP_FREEBIND;
 *   bind     one socket per address (each bound to it, so each source has its
 *            own port too), one packet per system call in rotation; limited
 *            by the open-file limit, and slower;
 *   packet   one AF_PACKET socket on the namespace's `lo`: whole frames
 *            (Ethernet, IPv4, UDP without checksum, the payload) written
 *            with sendmmsg, so the sender skips the UDP socket layer and its
 *            route lookup and the receiving side does the work a packet from
 *            a network card does (routing input, netfilter prerouting, the
 *            socket lookup).  Needs root and `route_localnet` on `lo` (else
 *            the kernel drops 127/8 sources arriving from a device as
 *            martians): it refuses to run without it, and it is meant for a
 *            network namespace of the benchmark's own, which sets it.
 *
 * --procs P (1..16) forks P senders, each with 1/P of the count, the rate
 * and the sources (contiguous slices), and one set of statistics summed at
 * the end: one sender is bounded by one core, and the receiving kernel work
 * of a loopback packet is done on the sender's core.
 *
 * Template placeholders (each replaced by a field of fixed width, so the
 * length of every packet, and any Content-Length in it, stays the same):
 *   {{N}}  10 decimal digits: the packet's number (counter-start + index)
 *   {{R}}  32 lower-case hex digits, random per packet
 *
 * At the end one JSON line goes to stdout:
 *   {"sent":..,"errors":..,"attempted":..,"seconds":..,"pps":..,...}
 * Exit status: 0 after a run (even with send errors), 2 on bad arguments,
 * 1 when setting up the sockets failed.
 */

#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <time.h>
#include <unistd.h>

#define MAX_BATCH 1024
#define MAX_PAYLOAD 65507
#define MAX_FIELDS 64
#define N_WIDTH 10
#define R_WIDTH 32
#define MAX_ERRNO 256
#define MAX_PROCS 16
#define FRAME_HDR 42 /* Ethernet 14 + IPv4 20 + UDP 8 */

enum field_kind { F_COUNTER, F_RANDOM };

struct field {
    size_t offset;
    enum field_kind kind;
};

static volatile sig_atomic_t stop_signal = 0;

static void on_signal(int sig) { stop_signal = sig; }

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sleep_s(double s) {
    if (s <= 0)
        return;
    struct timespec ts;
    ts.tv_sec = (time_t)s;
    ts.tv_nsec = (long)((s - (double)ts.tv_sec) * 1e9);
    nanosleep(&ts, NULL); /* EINTR is fine: the loop re-checks everything */
}

static int die_usage(const char *msg) {
    fprintf(stderr, "gen: %s\n", msg);
    fprintf(stderr,
            "usage: gen --dst 127.x.y.z:PORT --template FILE --count N --seconds S\n"
            "           [--rate PPS] [--batch B] [--src ADDR] [--src-port P]\n"
            "           [--sources N] [--src-mode bind|pktinfo|packet] [--procs P]\n"
            "           [--counter-start N] [--seed N]\n");
    return 2;
}

static int is_loopback(uint32_t host_order) { return (host_order >> 24) == 127; }

/* xorshift64*: fast, good enough for nonces nobody verifies */
static uint64_t rng_state = 0x9E3779B97F4A7C15ULL;

static uint64_t rng_next(void) {
    uint64_t x = rng_state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    rng_state = x;
    return x * 0x2545F4914F6CDD1DULL;
}

static const char HEX[] = "0123456789abcdef";

static void patch(char *buf, const struct field *fields, int nfields, uint64_t number) {
    for (int f = 0; f < nfields; f++) {
        char *p = buf + fields[f].offset;
        if (fields[f].kind == F_COUNTER) {
            uint64_t v = number;
            for (int i = N_WIDTH - 1; i >= 0; i--) {
                p[i] = (char)('0' + v % 10);
                v /= 10;
            }
        } else {
            for (int i = 0; i < R_WIDTH; i += 16) {
                uint64_t r = rng_next();
                for (int j = 0; j < 16; j++) {
                    p[i + j] = HEX[r & 15];
                    r >>= 4;
                }
            }
        }
    }
}

/* Read the template and expand its placeholders to fixed-width fields. */
static int load_template(const char *path, char *out, size_t *out_len, struct field *fields,
                         int *nfields) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "gen: cannot open template %s: %s\n", path, strerror(errno));
        return -1;
    }
    static char raw[MAX_PAYLOAD + 1];
    size_t n = fread(raw, 1, sizeof raw, f);
    fclose(f);
    if (n > MAX_PAYLOAD) {
        fprintf(stderr, "gen: template larger than %d bytes\n", MAX_PAYLOAD);
        return -1;
    }
    size_t o = 0;
    *nfields = 0;
    for (size_t i = 0; i < n;) {
        int kind = -1;
        if (i + 5 <= n && memcmp(raw + i, "{{N}}", 5) == 0)
            kind = F_COUNTER;
        else if (i + 5 <= n && memcmp(raw + i, "{{R}}", 5) == 0)
            kind = F_RANDOM;
        if (kind >= 0) {
            size_t width = kind == F_COUNTER ? N_WIDTH : R_WIDTH;
            if (*nfields >= MAX_FIELDS || o + width > MAX_PAYLOAD) {
                fprintf(stderr, "gen: too many placeholders or payload too large\n");
                return -1;
            }
            fields[*nfields].offset = o;
            fields[*nfields].kind = (enum field_kind)kind;
            (*nfields)++;
            memset(out + o, '0', width);
            o += width;
            i += 5;
        } else {
            if (o + 1 > MAX_PAYLOAD) {
                fprintf(stderr, "gen: payload larger than %d bytes\n", MAX_PAYLOAD);
                return -1;
            }
            out[o++] = raw[i++];
        }
    }
    if (o == 0) {
        fprintf(stderr, "gen: empty template\n");
        return -1;
    }
    *out_len = o;
    return 0;
}

static int parse_u64(const char *s, uint64_t *v) {
    char *end;
    errno = 0;
    unsigned long long x = strtoull(s, &end, 10);
    if (errno || end == s || *end || s[0] == '-')
        return -1;
    *v = x;
    return 0;
}

enum src_mode { M_BIND, M_PKTINFO, M_PACKET };
static const char *MODE_NAMES[] = {"bind", "pktinfo", "packet"};

static int route_localnet_on(void) {
    FILE *f = fopen("/proc/sys/net/ipv4/conf/lo/route_localnet", "r");
    if (!f) return 0;
    int v = 0;
    if (fscanf(f, "%d", &v) != 1) v = 0;
    fclose(f);
    return v == 1;
}

/* What one sender was told to do. */
struct job {
    struct sockaddr_in dst;
    uint32_t src_first;
    uint64_t sources, count, counter_start, src_port;
    double seconds, rate;
    int batch;
    enum src_mode mode;
    const char *payload;
    size_t payload_len;
    const struct field *fields;
    int nfields;
};

/* What it did; summed over senders. */
struct result {
    uint64_t attempted, sent, errors, batches;
    uint64_t errno_count[MAX_ERRNO];
    double seconds;
    int nb;
    char stopped[8];
};

static uint16_t ip_checksum(const unsigned char *h) {
    uint32_t s = 0;
    for (int i = 0; i < 20; i += 2) s += (uint32_t)(h[i] << 8 | h[i + 1]);
    while (s >> 16) s = (s & 0xffff) + (s >> 16);
    return (uint16_t)~s;
}

/* Ethernet (zero addresses, as `lo` has), IPv4 and UDP headers of a frame. */
static void frame_headers(unsigned char *f, const struct job *j) {
    memset(f, 0, FRAME_HDR);
    f[12] = 0x08; /* IPv4 */
    unsigned char *ip = f + 14, *udp = f + 34;
    size_t ip_len = 28 + j->payload_len, udp_len = 8 + j->payload_len;
    ip[0] = 0x45;
    ip[2] = (unsigned char)(ip_len >> 8), ip[3] = (unsigned char)ip_len;
    ip[8] = 64, ip[9] = 17; /* TTL, UDP */
    memcpy(ip + 16, &j->dst.sin_addr.s_addr, 4);
    uint16_t sport = (uint16_t)(j->src_port ? j->src_port : 5060);
    udp[0] = (unsigned char)(sport >> 8), udp[1] = (unsigned char)sport;
    memcpy(udp + 2, &j->dst.sin_port, 2);
    udp[4] = (unsigned char)(udp_len >> 8), udp[5] = (unsigned char)udp_len;
    /* UDP checksum 0: none, allowed for IPv4 */
}

static void frame_source(unsigned char *f, uint32_t src_host_order) {
    unsigned char *ip = f + 14;
    uint32_t s = htonl(src_host_order);
    memcpy(ip + 12, &s, 4);
    ip[10] = ip[11] = 0;
    uint16_t c = ip_checksum(ip);
    ip[10] = (unsigned char)(c >> 8), ip[11] = (unsigned char)c;
}

static int run_job(const struct job *j, struct result *res);

int main(int argc, char **argv) {
    const char *dst_arg = NULL, *template_path = NULL, *src_arg = NULL, *mode_arg = "auto";
    uint64_t count = 0, sources = 0, counter_start = 0, seed = 0, batch = 64, src_port = 0;
    uint64_t procs = 1;
    double seconds = -1, rate = 0;
    int have_count = 0;

    static const struct option opts[] = {
        {"dst", required_argument, 0, 'd'},        {"template", required_argument, 0, 't'},
        {"count", required_argument, 0, 'n'},      {"seconds", required_argument, 0, 's'},
        {"rate", required_argument, 0, 'r'},       {"batch", required_argument, 0, 'b'},
        {"src", required_argument, 0, 'a'},        {"src-port", required_argument, 0, 'p'},
        {"sources", required_argument, 0, 'k'},    {"src-mode", required_argument, 0, 'm'},
        {"counter-start", required_argument, 0, 'c'}, {"seed", required_argument, 0, 'e'},
        {"procs", required_argument, 0, 'P'},
        {0, 0, 0, 0}};
    int ch;
    while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        char *end;
        switch (ch) {
        case 'd': dst_arg = optarg; break;
        case 't': template_path = optarg; break;
        case 'n':
            if (parse_u64(optarg, &count)) return die_usage("--count: not a number");
            have_count = 1;
            break;
        case 's':
            seconds = strtod(optarg, &end);
            if (*end || !(seconds > 0)) return die_usage("--seconds: give a number > 0");
            break;
        case 'r':
            rate = strtod(optarg, &end);
            if (*end || rate < 0) return die_usage("--rate: give a number >= 0");
            break;
        case 'b':
            if (parse_u64(optarg, &batch) || batch < 1 || batch > MAX_BATCH)
                return die_usage("--batch: 1..1024");
            break;
        case 'a': src_arg = optarg; break;
        case 'p':
            if (parse_u64(optarg, &src_port) || src_port > 65535) return die_usage("--src-port");
            break;
        case 'k':
            if (parse_u64(optarg, &sources) || sources < 1) return die_usage("--sources: >= 1");
            break;
        case 'm': mode_arg = optarg; break;
        case 'c':
            if (parse_u64(optarg, &counter_start)) return die_usage("--counter-start");
            break;
        case 'e':
            if (parse_u64(optarg, &seed)) return die_usage("--seed");
            break;
        case 'P':
            if (parse_u64(optarg, &procs) || procs < 1 || procs > MAX_PROCS)
                return die_usage("--procs: 1..16");
            break;
        default: return die_usage("unknown option");
        }
    }
    if (optind != argc) return die_usage("unexpected argument");
    if (!dst_arg || !template_path) return die_usage("--dst and --template are required");
    if (!have_count || count < 1) return die_usage("--count is required (>= 1)");
    if (seconds <= 0) return die_usage("--seconds is required (> 0)");
    if (seconds > 3600) return die_usage("--seconds: at most 3600");

    /* destination: 127.x.y.z:port only */
    char dst_host[64];
    const char *colon = strrchr(dst_arg, ':');
    if (!colon || (size_t)(colon - dst_arg) >= sizeof dst_host)
        return die_usage("--dst: give ADDR:PORT");
    memcpy(dst_host, dst_arg, (size_t)(colon - dst_arg));
    dst_host[colon - dst_arg] = 0;
    uint64_t dst_port;
    struct in_addr dst_ip;
    if (inet_pton(AF_INET, dst_host, &dst_ip) != 1) return die_usage("--dst: not an IPv4 address");
    if (!is_loopback(ntohl(dst_ip.s_addr))) return die_usage("--dst: refused, not in 127.0.0.0/8");
    if (parse_u64(colon + 1, &dst_port) || dst_port < 1 || dst_port > 65535)
        return die_usage("--dst: bad port");

    /* sources */
    int many = sources > 0;
    if (!src_arg) src_arg = many ? "127.1.0.0" : "127.0.0.1";
    struct in_addr src_ip;
    if (inet_pton(AF_INET, src_arg, &src_ip) != 1) return die_usage("--src: not an IPv4 address");
    uint32_t src_first = ntohl(src_ip.s_addr);
    if (!sources) sources = 1;
    if (!is_loopback(src_first) || sources > 0x01000000ULL ||
        !is_loopback((uint32_t)(src_first + sources - 1)) ||
        (uint64_t)src_first + sources - 1 > 0x7FFFFFFFULL)
        return die_usage("--src/--sources: refused, every source must be in 127.0.0.0/8");

    enum src_mode mode;
    if (strcmp(mode_arg, "bind") == 0) mode = M_BIND;
    else if (strcmp(mode_arg, "pktinfo") == 0) mode = M_PKTINFO;
    else if (strcmp(mode_arg, "packet") == 0) mode = M_PACKET;
    else if (strcmp(mode_arg, "auto") == 0) mode = sources > 1 ? M_PKTINFO : M_BIND;
    else return die_usage("--src-mode: bind, pktinfo, packet or auto");
    if (sources == 1 && mode == M_PKTINFO) mode = M_BIND;
    if (procs > sources) return die_usage("--procs: at most one sender per source");
    if (mode == M_PACKET && !route_localnet_on())
        return die_usage("--src-mode packet: net.ipv4.conf.lo.route_localnet is 0 in this "
                         "namespace (run it in a namespace of its own with it set to 1)");

    static char payload[MAX_PAYLOAD];
    size_t payload_len;
    struct field fields[MAX_FIELDS];
    int nfields;
    if (load_template(template_path, payload, &payload_len, fields, &nfields)) return 2;

    rng_state ^= seed ? seed * 0x9E3779B97F4A7C15ULL : (uint64_t)getpid() * 0xBF58476D1CE4E5B9ULL ^ (uint64_t)time(NULL);
    if (!rng_state) rng_state = 1;

    struct job job = {0};
    job.dst.sin_family = AF_INET;
    job.dst.sin_addr = dst_ip;
    job.dst.sin_port = htons((uint16_t)dst_port);
    job.src_first = src_first;
    job.sources = sources;
    job.count = count;
    job.counter_start = counter_start;
    job.src_port = src_port;
    job.seconds = seconds;
    job.rate = rate;
    job.batch = (int)batch;
    job.mode = mode;
    job.payload = payload;
    job.payload_len = payload_len;
    job.fields = fields;
    job.nfields = nfields;

    struct sigaction sa = {0};
    sa.sa_handler = on_signal; /* no SA_RESTART: a blocked send returns EINTR */
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGALRM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    static struct result total;
    if (procs == 1) {
        int rc = run_job(&job, &total);
        if (rc) return rc;
    } else {
        /* P senders, each with a slice; their results come back through a pipe */
        int fds[2];
        if (pipe(fds) < 0) {
            fprintf(stderr, "gen: pipe: %s\n", strerror(errno));
            return 1;
        }
        pid_t kids[MAX_PROCS];
        uint64_t slice = sources / procs, share = count / procs;
        for (uint64_t i = 0; i < procs; i++) {
            struct job k = job;
            k.src_first = src_first + (uint32_t)(i * slice);
            k.sources = i + 1 == procs ? sources - i * slice : slice;
            k.count = i + 1 == procs ? count - i * share : share;
            k.counter_start = counter_start + i * share;
            k.rate = rate / (double)procs;
            fflush(stdout);
            pid_t pid = fork();
            if (pid < 0) {
                fprintf(stderr, "gen: fork: %s\n", strerror(errno));
                for (uint64_t w = 0; w < i; w++) kill(kids[w], SIGTERM);
                return 1;
            }
            if (pid == 0) {
                close(fds[0]);
                rng_state ^= (i + 1) * 0xD1B54A32D192ED03ULL;
                static struct result mine;
                int rc = run_job(&k, &mine);
                ssize_t w = write(fds[1], &mine, sizeof mine); /* smaller than PIPE_BUF: one write */
                (void)w;
                _exit(rc);
            }
            kids[i] = pid;
        }
        close(fds[1]);
        int failed = 0;
        for (uint64_t i = 0; i < procs; i++) {
            static struct result one;
            size_t got = 0;
            while (got < sizeof one) {
                ssize_t r = read(fds[0], (char *)&one + got, sizeof one - got);
                if (r > 0) got += (size_t)r;
                else if (r < 0 && errno == EINTR) {
                    if (stop_signal)
                        for (uint64_t w = 0; w < procs; w++) kill(kids[w], SIGTERM);
                    continue;
                } else break;
            }
            if (got < sizeof one) {
                failed = 1;
                break;
            }
            total.attempted += one.attempted, total.sent += one.sent;
            total.errors += one.errors, total.batches += one.batches;
            for (int e = 0; e < MAX_ERRNO; e++) total.errno_count[e] += one.errno_count[e];
            if (one.seconds > total.seconds) total.seconds = one.seconds;
            total.nb = one.nb;
            if (strcmp(one.stopped, "count") != 0 || !total.stopped[0])
                memcpy(total.stopped, one.stopped, sizeof total.stopped);
        }
        for (uint64_t i = 0; i < procs; i++) {
            int st;
            while (waitpid(kids[i], &st, 0) < 0 && errno == EINTR) {}
            if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) failed = 1;
        }
        if (failed) {
            fprintf(stderr, "gen: a sender failed\n");
            return 1;
        }
    }

    double elapsed = total.seconds;
    printf("{\"sent\":%llu,\"errors\":%llu,\"attempted\":%llu,\"seconds\":%.6f,\"pps\":%.1f,"
           "\"payload_bytes\":%zu,\"sources\":%llu,\"mode\":\"%s\",\"procs\":%llu,\"batch\":%d,"
           "\"batches\":%llu,\"rate\":%.1f,\"stopped\":\"%s\",\"errno\":{",
           (unsigned long long)total.sent, (unsigned long long)total.errors,
           (unsigned long long)total.attempted, elapsed,
           elapsed > 0 ? (double)total.sent / elapsed : 0.0, payload_len,
           (unsigned long long)sources, MODE_NAMES[mode], (unsigned long long)procs, total.nb,
           (unsigned long long)total.batches, rate, total.stopped);
    int first = 1;
    for (int e = 0; e < MAX_ERRNO; e++) {
        if (total.errno_count[e]) {
            printf("%s\"%d\":%llu", first ? "" : ",", e, (unsigned long long)total.errno_count[e]);
            first = 0;
        }
    }
    printf("}}\n");
    fflush(stdout);
    return 0;
}

/* One sender: open its sockets, send until its count, its seconds or a signal. */
static int run_job(const struct job *j, struct result *res) {
    int pktinfo = j->mode == M_PKTINFO, packet = j->mode == M_PACKET;
    size_t hdr = packet ? FRAME_HDR : 0, slot = hdr + j->payload_len;
    uint64_t sources = j->sources, count = j->count;
    double rate = j->rate;
    int nsock = (pktinfo || packet) ? 1 : (int)sources;
    if (j->mode == M_BIND) {
        struct rlimit rl;
        if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
            rl.rlim_cur = rl.rlim_max;
            setrlimit(RLIMIT_NOFILE, &rl);
        }
        if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && (uint64_t)nsock + 16 > rl.rlim_cur) {
            fprintf(stderr, "gen: %d sockets exceed the open-file limit %llu; use --src-mode pktinfo\n",
                    nsock, (unsigned long long)rl.rlim_cur);
            return 2;
        }
    }
    int *socks = calloc((size_t)nsock, sizeof(int));
    if (!socks) return 1;
    struct sockaddr_ll lo_addr = {0};
    if (packet) {
        int fd = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, 0); /* protocol 0: send only */
        if (fd < 0) {
            fprintf(stderr, "gen: packet socket: %s (root needed)\n", strerror(errno));
            return 1;
        }
        int one = 1, sndbuf = 4 << 20;
        setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);
        setsockopt(fd, SOL_PACKET, PACKET_QDISC_BYPASS, &one, sizeof one);
        lo_addr.sll_family = AF_PACKET;
        lo_addr.sll_ifindex = (int)if_nametoindex("lo");
        lo_addr.sll_protocol = htons(0x0800);
        lo_addr.sll_halen = 6;
        if (!lo_addr.sll_ifindex) {
            fprintf(stderr, "gen: no lo in this namespace\n");
            return 1;
        }
        socks[0] = fd;
    }
    for (int s = 0; !packet && s < nsock; s++) {
        int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            fprintf(stderr, "gen: socket: %s\n", strerror(errno));
            return 1;
        }
        int one = 1, sndbuf = 4 << 20;
        setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);
        if (j->src_port) setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        struct sockaddr_in local = {0};
        local.sin_family = AF_INET;
        local.sin_port = htons((uint16_t)j->src_port);
        /* pktinfo mode: bound to the first source; each packet names its own */
        local.sin_addr.s_addr = htonl(j->src_first + (uint32_t)(pktinfo ? 0 : s));
        if (bind(fd, (struct sockaddr *)&local, sizeof local) < 0) {
            char a[32];
            inet_ntop(AF_INET, &local.sin_addr, a, sizeof a);
            fprintf(stderr, "gen: bind %s:%llu: %s\n", a, (unsigned long long)j->src_port,
                    strerror(errno));
            return 1;
        }
        if (!pktinfo && connect(fd, (struct sockaddr *)&j->dst, sizeof j->dst) < 0) {
            fprintf(stderr, "gen: connect: %s\n", strerror(errno));
            return 1;
        }
        socks[s] = fd;
    }

    /* batch buffers: each slot holds the template once; only fields are patched */
    int nb = j->batch;
    if (rate > 0) {
        /* bursts of at most ~1 ms of traffic, so the pacing stays smooth */
        double per_ms = rate / 1000.0;
        if (per_ms < nb) nb = per_ms < 1 ? 1 : (int)per_ms;
    }
    unsigned char *bufs = malloc((size_t)nb * slot);
    struct mmsghdr *msgs = calloc((size_t)nb, sizeof *msgs);
    struct iovec *iov = calloc((size_t)nb, sizeof *iov);
    size_t cmsg_space = CMSG_SPACE(sizeof(struct in_pktinfo));
    char *cbufs = calloc((size_t)nb, cmsg_space);
    struct in_pktinfo **pinfo = calloc((size_t)nb, sizeof *pinfo);
    if (!bufs || !msgs || !iov || !cbufs || !pinfo) return 1;
    for (int i = 0; i < nb; i++) {
        unsigned char *f = bufs + (size_t)i * slot;
        if (packet) frame_headers(f, j);
        memcpy(f + hdr, j->payload, j->payload_len);
        iov[i].iov_base = f;
        iov[i].iov_len = slot;
        msgs[i].msg_hdr.msg_iov = &iov[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
        if (packet) {
            msgs[i].msg_hdr.msg_name = &lo_addr;
            msgs[i].msg_hdr.msg_namelen = sizeof lo_addr;
        } else if (pktinfo) {
            msgs[i].msg_hdr.msg_name = (void *)&j->dst;
            msgs[i].msg_hdr.msg_namelen = sizeof j->dst;
            msgs[i].msg_hdr.msg_control = cbufs + (size_t)i * cmsg_space;
            msgs[i].msg_hdr.msg_controllen = cmsg_space;
            struct cmsghdr *c = CMSG_FIRSTHDR(&msgs[i].msg_hdr);
            c->cmsg_level = IPPROTO_IP;
            c->cmsg_type = IP_PKTINFO;
            c->cmsg_len = CMSG_LEN(sizeof(struct in_pktinfo));
            pinfo[i] = (struct in_pktinfo *)(void *)CMSG_DATA(c);
        }
    }

    alarm((unsigned)j->seconds + 3); /* a backstop for the clock check below */

    uint64_t attempted = 0, sent = 0, errors = 0, batches = 0;
    const char *stopped = "count";
    uint64_t src_next = 0; /* next source index (pktinfo, packet) or socket (bind) */
    double start = now_s(), t = start, deadline = start + j->seconds;

    while (attempted < count) {
        if (stop_signal) {
            stopped = stop_signal == SIGALRM ? "alarm" : "signal";
            break;
        }
        t = now_s();
        if (t >= deadline) {
            stopped = "time";
            break;
        }
        if (rate > 0) {
            double due = start + (double)attempted / rate;
            if (due > t) {
                double wait = due - t;
                if (t + wait > deadline) wait = deadline - t;
                sleep_s(wait);
                continue;
            }
        }
        int n = nb;
        if ((uint64_t)n > count - attempted) n = (int)(count - attempted);
        for (int i = 0; i < n; i++) {
            unsigned char *f = bufs + (size_t)i * slot;
            patch((char *)f + hdr, j->fields, j->nfields, j->counter_start + attempted + (uint64_t)i);
            if (pktinfo || packet) {
                uint32_t src = j->src_first + (uint32_t)src_next;
                if (++src_next == sources) src_next = 0;
                if (packet) {
                    frame_source(f, src);
                } else {
                    struct in_pktinfo *pi = pinfo[i];
                    pi->ipi_ifindex = 0;
                    pi->ipi_spec_dst.s_addr = htonl(src);
                }
            }
        }
        int done = 0;
        if (pktinfo || packet || nsock == 1) {
            int fd = socks[0];
            while (done < n) {
                int r = sendmmsg(fd, msgs + done, (unsigned)(n - done), 0);
                if (r > 0) {
                    done += r;
                    sent += (uint64_t)r;
                } else if (r < 0 && errno == EINTR && !stop_signal) {
                    continue;
                } else {
                    /* the packet at `done` failed: count it and go on with the rest */
                    int e = r < 0 ? errno : 0;
                    res->errno_count[e < MAX_ERRNO && e >= 0 ? e : 0]++;
                    errors++;
                    done++;
                    if (stop_signal) break;
                }
            }
        } else {
            /* one socket per source: each packet of the batch from the next one */
            while (done < n) {
                int r = sendmmsg(socks[src_next], msgs + done, 1, 0);
                if (r < 0 && errno == EINTR && !stop_signal)
                    continue;
                if (r == 1) {
                    sent++;
                } else {
                    int e = r < 0 ? errno : 0;
                    res->errno_count[e < MAX_ERRNO && e >= 0 ? e : 0]++;
                    errors++;
                }
                done++;
                if (++src_next == sources) src_next = 0;
                if (stop_signal) break;
            }
        }
        attempted += (uint64_t)done;
        batches++;
    }
    res->seconds = now_s() - start;
    res->attempted = attempted, res->sent = sent, res->errors = errors, res->batches = batches;
    res->nb = nb;
    snprintf(res->stopped, sizeof res->stopped, "%s", stopped);
    for (int s = 0; s < nsock; s++) close(socks[s]);
    return 0;
}
