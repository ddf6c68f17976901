/* Timing wheel: arming, re-arming, cancelling, long deadlines and callbacks that re-arm. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "node/keepalive.h"

struct probe {
    struct keepalive_entry e;
    int fired;
    uint64_t fired_at;
    uint64_t rearm_to;
    struct keepalive_wheel *w;
};

static void on_fire(struct keepalive_entry *e, uint64_t now_ms)
{
    struct probe *p = (struct probe *)(void *)e;
    p->fired++;
    p->fired_at = now_ms;
    if (p->rearm_to) {
        uint64_t t = p->rearm_to;
        p->rearm_to = 0;
        keepalive_arm(p->w, &p->e, t, on_fire);
    }
}

static void test_fires_once_after_due(void **state)
{
    (void)state;
    struct keepalive_wheel w;
    struct probe p = {0};
    keepalive_wheel_init(&w, 1000);
    keepalive_arm(&w, &p.e, 2500, on_fire);
    assert_true(keepalive_is_armed(&p.e));
    keepalive_advance(&w, 2000);
    assert_int_equal(p.fired, 0);
    keepalive_advance(&w, 2600);
    assert_int_equal(p.fired, 0); /* the slot holding 2500 completes at 2750 */
    keepalive_advance(&w, 2800);
    assert_int_equal(p.fired, 1);
    assert_false(keepalive_is_armed(&p.e));
    keepalive_advance(&w, 10000);
    assert_int_equal(p.fired, 1);
}

static void test_cancel(void **state)
{
    (void)state;
    struct keepalive_wheel w;
    struct probe a = {0}, b = {0}, c = {0};
    keepalive_wheel_init(&w, 0);
    keepalive_arm(&w, &a.e, 500, on_fire);
    keepalive_arm(&w, &b.e, 500, on_fire);
    keepalive_arm(&w, &c.e, 500, on_fire);
    keepalive_cancel(&b.e);
    keepalive_cancel(&b.e); /* idempotent */
    keepalive_advance(&w, 2000);
    assert_int_equal(a.fired, 1);
    assert_int_equal(b.fired, 0);
    assert_int_equal(c.fired, 1);
}

static void test_long_deadline_survives_revolutions(void **state)
{
    (void)state;
    struct keepalive_wheel w;
    struct probe p = {0};
    uint64_t rev = (uint64_t)KEEPALIVE_SLOTS * KEEPALIVE_SLOT_MS;
    keepalive_wheel_init(&w, 0);
    keepalive_arm(&w, &p.e, 3 * rev + 100, on_fire);
    for (uint64_t t = 0; t < 3 * rev; t += 1000)
        keepalive_advance(&w, t);
    assert_int_equal(p.fired, 0);
    keepalive_advance(&w, 3 * rev + 1000);
    assert_int_equal(p.fired, 1);
}

static void test_rearm_from_callback(void **state)
{
    (void)state;
    struct keepalive_wheel w;
    struct probe p = {0};
    keepalive_wheel_init(&w, 0);
    p.w = &w;
    p.rearm_to = 5000;
    keepalive_arm(&w, &p.e, 1000, on_fire);
    keepalive_advance(&w, 1500);
    assert_int_equal(p.fired, 1);
    assert_true(keepalive_is_armed(&p.e));
    keepalive_advance(&w, 4000);
    assert_int_equal(p.fired, 1);
    keepalive_advance(&w, 6000);
    assert_int_equal(p.fired, 2);
}

static void test_past_deadline_fires_next_pass(void **state)
{
    (void)state;
    struct keepalive_wheel w;
    struct probe p = {0};
    keepalive_wheel_init(&w, 10000);
    keepalive_advance(&w, 20000);
    keepalive_arm(&w, &p.e, 100, on_fire); /* already in the past */
    keepalive_advance(&w, 20300);
    assert_int_equal(p.fired, 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fires_once_after_due),
        cmocka_unit_test(test_cancel),
        cmocka_unit_test(test_long_deadline_survives_revolutions),
        cmocka_unit_test(test_rearm_from_callback),
        cmocka_unit_test(test_past_deadline_fires_next_pass),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
