/*
 * Per-receiver sequence tracking. Publishers are found through a small open-addressing hash
 * table keyed by publisher id; each entry holds a sliding bit window anchored at the highest
 * sequence number, shifted on every in-order arrival. Loss is derived at report time
 * (highest - distinct), so the hot path only touches one entry.
 */
#include "bench/bench_seq.h"

#include <stdlib.h>
#include <string.h>

#include "node/buf.h"

void bench_seq_init(struct bench_seq *s)
{
    memset(s, 0, sizeof(*s));
}

void bench_seq_free(struct bench_seq *s)
{
    free(s->tab);
    memset(s, 0, sizeof(*s));
}

static uint32_t hash32(uint32_t x)
{
    x ^= x >> 16;
    x *= 0x7feb352dU;
    x ^= x >> 15;
    x *= 0x846ca68bU;
    x ^= x >> 16;
    return x;
}

static struct bench_seq_entry *slot_find(struct bench_seq_entry *tab, uint32_t cap, uint32_t pub)
{
    uint32_t i = hash32(pub) & (cap - 1);
    while (tab[i].is_used && tab[i].pub != pub)
        i = (i + 1) & (cap - 1);
    return &tab[i];
}

static void grow(struct bench_seq *s)
{
    uint32_t cap = s->cap ? s->cap * 2 : 8;
    struct bench_seq_entry *tab = xcalloc(cap, sizeof(*tab));
    for (uint32_t i = 0; i < s->cap; i++) {
        if (s->tab[i].is_used)
            *slot_find(tab, cap, s->tab[i].pub) = s->tab[i];
    }
    free(s->tab);
    s->tab = tab;
    s->cap = cap;
}

static struct bench_seq_entry *lookup(struct bench_seq *s, uint32_t pub)
{
    if (s->cap == 0 || (s->used + 1) * 2 > s->cap) {
        /* Only grow when pub is new; a hit on a full-ish table is the common case. */
        if (s->cap) {
            struct bench_seq_entry *e = slot_find(s->tab, s->cap, pub);
            if (e->is_used)
                return e;
        }
        grow(s);
    }
    return slot_find(s->tab, s->cap, pub);
}

/* Shifts the window up by d positions (towards older numbers). */
static void window_shift(uint64_t *w, uint64_t d)
{
    if (d >= BENCH_SEQ_WINDOW) {
        memset(w, 0, BENCH_SEQ_WORDS * sizeof(*w));
        return;
    }
    unsigned words = (unsigned)(d / 64), bits = (unsigned)(d % 64);
    for (int i = BENCH_SEQ_WORDS - 1; i >= 0; i--) {
        uint64_t v = 0;
        int src = i - (int)words;
        if (src >= 0) {
            v = w[src] << bits;
            if (bits && src > 0)
                v |= w[src - 1] >> (64 - bits);
        }
        w[i] = v;
    }
}

enum bench_seq_result bench_seq_record(struct bench_seq *s, uint32_t pub, uint64_t seq)
{
    if (seq == 0) {
        s->invalid++;
        return BENCH_SEQ_INVALID;
    }
    struct bench_seq_entry *e = lookup(s, pub);
    s->received++;
    if (!e->is_used) {
        memset(e, 0, sizeof(*e));
        e->is_used = 1;
        e->pub = pub;
        e->max = seq;
        e->unique = 1;
        e->window[0] = 1;
        s->used++;
        return BENCH_SEQ_NEW;
    }
    if (seq > e->max) {
        window_shift(e->window, seq - e->max);
        e->window[0] |= 1;
        e->max = seq;
        e->unique++;
        return BENCH_SEQ_NEW;
    }
    uint64_t d = e->max - seq;
    if (d >= BENCH_SEQ_WINDOW) {
        e->unique++;
        s->late++;
        return BENCH_SEQ_LATE;
    }
    uint64_t bit = UINT64_C(1) << (d % 64);
    if (e->window[d / 64] & bit) {
        s->duplicates++;
        return BENCH_SEQ_DUPLICATE;
    }
    e->window[d / 64] |= bit;
    e->unique++;
    s->reordered++;
    return BENCH_SEQ_REORDERED;
}

void bench_seq_stats_add(const struct bench_seq *s, struct bench_seq_stats *out)
{
    for (uint32_t i = 0; i < s->cap; i++) {
        const struct bench_seq_entry *e = &s->tab[i];
        if (!e->is_used)
            continue;
        out->streams++;
        out->unique += e->unique;
        if (e->max > e->unique)
            out->lost += e->max - e->unique;
    }
    out->received += s->received;
    out->duplicates += s->duplicates;
    out->reordered += s->reordered;
    out->late += s->late;
    out->invalid += s->invalid;
}
