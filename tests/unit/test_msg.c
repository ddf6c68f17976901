/* Shared messages: reference counting, recycling, expiry and the store blob format. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "node/buf.h"
#include "node/msg.h"

static void test_refcount_and_layout(void **state)
{
    (void)state;
    uint64_t live = msg_live_count();
    struct msg *m = msg_create("a/b", 3, "\x01\x01", 2, "hello", 5);
    assert_int_equal(msg_live_count(), live + 1);
    assert_string_equal(m->topic, "a/b");
    assert_memory_equal(m->props, "\x01\x01", 2);
    assert_memory_equal(m->payload, "hello", 5);
    struct msg *r = msg_ref(m);
    assert_int_equal(m->refs, 2);
    msg_unref(&r);
    assert_null(r);
    assert_int_equal(msg_live_count(), live + 1);
    msg_unref(&m);
    assert_null(m);
    assert_int_equal(msg_live_count(), live);
}

static void test_large_and_recycled(void **state)
{
    (void)state;
    static uint8_t big[100000];
    memset(big, 0x5a, sizeof(big));
    for (int i = 0; i < 1000; i++) {
        struct msg *a = msg_create("t", 1, NULL, 0, big, (size_t)(i % 2 ? 10 : sizeof(big)));
        assert_int_equal(a->payload[a->payload_len - 1], 0x5a);
        msg_unref(&a);
    }
}

static void test_expiry(void **state)
{
    (void)state;
    struct msg *m = msg_create("t", 1, NULL, 0, "x", 1);
    assert_false(msg_is_expired(m, 1000));
    assert_int_equal(msg_expiry_left_s(m, 1000), 0);
    m->expiry_ms = 5000;
    assert_int_equal(msg_expiry_left_s(m, 1000), 4);
    assert_int_equal(msg_expiry_left_s(m, 4500), 1);
    assert_false(msg_is_expired(m, 4999));
    assert_true(msg_is_expired(m, 5000));
    msg_unref(&m);
}

static void test_blob_round_trip(void **state)
{
    (void)state;
    struct msg *m = msg_create("x/y/z", 5, "\x26\x00\x01k\x00\x01v", 7, "payload", 7);
    m->qos = 2;
    m->retain = true;
    m->expiry_ms = 10000; /* 9 s left at now=1000 */
    size_t n = msg_blob_size(m);
    uint8_t *blob = xmalloc(n);
    msg_blob_write(m, blob, 1000, 50000000);
    /* Read back on another node whose monotonic clock differs, 2 s later in wall time. */
    struct msg *r = msg_blob_read(blob, n, 777000, 50002000);
    assert_non_null(r);
    assert_string_equal(r->topic, "x/y/z");
    assert_int_equal(r->props_len, 7);
    assert_memory_equal(r->props, m->props, 7);
    assert_int_equal(r->payload_len, 7);
    assert_memory_equal(r->payload, "payload", 7);
    assert_int_equal(r->qos, 2);
    assert_true(r->retain);
    assert_int_equal(r->expiry_ms, 777000 + 7000);
    /* Truncated, bad version and inconsistent lengths are refused. */
    assert_null(msg_blob_read(blob, n - 1, 0, 0));
    assert_null(msg_blob_read(blob, MSG_BLOB_HEADER - 1, 0, 0));
    blob[0] = 9;
    assert_null(msg_blob_read(blob, n, 0, 0));
    blob[0] = 1;
    blob[1] = 3;
    assert_null(msg_blob_read(blob, n, 0, 0));
    free(blob);
    msg_unref(&r);
    msg_unref(&m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_refcount_and_layout),
        cmocka_unit_test(test_large_and_recycled),
        cmocka_unit_test(test_expiry),
        cmocka_unit_test(test_blob_round_trip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
