/*
 * Process-wide cached time. One event loop per process, so a plain static is enough.
 */
#include "node/clock.h"

#include <time.h>

static uint64_t mono_ms;
static uint64_t wall_s;

void clock_refresh(void)
{
    struct timespec ts;
    (void)clock_gettime(CLOCK_MONOTONIC, &ts);
    mono_ms = (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
    (void)clock_gettime(CLOCK_REALTIME, &ts);
    wall_s = (uint64_t)ts.tv_sec;
}

uint64_t clock_now_ms(void)
{
    if (mono_ms == 0)
        clock_refresh();
    return mono_ms;
}

uint64_t clock_wall_s(void)
{
    if (wall_s == 0)
        clock_refresh();
    return wall_s;
}

uint64_t clock_precise_us(void)
{
    struct timespec ts;
    (void)clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}
