/*
 * limit.c: what a native core can do through libpcap on one core.
 *
 *   limit empty FILE   pcap_next_ex() loop that only counts records and
 *                      wire bytes: the cost of libpcap's record reading.
 *   limit count FILE   pcap_loop() with a callback that parses Ethernet,
 *                      802.1Q/802.1ad tags, IPv4 (first fragments only),
 *                      IPv6 (extension headers 0/43/60/44/51 walked), and
 *                      counts TCP and UDP ports into uint64 tables
 *                      (in = destination port, out = source port; counting
 *                      rules section 4).
 *
 * Both print one JSON line on stdout so the suite can check the counts:
 *   {"mode": ..., "packets": N, "bytes": B[, "ported": P, "port_rows": R]}
 * Exit status 1 on a libpcap error (message on stderr), 2 on bad usage.
 *
 * Built on the fly by the suite: gcc -O2 -o limit limit.c -lpcap
 */
#include <pcap/pcap.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

enum { ROW_TCP, ROW_UDP, N_ROWS };
enum { IN_PACKETS, IN_BYTES, OUT_PACKETS, OUT_BYTES, N_COUNTERS };

static uint64_t table[N_ROWS][65536][N_COUNTERS];

struct totals {
    uint64_t packets;
    uint64_t bytes;
    uint64_t ported;
};

static inline uint16_t be16(const u_char *p) { return (uint16_t)(p[0] << 8 | p[1]); }

/* Where the ports start and which row they go to; NULL when the frame has none. */
static const u_char *find_ports(const u_char *p, const u_char *end, int *row)
{
    uint16_t type;
    uint8_t proto;
    const u_char *l4;

    if (end - p < 14)
        return NULL;
    type = be16(p + 12);
    p += 14;
    for (int tags = 0; (type == 0x8100 || type == 0x88a8 || type == 0x9100) && tags < 8; tags++) {
        if (end - p < 4)
            return NULL;
        type = be16(p + 2);
        p += 4;
    }
    if (type == 0x0800) {
        unsigned ihl;
        if (end - p < 20 || p[0] >> 4 != 4)
            return NULL;
        ihl = (p[0] & 15u) * 4;
        if (ihl < 20 || end - p < (long)ihl || (be16(p + 6) & 0x1fff) != 0)
            return NULL;
        proto = p[9];
        l4 = p + ihl;
    } else if (type == 0x86dd) {
        if (end - p < 40 || p[0] >> 4 != 6)
            return NULL;
        proto = p[6];
        l4 = p + 40;
        for (int depth = 0; depth < 8; depth++) {
            if (proto == 0 || proto == 43 || proto == 60) {
                if (end - l4 < 8)
                    return NULL;
                proto = l4[0];
                l4 += (l4[1] + 1) * 8;
            } else if (proto == 44) {
                if (end - l4 < 8 || (be16(l4 + 2) & 0xfff8) != 0)
                    return NULL;
                proto = l4[0];
                l4 += 8;
            } else if (proto == 51) {
                if (end - l4 < 8)
                    return NULL;
                proto = l4[0];
                l4 += (l4[1] + 2) * 4;
            } else {
                break;
            }
        }
    } else {
        return NULL;
    }
    if (proto == 6)
        *row = ROW_TCP;
    else if (proto == 17)
        *row = ROW_UDP;
    else
        return NULL;
    if (end - l4 < 4)
        return NULL;
    return l4;
}

static void on_packet(u_char *user, const struct pcap_pkthdr *h, const u_char *data)
{
    struct totals *t = (struct totals *)user;
    uint32_t wire = h->len > h->caplen ? h->len : h->caplen;
    int row;
    const u_char *ports = find_ports(data, data + h->caplen, &row);

    t->packets++;
    t->bytes += wire;
    if (ports) {
        uint64_t *in = table[row][be16(ports + 2)];
        uint64_t *out = table[row][be16(ports)];
        in[IN_PACKETS]++;
        in[IN_BYTES] += wire;
        out[OUT_PACKETS]++;
        out[OUT_BYTES] += wire;
        t->ported++;
    }
}

static int run_empty(pcap_t *p, struct totals *t)
{
    struct pcap_pkthdr *h;
    const u_char *data;
    int rc;

    while ((rc = pcap_next_ex(p, &h, &data)) == 1) {
        t->packets++;
        t->bytes += h->len;
    }
    return rc == PCAP_ERROR_BREAK ? 0 : rc;   /* PCAP_ERROR_BREAK: end of the file */
}

int main(int argc, char **argv)
{
    char errbuf[PCAP_ERRBUF_SIZE];
    struct totals t = {0, 0, 0};
    pcap_t *p;
    int rc, count;

    if (argc != 3 || (strcmp(argv[1], "empty") != 0 && strcmp(argv[1], "count") != 0)) {
        fprintf(stderr, "usage: %s empty|count FILE\n", argv[0]);
        return 2;
    }
    count = strcmp(argv[1], "count") == 0;
    p = pcap_open_offline(argv[2], errbuf);
    if (p == NULL) {
        fprintf(stderr, "limit: %s: %s\n", argv[2], errbuf);
        return 1;
    }
    rc = count ? pcap_loop(p, -1, on_packet, (u_char *)&t) : run_empty(p, &t);
    if (rc < 0) {
        fprintf(stderr, "limit: %s: %s\n", argv[2], pcap_geterr(p));
        pcap_close(p);
        return 1;
    }
    pcap_close(p);
    if (count) {
        uint64_t rows = 0;
        for (int r = 0; r < N_ROWS; r++)
            for (int port = 0; port < 65536; port++)
                rows += (table[r][port][IN_PACKETS] | table[r][port][OUT_PACKETS]) != 0;
        printf("{\"mode\": \"count\", \"packets\": %llu, \"bytes\": %llu, \"ported\": %llu, "
               "\"port_rows\": %llu}\n", (unsigned long long)t.packets,
               (unsigned long long)t.bytes, (unsigned long long)t.ported,
               (unsigned long long)rows);
    } else {
        printf("{\"mode\": \"empty\", \"packets\": %llu, \"bytes\": %llu}\n",
               (unsigned long long)t.packets, (unsigned long long)t.bytes);
    }
    return 0;
}
