#ifndef SHOAL_NODE_CLOCK_H
#define SHOAL_NODE_CLOCK_H

/*
 * Cached clocks, refreshed once per loop pass (clock_refresh) so the hot path never makes a
 * system call to read the time. Before the first refresh they read the system clock.
 */

#include <stdint.h>

/* Re-reads the monotonic and wall clocks. */
void clock_refresh(void);
/* Monotonic milliseconds, as of the last refresh. */
uint64_t clock_now_ms(void);
/* Wall-clock seconds since the epoch, as of the last refresh. */
uint64_t clock_wall_s(void);
/* Uncached monotonic microseconds, for latency measurement. */
uint64_t clock_precise_us(void);

#endif
