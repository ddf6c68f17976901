#ifndef SHOAL_BENCH_BENCH_PAYLOAD_H
#define SHOAL_BENCH_BENCH_PAYLOAD_H

/*
 * The payload header that `--payload-hdrs ts,cnt64` puts at the front of each message, all
 * fields big-endian:
 *
 *   offset 0   8 bytes  send time, µs of CLOCK_MONOTONIC (publisher and subscriber share a host)
 *   offset 8   8 bytes  sequence number of this message from this publisher, starting at 1
 *   offset 16  4 bytes  publisher index (its client index, -n START + i)
 *
 * The layout is the same whichever headers were asked for; the flags only say what the
 * subscriber computes. Payloads are at least BENCH_PAYLOAD_HDR_LEN bytes when headers are on.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define BENCH_PAYLOAD_HDR_LEN 20

struct bench_payload_hdr {
    uint64_t ts_us;
    uint64_t seq;
    uint32_t pub;
};

/* Writes h into p, which holds at least BENCH_PAYLOAD_HDR_LEN bytes. */
void bench_payload_write(uint8_t *p, const struct bench_payload_hdr *h);
/* Reads a header from p[0..len). Returns false when len is too short. */
bool bench_payload_read(const uint8_t *p, size_t len, struct bench_payload_hdr *h);
/* CLOCK_MONOTONIC now, in microseconds: the clock of the ts field. */
uint64_t bench_payload_now_us(void);

#endif
