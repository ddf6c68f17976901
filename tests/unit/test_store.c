/*
 * Unit tests for store/ with the memory backend: URL handling, the async contract (never
 * called back from inside the call, exactly once, ERR_CANCELED on destroy), owner epochs and
 * fencing, session state and expiry, the offline queue with its quotas, retained messages, 100k
 * client ids, and what a cluster uses: the member registry with its deadlines, sessions by
 * owner, adoption, and parked messages. Every test runs its own loop and ends with
 * uv_loop_close() == 0.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "node/clock.h"
#include "node/err.h"
#include "node/log.h"
#include "store/store.h"

/* cmocka.h needs the headers above first, so it stays out of include sorting. */
/* clang-format off */
#include <cmocka.h>
/* clang-format on */

#include "tests/unit/store_result.h"

struct fixture {
    uv_loop_t loop;
    struct store *s;
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    char err[128];

    assert_non_null(f);
    assert_int_equal(uv_loop_init(&f->loop), 0);
    assert_int_equal(store_create(&f->loop, "memory", "node-a", &f->s, err, sizeof(err)), 0);
    assert_non_null(f->s);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;

    store_destroy(&f->s);
    assert_null(f->s);
    assert_int_equal(uv_run(&f->loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(&f->loop), 0);
    free(f);
    return 0;
}

static void run(struct fixture *f)
{
    assert_int_equal(uv_run(&f->loop, UV_RUN_DEFAULT), 0);
}

/* Claims id and returns the new epoch. */
static uint64_t claim(struct fixture *f, const char *id)
{
    struct result r = {0};
    assert_int_equal(store_owner_claim(f->s, id, on_claim, &r), 0);
    run(f);
    assert_int_equal(r.calls, 1);
    assert_int_equal(r.rc, 0);
    return r.epoch;
}

static int save(struct fixture *f, const char *id, uint64_t epoch, const char *state,
                uint64_t expiry)
{
    struct result r = {0};
    assert_int_equal(store_session_save(f->s, id, epoch, blob(state), expiry, on_done, &r), 0);
    run(f);
    assert_int_equal(r.calls, 1);
    return r.rc;
}

static int push(struct fixture *f, const char *id, const char *m, uint32_t max_count,
                uint64_t max_bytes)
{
    struct result r = {0};
    assert_int_equal(store_queue_push(f->s, id, blob(m), max_count, max_bytes, on_done, &r), 0);
    run(f);
    assert_int_equal(r.calls, 1);
    return r.rc;
}

static struct result load(struct fixture *f, const char *id)
{
    struct result r = {0};
    assert_int_equal(store_session_load(f->s, id, on_load, &r), 0);
    run(f);
    assert_int_equal(r.calls, 1);
    return r;
}

static int trim(struct fixture *f, const char *id, uint64_t epoch, const char *names)
{
    struct result r = {0};
    struct id_list l;
    id_list_of(&l, names);
    assert_int_equal(store_queue_trim(f->s, id, epoch, l.ids, l.n, on_done, &r), 0);
    run(f);
    assert_int_equal(r.calls, 1);
    return r.rc;
}

static int del(struct fixture *f, const char *id, uint64_t epoch)
{
    struct result r = {0};
    assert_int_equal(store_session_delete(f->s, id, epoch, on_done, &r), 0);
    run(f);
    assert_int_equal(r.calls, 1);
    return r.rc;
}

static int retain_set(struct fixture *f, const char *topic, const char *m)
{
    struct result r = {0};
    assert_int_equal(store_retain_set(f->s, topic, blob(m), on_done, &r), 0);
    run(f);
    assert_int_equal(r.calls, 1);
    return r.rc;
}

static void assert_blob(const struct result *r, size_t i, const char *want)
{
    assert_int_equal(r->blob_len[i], strlen(want));
    assert_memory_equal(r->blobs[i], want, strlen(want));
}

/* ---- lifecycle and URLs ------------------------------------------------------------------- */

static void test_create_urls(void **state)
{
    uv_loop_t loop;
    struct store *s = (struct store *)&loop; /* must be reset to NULL on failure */
    char err[128];

    (void)state;
    assert_int_equal(uv_loop_init(&loop), 0);

    /* A malformed redis URL is refused with the reason; a well-formed one opens at once even
     * with no server there, since it connects in the background. */
    assert_int_equal(store_create(&loop, "redis://:6379", "n", &s, err, sizeof(err)), ERR_INVALID);
    assert_null(s);
    assert_string_equal(err, "redis URL: missing host");
    assert_int_equal(store_create(&loop, "redis://localhost:6379", "n", &s, err, sizeof(err)), 0);
    assert_non_null(s);
    assert_true(store_is_durable(s));
    store_destroy(&s);
    assert_null(s);

    assert_int_equal(store_create(&loop, "mongo://x", "n", &s, err, sizeof(err)), ERR_INVALID);
    assert_string_equal(err, "unknown store URL 'mongo://x'");
    assert_int_equal(store_create(&loop, "memoryx", "n", &s, err, sizeof(err)), ERR_INVALID);
    assert_string_equal(err, "unknown store URL 'memoryx'");
    assert_int_equal(store_create(&loop, "", "n", &s, err, sizeof(err)), ERR_INVALID);
    assert_string_equal(err, "unknown store URL ''");
    assert_int_equal(store_create(&loop, "memory", "", &s, err, sizeof(err)), ERR_INVALID);
    assert_int_equal(store_create(&loop, "memory", "n", &s, NULL, 0), 0);
    assert_non_null(s);
    store_destroy(&s);
    assert_null(s);
    store_destroy(&s); /* NULL is fine */

    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(&loop), 0);
}

static void test_invalid_args_no_callback(void **state)
{
    struct fixture *f = *state;
    struct result r = {0};
    struct store_blob bad = {NULL, 3};

    assert_int_equal(store_owner_claim(f->s, "", on_claim, &r), ERR_INVALID);
    assert_int_equal(store_owner_claim(f->s, NULL, on_claim, &r), ERR_INVALID);
    assert_int_equal(store_owner_claim(NULL, "c", on_claim, &r), ERR_INVALID);
    assert_int_equal(store_owner_claim(f->s, "c", NULL, &r), ERR_INVALID);
    assert_int_equal(store_session_save(f->s, "c", 1, bad, 0, on_done, &r), ERR_INVALID);
    assert_int_equal(store_queue_push(f->s, "c", bad, 0, 0, on_done, &r), ERR_INVALID);
    assert_int_equal(store_retain_set(f->s, "", blob("x"), on_done, &r), ERR_INVALID);
    assert_int_equal(store_retain_load(f->s, NULL, &r), ERR_INVALID);
    run(f);
    assert_int_equal(r.calls, 0);
}

/* ---- async contract ----------------------------------------------------------------------- */

static void test_every_api_is_async(void **state)
{
    struct fixture *f = *state;
    const struct store_blob blob1 = blob("m");
    struct result r[9];

    memset(r, 0, sizeof(r));
    assert_int_equal(store_owner_claim(f->s, "c1", on_claim, &r[0]), 0);
    assert_int_equal(store_session_save(f->s, "c1", 1, blob("st"), 0, on_done, &r[1]), 0);
    assert_int_equal(store_queue_push(f->s, "c1", blob("m"), 0, 0, on_done, &r[2]), 0);
    assert_int_equal(store_session_load(f->s, "c1", on_load, &r[3]), 0);
    assert_int_equal(store_queue_trim(f->s, "c1", 1, &blob1, 1, on_done, &r[4]), 0);
    assert_int_equal(store_session_delete(f->s, "c1", 1, on_done, &r[5]), 0);
    assert_int_equal(store_retain_set(f->s, "t", blob("x"), on_done, &r[6]), 0);
    assert_int_equal(store_retain_load(f->s, on_retain, &r[7]), 0);
    assert_int_equal(store_owner_release(f->s, "c1", 1, on_done, &r[8]), 0);
    for (int i = 0; i < 9; i++)
        assert_int_equal(r[i].calls, 0);

    run(f);
    for (int i = 0; i < 9; i++) {
        assert_int_equal(r[i].calls, 1);
        assert_int_equal(r[i].rc, 0);
        /* Callbacks run in the order the requests were made. */
        if (i > 0)
            assert_true(r[i].order > r[i - 1].order);
    }
    assert_int_equal(r[0].epoch, 1);
    assert_int_equal(r[3].state_len, 2);
    assert_int_equal(r[3].n, 1);
    assert_int_equal(r[7].n, 1);
}

struct chain {
    struct store *s;
    struct result inner;
    int outer_calls;
    int inner_seen_in_outer;
};

static void on_chain_outer(void *ctx, int rc)
{
    struct chain *c = ctx;

    assert_int_equal(rc, 0);
    c->outer_calls++;
    assert_int_equal(store_retain_set(c->s, "t", blob("y"), on_done, &c->inner), 0);
    /* A request made from a callback is not delivered from inside that callback either. */
    c->inner_seen_in_outer = c->inner.calls;
}

static void test_request_from_callback_is_deferred(void **state)
{
    struct fixture *f = *state;
    struct chain c = {.s = f->s};

    assert_int_equal(store_retain_set(f->s, "t", blob("x"), on_chain_outer, &c), 0);
    assert_int_equal(c.outer_calls, 0);
    run(f);
    assert_int_equal(c.outer_calls, 1);
    assert_int_equal(c.inner_seen_in_outer, 0);
    assert_int_equal(c.inner.calls, 1);
    assert_int_equal(c.inner.rc, 0);
}

static void test_blobs_are_copied(void **state)
{
    struct fixture *f = *state;
    char st[8] = "state-1";
    char m[8] = "msg-1";
    struct result r = {0};
    struct result l;

    assert_int_equal(store_session_save(f->s, "c", 0, blob(st), 0, on_done, &r), 0);
    assert_int_equal(store_queue_push(f->s, "c", blob(m), 0, 0, on_done, &r), 0);
    memset(st, 'X', 7);
    memset(m, 'Y', 5);
    run(f);
    assert_int_equal(r.calls, 2);
    l = load(f, "c");
    assert_int_equal(l.rc, 0);
    assert_memory_equal(l.state, "state-1", 7);
    assert_int_equal(l.n, 1);
    assert_blob(&l, 0, "msg-1");
}

/* ---- destroy ------------------------------------------------------------------------------ */

static void test_destroy_cancels_pending(void **state)
{
    struct fixture *f = *state;
    struct result r[5];

    memset(r, 0, sizeof(r));
    assert_int_equal(store_owner_claim(f->s, "c", on_claim, &r[0]), 0);
    assert_int_equal(store_session_save(f->s, "c", 1, blob("s"), 0, on_done, &r[1]), 0);
    assert_int_equal(store_session_load(f->s, "c", on_load, &r[2]), 0);
    assert_int_equal(store_retain_load(f->s, on_retain, &r[3]), 0);
    assert_int_equal(store_queue_push(f->s, "c", blob("m"), 0, 0, on_done, &r[4]), 0);
    store_destroy(&f->s);
    assert_null(f->s);
    for (int i = 0; i < 5; i++)
        assert_int_equal(r[i].calls, 0);
    run(f);
    for (int i = 0; i < 5; i++) {
        assert_int_equal(r[i].calls, 1);
        assert_int_equal(r[i].rc, ERR_CANCELED);
    }
    assert_int_equal(r[0].epoch, 0);
    assert_false(r[0].has_prev_owner);
    assert_int_equal(r[2].n, 0);
    assert_int_equal(r[3].n, 0);
    /* teardown: uv_loop_close() must return 0 */
}

static void test_destroy_idle_store(void **state)
{
    struct fixture *f = *state;
    struct result r = {0};

    assert_int_equal(store_owner_claim(f->s, "c", on_claim, &r), 0);
    run(f);
    assert_int_equal(r.calls, 1);
    store_destroy(&f->s);
    run(f);
    assert_int_equal(r.calls, 1);
}

struct destroyer {
    struct store **sp;
    int calls;
    int rc;
};

static void on_destroying(void *ctx, int rc)
{
    struct destroyer *d = ctx;
    d->calls++;
    d->rc = rc;
    store_destroy(d->sp);
}

static void test_destroy_from_callback(void **state)
{
    struct fixture *f = *state;
    struct destroyer d = {.sp = &f->s};
    struct result before = {0};
    struct result after[3];

    memset(after, 0, sizeof(after));
    assert_int_equal(store_retain_set(f->s, "a", blob("1"), on_done, &before), 0);
    assert_int_equal(store_retain_set(f->s, "b", blob("2"), on_destroying, &d), 0);
    assert_int_equal(store_retain_set(f->s, "c", blob("3"), on_done, &after[0]), 0);
    assert_int_equal(store_retain_load(f->s, on_retain, &after[1]), 0);
    assert_int_equal(store_owner_claim(f->s, "x", on_claim, &after[2]), 0);
    run(f);
    assert_null(f->s);
    assert_int_equal(before.calls, 1);
    assert_int_equal(before.rc, 0);
    assert_int_equal(d.calls, 1);
    assert_int_equal(d.rc, 0);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(after[i].calls, 1);
        assert_int_equal(after[i].rc, ERR_CANCELED);
    }
}

/* ---- owner registry ----------------------------------------------------------------------- */

static void test_claim_epochs_and_prev_owner(void **state)
{
    struct fixture *f = *state;
    struct result r1 = {0}, r2 = {0}, r3 = {0}, r4 = {0};

    assert_int_equal(store_owner_claim(f->s, "c", on_claim, &r1), 0);
    run(f);
    assert_int_equal(r1.rc, 0);
    assert_true(r1.epoch > 0);
    assert_false(r1.has_prev_owner);
    assert_int_equal(r1.prev_epoch, 0);

    assert_int_equal(store_owner_claim(f->s, "c", on_claim, &r2), 0);
    run(f);
    assert_true(r2.epoch > r1.epoch);
    assert_true(r2.has_prev_owner);
    assert_string_equal(r2.prev_owner, "node-a");
    assert_int_equal(r2.prev_epoch, r1.epoch);

    /* The epoch is global: another client id gets a still larger one. */
    assert_int_equal(store_owner_claim(f->s, "other", on_claim, &r3), 0);
    run(f);
    assert_true(r3.epoch > r2.epoch);
    assert_false(r3.has_prev_owner);

    assert_int_equal(store_owner_claim(f->s, "c", on_claim, &r4), 0);
    run(f);
    assert_true(r4.epoch > r3.epoch);
    assert_int_equal(r4.prev_epoch, r2.epoch);
}

static void test_release(void **state)
{
    struct fixture *f = *state;
    uint64_t e1 = claim(f, "c");
    uint64_t e2 = claim(f, "c");
    struct result r = {0}, c = {0};

    /* A stale release is refused and changes nothing. */
    assert_int_equal(store_owner_release(f->s, "c", e1, on_done, &r), 0);
    run(f);
    assert_int_equal(r.rc, ERR_EXISTS);

    memset(&r, 0, sizeof(r));
    assert_int_equal(store_owner_release(f->s, "c", e2, on_done, &r), 0);
    run(f);
    assert_int_equal(r.rc, 0);

    assert_int_equal(store_owner_claim(f->s, "c", on_claim, &c), 0);
    run(f);
    assert_false(c.has_prev_owner);
    assert_true(c.epoch > e2);

    /* Releasing an unknown id is a no-op. */
    memset(&r, 0, sizeof(r));
    assert_int_equal(store_owner_release(f->s, "nobody", 7, on_done, &r), 0);
    run(f);
    assert_int_equal(r.rc, 0);
}

/* ---- sessions and fencing ----------------------------------------------------------------- */

static void test_session_roundtrip_and_delete(void **state)
{
    struct fixture *f = *state;
    uint64_t e = claim(f, "c");
    struct result l;

    l = load(f, "c");
    assert_int_equal(l.rc, ERR_NOT_FOUND);

    assert_int_equal(save(f, "c", e, "v1", 0), 0);
    assert_int_equal(save(f, "c", e, "version-2", 0), 0);
    assert_int_equal(push(f, "c", "q1", 0, 0), 0);
    l = load(f, "c");
    assert_int_equal(l.rc, 0);
    assert_int_equal(l.state_len, 9);
    assert_memory_equal(l.state, "version-2", 9);
    assert_int_equal(l.n, 1);

    assert_int_equal(del(f, "c", e), 0);
    l = load(f, "c");
    assert_int_equal(l.rc, ERR_NOT_FOUND);
    /* No session, no queue: a push would otherwise wait for the next session under this id. */
    assert_int_equal(push(f, "c", "orphan", 0, 0), ERR_NOT_FOUND);
    assert_int_equal(push(f, "never-seen", "orphan", 0, 0), ERR_NOT_FOUND);
    /* The queue went with the session. */
    assert_int_equal(save(f, "c", e, "v3", 0), 0);
    l = load(f, "c");
    assert_int_equal(l.rc, 0);
    assert_int_equal(l.n, 0);

    /* An empty state is a session too. */
    assert_int_equal(save(f, "empty", 0, "", 0), 0);
    l = load(f, "empty");
    assert_int_equal(l.rc, 0);
    assert_int_equal(l.state_len, 0);
}

static void test_fencing_rejects_stale_epochs(void **state)
{
    struct fixture *f = *state;
    uint64_t e1 = claim(f, "c");
    uint64_t e2;
    struct result l;

    assert_int_equal(save(f, "c", e1, "old-owner", 0), 0);
    assert_int_equal(push(f, "c", "m1", 0, 0), 0);
    assert_int_equal(push(f, "c", "m2", 0, 0), 0);
    e2 = claim(f, "c");
    assert_true(e2 > e1);
    assert_int_equal(save(f, "c", e2, "new-owner", 0), 0);

    assert_int_equal(save(f, "c", e1, "stale", 0), ERR_EXISTS);
    assert_int_equal(del(f, "c", e1), ERR_EXISTS);
    assert_int_equal(trim(f, "c", e1, "m1"), ERR_EXISTS);
    assert_int_equal(save(f, "c", 0, "zero", 0), ERR_EXISTS);

    l = load(f, "c");
    assert_int_equal(l.rc, 0);
    assert_memory_equal(l.state, "new-owner", 9);
    assert_int_equal(l.n, 2);

    /* Fencing holds after the new owner deletes and releases too. */
    assert_int_equal(del(f, "c", e2), 0);
    {
        struct result r = {0};
        assert_int_equal(store_owner_release(f->s, "c", e2, on_done, &r), 0);
        run(f);
        assert_int_equal(r.rc, 0);
    }
    assert_int_equal(save(f, "c", e1, "stale", 0), ERR_EXISTS);
    l = load(f, "c");
    assert_int_equal(l.rc, ERR_NOT_FOUND);
}

static void test_session_expiry(void **state)
{
    struct fixture *f = *state;
    uint64_t now = clock_wall_s();
    uint64_t e = claim(f, "c");
    struct result l;

    assert_int_equal(save(f, "c", e, "soon", now + 3600), 0);
    assert_int_equal(push(f, "c", "m1", 0, 0), 0);
    /* Re-saving with a past expiry: the session and its queue are gone at the next touch. */
    assert_int_equal(save(f, "c", e, "gone", now - 1), 0);
    assert_int_equal(push(f, "c", "m2", 0, 0), ERR_NOT_FOUND);
    l = load(f, "c");
    assert_int_equal(l.rc, ERR_NOT_FOUND);
    assert_int_equal(l.n, 0);

    assert_int_equal(save(f, "c", e, "alive", now + 3600), 0);
    l = load(f, "c");
    assert_int_equal(l.rc, 0);
    /* The expired session's queue did not come back with the new one. */
    assert_int_equal(l.n, 0);
    assert_memory_equal(l.state, "alive", 5);

    assert_int_equal(save(f, "never", 0, "forever", 0), 0);
    l = load(f, "never");
    assert_int_equal(l.rc, 0);
}

/* ---- offline queue ------------------------------------------------------------------------ */

static void test_queue_quota_count(void **state)
{
    struct fixture *f = *state;
    struct result l;

    assert_int_equal(save(f, "c", 0, "s", 0), 0);
    assert_int_equal(push(f, "c", "a", 3, 0), 0);
    assert_int_equal(push(f, "c", "b", 3, 0), 0);
    assert_int_equal(push(f, "c", "c", 3, 0), 0);
    assert_int_equal(push(f, "c", "d", 3, 0), ERR_QUOTA);
    /* 0 means unlimited. */
    assert_int_equal(push(f, "c", "e", 0, 0), 0);
    l = load(f, "c");
    assert_int_equal(l.n, 4);
    assert_blob(&l, 0, "a");
    assert_blob(&l, 1, "b");
    assert_blob(&l, 2, "c");
    assert_blob(&l, 3, "e");
}

static void test_queue_quota_bytes(void **state)
{
    struct fixture *f = *state;
    struct result l;

    assert_int_equal(save(f, "c", 0, "s", 0), 0);
    assert_int_equal(push(f, "c", "12345", 0, 10), 0);
    assert_int_equal(push(f, "c", "123456", 0, 10), ERR_QUOTA);
    assert_int_equal(push(f, "c", "12345", 0, 10), 0); /* exactly at the limit */
    assert_int_equal(push(f, "c", "1", 0, 10), ERR_QUOTA);
    assert_int_equal(save(f, "big", 0, "s", 0), 0);
    assert_int_equal(push(f, "big", "12345678901", 0, 10), ERR_QUOTA);
    l = load(f, "c");
    assert_int_equal(l.n, 2);
    /* Trimming frees room again. */
    assert_int_equal(trim(f, "c", 0, "12345"), 0);
    assert_int_equal(push(f, "c", "abcde", 0, 10), 0);
    l = load(f, "c");
    assert_int_equal(l.n, 2);
    assert_blob(&l, 0, "12345");
    assert_blob(&l, 1, "abcde");
}

static int push_keyed(struct fixture *f, const char *id, const char *key, const char *body)
{
    uint8_t e[64];
    size_t n = 1 + strlen(key) + strlen(body);
    assert_true(strlen(key) == STORE_ENTRY_KEY_LEN && n <= sizeof(e));
    e[0] = 0;
    memcpy(e + 1, key, STORE_ENTRY_KEY_LEN);
    memcpy(e + 1 + STORE_ENTRY_KEY_LEN, body, strlen(body));
    struct result r = {0};
    assert_int_equal(store_queue_push(f->s, id, (struct store_blob){e, n}, 0, 0, on_done, &r), 0);
    run(f);
    assert_int_equal(r.calls, 1);
    return r.rc;
}

static void test_queue_trim(void **state)
{
    struct fixture *f = *state;
    uint64_t e = claim(f, "c");
    const char *msgs[] = {"m0", "m1", "m2", "m3", "m4"};
    struct result l;

    assert_int_equal(save(f, "c", e, "s", 0), 0);
    for (int i = 0; i < 5; i++)
        assert_int_equal(push(f, "c", msgs[i], 0, 0), 0);
    /* Entries go by name wherever they are, not by position; a name found nowhere is ignored. */
    assert_int_equal(trim(f, "c", e, "m3 m1 gone"), 0);
    l = load(f, "c");
    assert_int_equal(l.n, 3);
    assert_blob(&l, 0, "m0");
    assert_blob(&l, 1, "m2");
    assert_blob(&l, 2, "m4");
    assert_int_equal(trim(f, "c", e, "m0"), 0);
    assert_int_equal(trim(f, "c", e, "m0"), 0); /* again: nothing left to do */
    l = load(f, "c");
    assert_int_equal(l.n, 2);
    assert_blob(&l, 0, "m2");
    /* A keyed entry is named by its key alone, not by its content. */
    assert_int_equal(push_keyed(f, "c", "KEY00001", "body"), 0);
    assert_int_equal(push_keyed(f, "c", "KEY00002", "body"), 0);
    assert_int_equal(trim(f, "c", e, "\\0KEY00001body"), 0);
    l = load(f, "c");
    assert_int_equal(l.n, 4);
    assert_int_equal(trim(f, "c", e, "KEY00002 m2"), 0);
    l = load(f, "c");
    assert_int_equal(l.n, 2);
    assert_blob(&l, 0, "m4");
    assert_int_equal(l.blob_len[1], 13);
    assert_memory_equal(l.blobs[1], "\0KEY00001body", 13);
    /* Two equal entries: one name takes one of them. */
    assert_int_equal(push(f, "c", "d", 0, 0), 0);
    assert_int_equal(push(f, "c", "d", 0, 0), 0);
    assert_int_equal(trim(f, "c", e, "d KEY00001 m4"), 0);
    l = load(f, "c");
    assert_int_equal(l.n, 1);
    assert_blob(&l, 0, "d");
    /* Emptied, the queue's byte count starts again from 0. */
    assert_int_equal(trim(f, "c", e, "d"), 0);
    l = load(f, "c");
    assert_int_equal(l.n, 0);
    assert_int_equal(push(f, "c", "m5", 0, 2), 0);
    l = load(f, "c");
    assert_int_equal(l.n, 1);
    assert_blob(&l, 0, "m5");
    assert_int_equal(trim(f, "nobody", 0, "m5"), 0);
}

/* ---- retained ----------------------------------------------------------------------------- */

static void test_retained(void **state)
{
    struct fixture *f = *state;
    struct result r = {0};
    int seen_a = 0, seen_c = 0;

    assert_int_equal(store_retain_load(f->s, on_retain, &r), 0);
    run(f);
    assert_int_equal(r.rc, 0);
    assert_int_equal(r.n, 0);

    assert_int_equal(retain_set(f, "a/b", "one"), 0);
    assert_int_equal(retain_set(f, "a/c", "two"), 0);
    assert_int_equal(retain_set(f, "a/b", "three"), 0); /* replaces */
    assert_int_equal(retain_set(f, "x", "four"), 0);
    assert_int_equal(retain_set(f, "x", ""), 0); /* clears */
    assert_int_equal(retain_set(f, "never-set", ""), 0);

    memset(&r, 0, sizeof(r));
    assert_int_equal(store_retain_load(f->s, on_retain, &r), 0);
    assert_int_equal(r.calls, 0);
    run(f);
    assert_int_equal(r.calls, 1);
    assert_int_equal(r.rc, 0);
    assert_int_equal(r.n, 2);
    for (size_t i = 0; i < r.n; i++) {
        if (r.blob_len[i] == 5 && memcmp(r.blobs[i], "three", 5) == 0)
            seen_a++;
        else if (r.blob_len[i] == 3 && memcmp(r.blobs[i], "two", 3) == 0)
            seen_c++;
    }
    assert_int_equal(seen_a, 1);
    assert_int_equal(seen_c, 1);
}

static void on_retain_count(void *ctx, int rc, const struct store_blob *msgs, size_t n)
{
    size_t *count = ctx;
    assert_int_equal(rc, 0);
    for (size_t i = 0; i < n; i++)
        assert_true(msgs[i].len > 0);
    *count = n;
}

static void test_retained_many(void **state)
{
    struct fixture *f = *state;
    struct result r = {0};
    size_t count = 0;
    char topic[32];

    for (int i = 0; i < 5000; i++) {
        (void)snprintf(topic, sizeof(topic), "t/%d", i);
        assert_int_equal(store_retain_set(f->s, topic, blob(topic), on_done, &r), 0);
    }
    /* Clear every other one: deletions must not break lookups along the probe chains. */
    for (int i = 0; i < 5000; i += 2) {
        (void)snprintf(topic, sizeof(topic), "t/%d", i);
        assert_int_equal(store_retain_set(f->s, topic, blob(""), on_done, &r), 0);
    }
    run(f);
    assert_int_equal(r.calls, 7500);
    assert_int_equal(store_retain_load(f->s, on_retain_count, &count), 0);
    run(f);
    assert_int_equal(count, 2500);
}

/* ---- scale -------------------------------------------------------------------------------- */

#define MANY 100000

struct many {
    int claims;
    int saves;
    int loads_ok;
    int bad;
};

static void on_many_claim(void *ctx, int rc, uint64_t epoch, const char *prev_owner,
                          uint64_t prev_epoch)
{
    struct many *m = ctx;
    (void)prev_epoch;
    if (rc != 0 || epoch == 0 || prev_owner != NULL)
        m->bad++;
    m->claims++;
}

static void on_many_save(void *ctx, int rc)
{
    struct many *m = ctx;
    if (rc != 0)
        m->bad++;
    m->saves++;
}

static void on_many_load(void *ctx, int rc, struct store_blob state, const struct store_blob *queue,
                         size_t n)
{
    struct many *m = ctx;
    (void)queue;
    if (rc == 0 && n == 1 && state.len >= 3 && memcmp(state.p, "cl-", 3) == 0)
        m->loads_ok++;
    else
        m->bad++;
}

static void test_100k_sessions(void **state)
{
    struct fixture *f = *state;
    struct many m = {0};
    struct result l;
    char id[32];

    for (int i = 0; i < MANY; i++) {
        (void)snprintf(id, sizeof(id), "cl-%d", i);
        assert_int_equal(store_owner_claim(f->s, id, on_many_claim, &m), 0);
        /* Epochs are 1, 2, 3... in claim order since the store is fresh. */
        assert_int_equal(
            store_session_save(f->s, id, (uint64_t)i + 1, blob(id), 0, on_many_save, &m), 0);
        assert_int_equal(store_queue_push(f->s, id, blob("q"), 10, 0, on_many_save, &m), 0);
    }
    assert_int_equal(m.claims, 0);
    run(f);
    assert_int_equal(m.claims, MANY);
    assert_int_equal(m.saves, 2 * MANY);
    assert_int_equal(m.bad, 0);

    for (int i = 0; i < MANY; i++) {
        (void)snprintf(id, sizeof(id), "cl-%d", i);
        assert_int_equal(store_session_load(f->s, id, on_many_load, &m), 0);
    }
    run(f);
    assert_int_equal(m.loads_ok, MANY);
    assert_int_equal(m.bad, 0);

    (void)snprintf(id, sizeof(id), "cl-%d", MANY / 2);
    l = load(f, id);
    assert_int_equal(l.state_len, strlen(id));
    assert_memory_equal(l.state, id, strlen(id));
    l = load(f, "cl-missing");
    assert_int_equal(l.rc, ERR_NOT_FOUND);
}

/* ---- cluster support ------------------------------------------------------------------------ */

static void on_sleep(uv_timer_t *t)
{
    (void)t;
}

/* Runs the loop for ms: member deadlines follow the loop's clock. */
static void run_for(struct fixture *f, uint64_t ms)
{
    uv_timer_t t;

    assert_int_equal(uv_timer_init(&f->loop, &t), 0);
    assert_int_equal(uv_timer_start(&t, on_sleep, ms, 0), 0);
    run(f);
    uv_close((uv_handle_t *)&t, NULL);
    run(f);
}

static int heartbeat(struct fixture *f, const char *node, const char *info, uint32_t ttl_ms)
{
    struct result r = {0};
    assert_int_equal(store_member_heartbeat(f->s, node, blob(info), ttl_ms, on_done, &r), 0);
    assert_int_equal(r.calls, 0);
    run(f);
    assert_int_equal(r.calls, 1);
    return r.rc;
}

static int leave(struct fixture *f, const char *node)
{
    struct result r = {0};
    assert_int_equal(store_member_leave(f->s, node, on_done, &r), 0);
    run(f);
    assert_int_equal(r.calls, 1);
    return r.rc;
}

/* Lists members (or with owner, sessions owned by it); the result holds the pairs. */
static struct result list_pairs(struct fixture *f, const char *owner)
{
    struct result r = {0};
    if (owner)
        assert_int_equal(store_session_scan_owned(f->s, owner, on_retain, &r), 0);
    else
        assert_int_equal(store_member_list(f->s, on_retain, &r), 0);
    assert_int_equal(r.calls, 0);
    run(f);
    assert_int_equal(r.calls, 1);
    assert_int_equal(r.rc, 0);
    assert_int_equal(r.n % 2, 0);
    return r;
}

/* The second blob of the pair whose first blob is name, or NULL. */
static const char *pair_value(const struct result *r, const char *name, char *out, size_t cap)
{
    for (size_t i = 0; i + 1 < r->n && i + 1 < 16; i += 2) {
        if (r->blob_len[i] == strlen(name) && memcmp(r->blobs[i], name, strlen(name)) == 0) {
            assert_true(r->blob_len[i + 1] < cap);
            memcpy(out, r->blobs[i + 1], r->blob_len[i + 1]);
            out[r->blob_len[i + 1]] = '\0';
            return out;
        }
    }
    return NULL;
}

static void assert_pair(const struct result *r, const char *name, const char *want)
{
    char v[80];
    const char *got = pair_value(r, name, v, sizeof(v));

    assert_non_null(got);
    assert_string_equal(got, want);
}

static struct result gone_of(struct fixture *f)
{
    struct result r = {0};
    assert_int_equal(store_member_gone(f->s, on_retain, &r), 0);
    assert_int_equal(r.calls, 0);
    run(f);
    assert_int_equal(r.calls, 1);
    assert_int_equal(r.rc, 0);
    return r;
}

static int forget(struct fixture *f, const char *node)
{
    struct result r = {0};
    assert_int_equal(store_member_forget(f->s, node, on_done, &r), 0);
    run(f);
    assert_int_equal(r.calls, 1);
    return r.rc;
}

static void test_members(void **state)
{
    struct fixture *f = *state;
    struct result l;
    char v[80];

    l = list_pairs(f, NULL);
    assert_int_equal(l.n, 0);
    assert_int_equal(heartbeat(f, "n1", "10.0.0.1:7000/1", 200), 0);
    assert_int_equal(heartbeat(f, "n2", "10.0.0.2:7000/1", 60000), 0);
    assert_int_equal(heartbeat(f, "n3", "", 200), 0); /* an empty info is an info */
    l = list_pairs(f, NULL);
    assert_int_equal(l.n, 6);
    assert_pair(&l, "n1", "10.0.0.1:7000/1");
    assert_pair(&l, "n2", "10.0.0.2:7000/1");
    assert_pair(&l, "n3", "");

    /* A renewed heartbeat moves the deadline and replaces the info; n1 missed its own. */
    run_for(f, 120);
    assert_int_equal(heartbeat(f, "n3", "10.0.0.3:7000/2", 200), 0);
    run_for(f, 120);
    l = list_pairs(f, NULL);
    assert_int_equal(l.n, 4);
    assert_pair(&l, "n3", "10.0.0.3:7000/2");
    assert_null(pair_value(&l, "n1", v, sizeof(v)));

    /* Then n3 misses its renewed deadline. */
    run_for(f, 120);
    l = list_pairs(f, NULL);
    assert_int_equal(l.n, 2);
    assert_pair(&l, "n2", "10.0.0.2:7000/1");
    assert_null(pair_value(&l, "n3", v, sizeof(v)));

    /* An expired member comes back with its next heartbeat. */
    assert_int_equal(heartbeat(f, "n1", "10.0.0.1:7000/2", 60000), 0);
    assert_int_equal(leave(f, "n2"), 0);
    assert_int_equal(leave(f, "n2"), 0);
    assert_int_equal(leave(f, "never-joined"), 0);
    l = list_pairs(f, NULL);
    assert_int_equal(l.n, 2);
    assert_pair(&l, "n1", "10.0.0.1:7000/2");

    /* Gone: n3 expired and n2 left; n1 is alive; a node that never heartbeated is unknown. */
    l = gone_of(f);
    assert_int_equal(l.n, 2);
    assert_true(has_blob(&l, "n2") && has_blob(&l, "n3"));
    assert_int_equal(forget(f, "n3"), 0);
    assert_int_equal(forget(f, "never-joined"), 0);
    l = gone_of(f);
    assert_int_equal(l.n, 1);
    assert_true(has_blob(&l, "n2"));
}

static void test_scan_owned(void **state)
{
    struct fixture *f = *state;
    uint64_t now = clock_wall_s();
    struct result l;
    char v[80];

    assert_int_equal(save(f, "c1", claim(f, "c1"), "s1", 0), 0);
    assert_int_equal(save(f, "c2", claim(f, "c2"), "s2", now + 3600), 0);
    assert_int_equal(save(f, "unowned", 0, "s3", 0), 0);
    {
        uint64_t e = claim(f, "released");
        struct result r = {0};
        assert_int_equal(save(f, "released", e, "s4", 0), 0);
        assert_int_equal(store_owner_release(f->s, "released", e, on_done, &r), 0);
        run(f);
        assert_int_equal(r.rc, 0);
    }
    assert_int_equal(save(f, "expired", claim(f, "expired"), "s5", now - 1), 0);
    (void)claim(f, "no-session");

    l = list_pairs(f, "node-a");
    assert_int_equal(l.n, 4);
    assert_pair(&l, "c1", "s1");
    assert_pair(&l, "c2", "s2");
    assert_null(pair_value(&l, "unowned", v, sizeof(v)));
    /* Every claim of a memory store is its own node's. */
    l = list_pairs(f, "node-b");
    assert_int_equal(l.n, 0);
    l = list_pairs(f, "node");
    assert_int_equal(l.n, 0);
}

static struct result adopt(struct fixture *f, const char *id, const char *dead)
{
    struct result r = {0};
    assert_int_equal(store_owner_adopt(f->s, id, dead, on_claim, &r), 0);
    assert_int_equal(r.calls, 0);
    run(f);
    assert_int_equal(r.calls, 1);
    return r;
}

static void test_owner_adopt(void **state)
{
    struct fixture *f = *state;
    uint64_t e1 = claim(f, "c");
    struct result r, l;

    assert_int_equal(save(f, "c", e1, "before", 0), 0);
    /* Not the owner named: nothing changes, and the caller learns who owns it. */
    r = adopt(f, "c", "node-b");
    assert_int_equal(r.rc, ERR_EXISTS);
    assert_int_equal(r.epoch, 0);
    assert_true(r.has_prev_owner);
    assert_string_equal(r.prev_owner, "node-a");
    assert_int_equal(r.prev_epoch, e1);
    assert_int_equal(save(f, "c", e1, "still-owner", 0), 0);

    r = adopt(f, "c", "node-a");
    assert_int_equal(r.rc, 0);
    assert_true(r.epoch > e1);
    assert_string_equal(r.prev_owner, "node-a");
    assert_int_equal(r.prev_epoch, e1);
    /* The old epoch is fenced off; the new one writes. */
    assert_int_equal(save(f, "c", e1, "stale", 0), ERR_EXISTS);
    assert_int_equal(save(f, "c", r.epoch, "adopted", 0), 0);
    l = load(f, "c");
    assert_memory_equal(l.state, "adopted", 7);
    assert_true(claim(f, "c") > r.epoch);

    /* Unowned ids are not adopted. */
    r = adopt(f, "never-claimed", "node-a");
    assert_int_equal(r.rc, ERR_EXISTS);
    assert_false(r.has_prev_owner);
    assert_int_equal(r.prev_epoch, 0);
    {
        uint64_t e = claim(f, "gone");
        struct result rel = {0};
        assert_int_equal(store_owner_release(f->s, "gone", e, on_done, &rel), 0);
        run(f);
        assert_int_equal(rel.rc, 0);
    }
    r = adopt(f, "gone", "node-a");
    assert_int_equal(r.rc, ERR_EXISTS);
    assert_false(r.has_prev_owner);
}

static int adopt_lock(struct fixture *f, const char *dead, uint32_t ttl_ms)
{
    struct result r = {0};
    assert_int_equal(store_node_adopt_lock(f->s, dead, ttl_ms, on_done, &r), 0);
    assert_int_equal(r.calls, 0);
    run(f);
    assert_int_equal(r.calls, 1);
    return r.rc;
}

static void test_adopt_lock(void **state)
{
    struct fixture *f = *state;

    /* The only node of a memory store wins, and wins again. */
    assert_int_equal(adopt_lock(f, "dead", 200), 0);
    assert_int_equal(adopt_lock(f, "dead", 200), 0);
    run_for(f, 250);
    assert_int_equal(adopt_lock(f, "dead", 200), 0);
    assert_int_equal(adopt_lock(f, "other-dead", 200), 0);
}

static int park(struct fixture *f, const char *node, const char *m)
{
    struct result r = {0};
    assert_int_equal(store_park_push(f->s, node, blob(m), on_done, &r), 0);
    assert_int_equal(r.calls, 0);
    run(f);
    assert_int_equal(r.calls, 1);
    return r.rc;
}

static struct result take(struct fixture *f, const char *node, size_t max)
{
    struct result r = {0};
    assert_int_equal(store_park_take(f->s, node, max, on_retain, &r), 0);
    assert_int_equal(r.calls, 0);
    run(f);
    assert_int_equal(r.calls, 1);
    assert_int_equal(r.rc, 0);
    return r;
}

static void test_park(void **state)
{
    struct fixture *f = *state;
    const char *msgs[] = {"m0", "m1", "", "m3", "m4"};
    struct result t, a = {0}, b = {0};

    t = take(f, "dead", 10);
    assert_int_equal(t.n, 0);
    for (int i = 0; i < 5; i++)
        assert_int_equal(park(f, "dead", msgs[i]), 0);
    assert_int_equal(park(f, "other", "o0"), 0);

    t = take(f, "dead", 2);
    assert_int_equal(t.n, 2);
    assert_blob(&t, 0, "m0");
    assert_blob(&t, 1, "m1");
    t = take(f, "dead", 1);
    assert_int_equal(t.n, 1);
    assert_blob(&t, 0, "");
    assert_int_equal(park(f, "dead", "m5"), 0); /* appended behind what is left */

    /* Two takers issued together split the list without sharing a message. */
    assert_int_equal(store_park_take(f->s, "dead", 2, on_retain, &a), 0);
    assert_int_equal(store_park_take(f->s, "dead", 2, on_retain, &b), 0);
    run(f);
    assert_int_equal(a.n, 2);
    assert_blob(&a, 0, "m3");
    assert_blob(&a, 1, "m4");
    assert_int_equal(b.n, 1);
    assert_blob(&b, 0, "m5");
    t = take(f, "dead", SIZE_MAX);
    assert_int_equal(t.n, 0);

    /* Another node's list was not touched, and a list emptied can fill again. */
    t = take(f, "other", SIZE_MAX);
    assert_int_equal(t.n, 1);
    assert_blob(&t, 0, "o0");
    assert_int_equal(park(f, "dead", "m6"), 0);
    t = take(f, "dead", 5);
    assert_int_equal(t.n, 1);
    assert_blob(&t, 0, "m6");
}

static void test_cluster_ops_contract(void **state)
{
    struct fixture *f = *state;
    struct result r[8], bad_r = {0};
    struct store_blob bad = {NULL, 3};

    assert_int_equal(store_member_heartbeat(f->s, "n", blob("i"), 0, on_done, &bad_r), ERR_INVALID);
    assert_int_equal(store_member_heartbeat(f->s, "", blob("i"), 10, on_done, &bad_r), ERR_INVALID);
    assert_int_equal(store_member_heartbeat(f->s, "n", bad, 10, on_done, &bad_r), ERR_INVALID);
    assert_int_equal(store_member_heartbeat(f->s, "n", blob("i"), 10, NULL, &bad_r), ERR_INVALID);
    assert_int_equal(store_member_leave(f->s, NULL, on_done, &bad_r), ERR_INVALID);
    assert_int_equal(store_member_list(NULL, on_retain, &bad_r), ERR_INVALID);
    assert_int_equal(store_member_list(f->s, NULL, &bad_r), ERR_INVALID);
    assert_int_equal(store_session_scan_owned(f->s, "", on_retain, &bad_r), ERR_INVALID);
    assert_int_equal(store_owner_adopt(f->s, "c", "", on_claim, &bad_r), ERR_INVALID);
    assert_int_equal(store_owner_adopt(f->s, NULL, "n", on_claim, &bad_r), ERR_INVALID);
    assert_int_equal(store_node_adopt_lock(f->s, "n", 0, on_done, &bad_r), ERR_INVALID);
    assert_int_equal(store_node_adopt_lock(f->s, "", 10, on_done, &bad_r), ERR_INVALID);
    assert_int_equal(store_park_push(f->s, "n", bad, on_done, &bad_r), ERR_INVALID);
    assert_int_equal(store_park_push(NULL, "n", blob("m"), on_done, &bad_r), ERR_INVALID);
    assert_int_equal(store_park_take(f->s, "n", 0, on_retain, &bad_r), ERR_INVALID);
    assert_int_equal(store_park_take(f->s, "", 1, on_retain, &bad_r), ERR_INVALID);

    /* Never called back from inside the call; ERR_CANCELED with no results on destroy. */
    memset(r, 0, sizeof(r));
    assert_int_equal(store_member_heartbeat(f->s, "n", blob("i"), 1000, on_done, &r[0]), 0);
    assert_int_equal(store_member_list(f->s, on_retain, &r[1]), 0);
    assert_int_equal(store_member_leave(f->s, "n", on_done, &r[2]), 0);
    assert_int_equal(store_session_scan_owned(f->s, "node-a", on_retain, &r[3]), 0);
    assert_int_equal(store_owner_adopt(f->s, "c", "node-a", on_claim, &r[4]), 0);
    assert_int_equal(store_node_adopt_lock(f->s, "n", 1000, on_done, &r[5]), 0);
    assert_int_equal(store_park_push(f->s, "n", blob("m"), on_done, &r[6]), 0);
    assert_int_equal(store_park_take(f->s, "n", 1, on_retain, &r[7]), 0);
    for (int i = 0; i < 8; i++)
        assert_int_equal(r[i].calls, 0);
    store_destroy(&f->s);
    run(f);
    for (int i = 0; i < 8; i++) {
        assert_int_equal(r[i].calls, 1);
        assert_int_equal(r[i].rc, ERR_CANCELED);
        assert_int_equal(r[i].n, 0);
    }
    assert_false(r[4].has_prev_owner);
    assert_int_equal(bad_r.calls, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_create_urls),
        cmocka_unit_test_setup_teardown(test_invalid_args_no_callback, setup, teardown),
        cmocka_unit_test_setup_teardown(test_every_api_is_async, setup, teardown),
        cmocka_unit_test_setup_teardown(test_request_from_callback_is_deferred, setup, teardown),
        cmocka_unit_test_setup_teardown(test_blobs_are_copied, setup, teardown),
        cmocka_unit_test_setup_teardown(test_destroy_cancels_pending, setup, teardown),
        cmocka_unit_test_setup_teardown(test_destroy_idle_store, setup, teardown),
        cmocka_unit_test_setup_teardown(test_destroy_from_callback, setup, teardown),
        cmocka_unit_test_setup_teardown(test_claim_epochs_and_prev_owner, setup, teardown),
        cmocka_unit_test_setup_teardown(test_release, setup, teardown),
        cmocka_unit_test_setup_teardown(test_session_roundtrip_and_delete, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fencing_rejects_stale_epochs, setup, teardown),
        cmocka_unit_test_setup_teardown(test_session_expiry, setup, teardown),
        cmocka_unit_test_setup_teardown(test_queue_quota_count, setup, teardown),
        cmocka_unit_test_setup_teardown(test_queue_quota_bytes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_queue_trim, setup, teardown),
        cmocka_unit_test_setup_teardown(test_retained, setup, teardown),
        cmocka_unit_test_setup_teardown(test_retained_many, setup, teardown),
        cmocka_unit_test_setup_teardown(test_100k_sessions, setup, teardown),
        cmocka_unit_test_setup_teardown(test_members, setup, teardown),
        cmocka_unit_test_setup_teardown(test_scan_owned, setup, teardown),
        cmocka_unit_test_setup_teardown(test_owner_adopt, setup, teardown),
        cmocka_unit_test_setup_teardown(test_adopt_lock, setup, teardown),
        cmocka_unit_test_setup_teardown(test_park, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cluster_ops_contract, setup, teardown),
    };
    log_set_level(LOG_LEVEL_WARN);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
