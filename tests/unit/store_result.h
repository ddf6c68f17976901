#ifndef SHOAL_TESTS_UNIT_STORE_RESULT_H
#define SHOAL_TESTS_UNIT_STORE_RESULT_H

/*
 * What store callbacks saw, for the store unit tests (memory and redis backends): one struct
 * result per request, filled by the callback matching the request's kind. Include after
 * cmocka.h.
 */

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "store/store.h"

/* What one callback saw. */
struct result {
    int calls;
    int rc;
    uint64_t epoch;
    uint64_t prev_epoch;
    char prev_owner[64];
    bool has_prev_owner;
    uint8_t state[256];
    size_t state_len;
    size_t n;
    uint8_t blobs[16][64];
    size_t blob_len[16];
    int order; /* global delivery order */
};

static int delivery_seq;

static void on_done(void *ctx, int rc)
{
    struct result *r = ctx;
    r->calls++;
    r->rc = rc;
    r->order = ++delivery_seq;
}

static void on_claim(void *ctx, int rc, uint64_t epoch, const char *prev_owner, uint64_t prev_epoch)
{
    struct result *r = ctx;
    r->calls++;
    r->rc = rc;
    r->epoch = epoch;
    r->prev_epoch = prev_epoch;
    r->has_prev_owner = prev_owner != NULL;
    if (prev_owner)
        (void)snprintf(r->prev_owner, sizeof(r->prev_owner), "%s", prev_owner);
    r->order = ++delivery_seq;
}

static void copy_blobs(struct result *r, const struct store_blob *b, size_t n)
{
    r->n = n;
    for (size_t i = 0; i < n && i < 16; i++) {
        assert_true(b[i].len <= sizeof(r->blobs[i]));
        assert_true(b[i].len == 0 || b[i].p != NULL);
        if (b[i].len)
            memcpy(r->blobs[i], b[i].p, b[i].len);
        r->blob_len[i] = b[i].len;
    }
}

static void on_load(void *ctx, int rc, struct store_blob state, const struct store_blob *queue,
                    size_t n)
{
    struct result *r = ctx;
    r->calls++;
    r->rc = rc;
    assert_true(state.len <= sizeof(r->state));
    if (state.len)
        memcpy(r->state, state.p, state.len);
    r->state_len = state.len;
    copy_blobs(r, queue, n);
    r->order = ++delivery_seq;
}

static void on_retain(void *ctx, int rc, const struct store_blob *msgs, size_t n)
{
    struct result *r = ctx;
    r->calls++;
    r->rc = rc;
    copy_blobs(r, msgs, n);
    r->order = ++delivery_seq;
}

static struct store_blob blob(const char *s)
{
    struct store_blob b = {(const uint8_t *)s, strlen(s)};
    return b;
}

/* Whether one of the blobs r got is name. */
static inline bool has_blob(const struct result *r, const char *name)
{
    for (size_t i = 0; i < r->n && i < 16; i++)
        if (r->blob_len[i] == strlen(name) && memcmp(r->blobs[i], name, strlen(name)) == 0)
            return true;
    return false;
}

/* Entry ids for a trim, from a space-separated list of entries stored as they are (each is
 * its own id); "\\0" in a name stands for a 0 byte, to name keyed entries. */
struct id_list {
    struct store_blob ids[16];
    size_t n;
    uint8_t buf[256];
};

static void id_list_of(struct id_list *l, const char *names)
{
    size_t used = 0;
    l->n = 0;
    while (*names) {
        while (*names == ' ')
            names++;
        if (!*names)
            break;
        assert_true(l->n < 16);
        l->ids[l->n].p = l->buf + used;
        size_t len = 0;
        for (; *names && *names != ' '; names++) {
            uint8_t c = (uint8_t)*names;
            if (c == '\\' && names[1] == '0') {
                c = 0;
                names++;
            }
            assert_true(used < sizeof(l->buf));
            l->buf[used++] = c;
            len++;
        }
        l->ids[l->n++].len = len;
    }
}

#endif
