/*
 * Payload header encoding. Big-endian so that a packet capture reads naturally; byte-wise so
 * that the payload needs no alignment.
 */
#include "bench/bench_payload.h"

#include <time.h>

static void put_be64(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--) {
        p[i] = (uint8_t)v;
        v >>= 8;
    }
}

static uint64_t get_be64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | p[i];
    return v;
}

void bench_payload_write(uint8_t *p, const struct bench_payload_hdr *h)
{
    put_be64(p, h->ts_us);
    put_be64(p + 8, h->seq);
    p[16] = (uint8_t)(h->pub >> 24);
    p[17] = (uint8_t)(h->pub >> 16);
    p[18] = (uint8_t)(h->pub >> 8);
    p[19] = (uint8_t)h->pub;
}

bool bench_payload_read(const uint8_t *p, size_t len, struct bench_payload_hdr *h)
{
    if (len < BENCH_PAYLOAD_HDR_LEN)
        return false;
    h->ts_us = get_be64(p);
    h->seq = get_be64(p + 8);
    h->pub = (uint32_t)p[16] << 24 | (uint32_t)p[17] << 16 | (uint32_t)p[18] << 8 | p[19];
    return true;
}

uint64_t bench_payload_now_us(void)
{
    struct timespec ts;
    (void)clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}
