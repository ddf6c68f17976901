/*
 * Log sinks and formatting. Lines are assembled in a stack buffer and written with one
 * write(2) so that concurrent processes sharing a file do not interleave partial lines.
 */
#include "node/log.h"

#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "node/clock.h"
#include "node/err.h"

enum log_level log_level_current = LOG_LEVEL_INFO;
static int sink_fd = 2;
static bool sink_owned;
static bool with_timestamp = true;

static const char *const level_names[] = {"error", "warn", "info", "debug"};

void log_set_level(enum log_level lvl)
{
    log_level_current = lvl;
}

int log_set_dest(int dest_fd, const char *path)
{
    if (dest_fd >= 0) {
        log_close();
        sink_fd = dest_fd;
        return 0;
    }
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0)
        return ERR_IO;
    log_close();
    sink_fd = fd;
    sink_owned = true;
    return 0;
}

void log_set_timestamp(bool on)
{
    with_timestamp = on;
}

void log_close(void)
{
    if (sink_owned)
        (void)close(sink_fd);
    sink_owned = false;
    sink_fd = 2;
}

void log_write(enum log_level lvl, const char *subsys, const char *fmt, ...)
{
    char line[1024];
    size_t n = 0;

    if (with_timestamp) {
        struct timespec ts;
        struct tm tm;
        (void)clock_gettime(CLOCK_REALTIME, &ts);
        (void)gmtime_r(&ts.tv_sec, &tm);
        n += strftime(line, sizeof(line), "%Y-%m-%dT%H:%M:%S", &tm);
        int k = snprintf(line + n, sizeof(line) - n, ".%03ldZ ", ts.tv_nsec / 1000000);
        n += k > 0 ? (size_t)k : 0;
    }
    int k = snprintf(line + n, sizeof(line) - n, "%s %s: ", level_names[lvl], subsys);
    n += k > 0 ? (size_t)k : 0;
    if (n < sizeof(line)) {
        va_list ap;
        va_start(ap, fmt);
        k = vsnprintf(line + n, sizeof(line) - n, fmt, ap);
        va_end(ap);
        n += k > 0 ? (size_t)k : 0;
    }
    if (n > sizeof(line) - 2)
        n = sizeof(line) - 2;
    line[n++] = '\n';
    ssize_t w = write(sink_fd, line, n);
    (void)w;
}

const char *log_escape(char *out, size_t cap, const void *s, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *p = s;
    size_t o = 0;

    if (cap == 0)
        return out;
    for (size_t i = 0; i < len && o + 5 < cap; i++) {
        unsigned char c = p[i];
        if (c >= 0x21 && c < 0x7f && c != '\\' && c != '"' && c != '=') {
            out[o++] = (char)c;
        } else {
            out[o++] = '\\';
            out[o++] = 'x';
            out[o++] = hex[c >> 4];
            out[o++] = hex[c & 15];
        }
    }
    if (o + 5 >= cap && len > 0 && o < cap - 3) {
        out[o++] = '.';
        out[o++] = '.';
    }
    out[o] = '\0';
    return out;
}

bool log_ratelimit_ok(struct log_bucket *b)
{
    uint64_t now = clock_now_ms();
    if (now - b->window_ms >= 1000) {
        b->window_ms = now;
        b->count = 0;
    }
    return ++b->count <= 10;
}
