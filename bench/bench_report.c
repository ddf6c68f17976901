/*
 * Report formatting. The JSON object is written by hand (fixed keys, numbers only, no
 * escaping needed) so that the compare scripts can read it with any JSON parser; its keys are
 * documented in bench/README.md and are a contract for those scripts.
 */
#include "bench/bench_report.h"

#include <inttypes.h>
#include <stddef.h>

double bench_report_rate(uint64_t count, const struct bench_window *w, double elapsed_s)
{
    double win = w->first_us ? (double)(w->last_us - w->first_us) / 1e6 : 0;
    if (win >= 0.001 && count > 1)
        return (double)count / win;
    return elapsed_s > 0 ? (double)count / elapsed_s : 0;
}

void bench_report_progress(FILE *f, const struct bench_sample *s)
{
    fprintf(f,
            "t=%.0fs conn=%" PRIu64 " conn/s=%" PRIu64 " sent/s=%" PRIu64 " acked/s=%" PRIu64
            " recv/s=%" PRIu64 " err=%" PRIu64 "\n",
            s->t_s, s->connected, s->conn, s->sent, s->acked, s->recv, s->errors);
    fflush(f);
}

static const double pcts[] = {50, 90, 99, 99.9};
static const char *const pct_names[] = {"p50", "p90", "p99", "p99_9"};

static void text_hist(FILE *f, const char *name, const struct bench_hist *h)
{
    if (!h || h->count == 0)
        return;
    fprintf(f, "%s count=%" PRIu64 " min=%" PRIu64 " mean=%.1f", name, h->count, h->min,
            bench_hist_mean(h));
    for (size_t i = 0; i < sizeof(pcts) / sizeof(pcts[0]); i++)
        fprintf(f, " %s=%" PRIu64, pct_names[i], bench_hist_percentile(h, pcts[i]));
    fprintf(f, " max=%" PRIu64 "\n", h->max);

    /* One row per power of two: the log-linear buckets are too fine to print. */
    uint64_t cum = 0, row = 0, lo = 0;
    for (size_t i = 0; i < BENCH_HIST_BUCKETS; i++) {
        uint64_t hi = bench_hist_bucket_high(i);
        row += h->buckets[i];
        bool is_row_end = ((hi + 1) & hi) == 0 || i + 1 == BENCH_HIST_BUCKETS;
        if (!is_row_end)
            continue;
        if (row) {
            cum += row;
            double share = 100.0 * (double)row / (double)h->count;
            int bar = (int)(share / 2 + 0.5);
            fprintf(f, "  %10" PRIu64 " .. %-10" PRIu64 " %12" PRIu64 " %6.2f%% %7.3f%% %.*s\n", lo,
                    hi, row, share, 100.0 * (double)cum / (double)h->count, bar,
                    "##################################################");
        }
        row = 0;
        lo = hi + 1;
    }
}

void bench_report_text(FILE *f, const struct bench_stats *st)
{
    double el = st->elapsed_s;
    fprintf(f,
            "mode=%s clients=%u connected=%" PRIu64 " conn/s=%.0f conn_err=%" PRIu64
            " subscribed=%" PRIu64 " disconnected=%" PRIu64 " errors=%" PRIu64 " elapsed=%.2fs\n",
            st->mode, st->clients, st->connected,
            bench_report_rate(st->connected, &st->conn_win, el), st->conn_errors, st->subscribed,
            st->disconnected, st->errors, el);
    fprintf(f,
            "sent=%" PRIu64 " (%.0f/s) acked=%" PRIu64 " (%.0f/s) recv=%" PRIu64
            " (%.0f/s) bytes_sent=%" PRIu64 " bytes_recv=%" PRIu64 "\n",
            st->sent, bench_report_rate(st->sent, &st->sent_win, el), st->acked,
            bench_report_rate(st->acked, &st->acked_win, el), st->recv,
            bench_report_rate(st->recv, &st->recv_win, el), st->bytes_sent, st->bytes_recv);
    text_hist(f, "connect_us", st->conn_latency);
    text_hist(f, "latency_us", st->latency);
    if (st->has_seq) {
        const struct bench_seq_stats *s = &st->seq;
        fprintf(f,
                "loss streams=%" PRIu64 " unique=%" PRIu64 " lost=%" PRIu64 " duplicates=%" PRIu64
                " reordered=%" PRIu64 " late=%" PRIu64 " nohdr=%" PRIu64 "\n",
                s->streams, s->unique, s->lost, s->duplicates, s->reordered, s->late,
                st->nohdr + s->invalid);
    }
    fflush(f);
}

static void json_hist(FILE *f, const char *key, const struct bench_hist *h)
{
    if (!h) {
        fprintf(f, ",\"%s\":null", key);
        return;
    }
    fprintf(f, ",\"%s\":{\"count\":%" PRIu64 ",\"min\":%" PRIu64 ",\"mean\":%.1f", key, h->count,
            h->count ? h->min : 0, bench_hist_mean(h));
    for (size_t i = 0; i < sizeof(pcts) / sizeof(pcts[0]); i++)
        fprintf(f, ",\"%s\":%" PRIu64, pct_names[i], bench_hist_percentile(h, pcts[i]));
    fprintf(f, ",\"max\":%" PRIu64 "}", h->max);
}

static void json_series(FILE *f, const char *key, const struct bench_stats *st, size_t off)
{
    fprintf(f, ",\"%s\":[", key);
    for (uint32_t i = 0; i < st->n_samples; i++) {
        uint64_t v = *(const uint64_t *)((const char *)&st->samples[i] + off);
        fprintf(f, "%s%" PRIu64, i ? "," : "", v);
    }
    fputc(']', f);
}

void bench_report_json(FILE *f, const struct bench_stats *st)
{
    double el = st->elapsed_s;
    fprintf(f,
            "{\"mode\":\"%s\",\"clients\":%u,\"elapsed_s\":%.3f,\"connected\":%" PRIu64
            ",\"conn_errors\":%" PRIu64 ",\"subscribed\":%" PRIu64 ",\"disconnected\":%" PRIu64
            ",\"errors\":%" PRIu64,
            st->mode, st->clients, el, st->connected, st->conn_errors, st->subscribed,
            st->disconnected, st->errors);
    fprintf(f,
            ",\"sent\":%" PRIu64 ",\"acked\":%" PRIu64 ",\"recv\":%" PRIu64
            ",\"bytes_sent\":%" PRIu64 ",\"bytes_recv\":%" PRIu64,
            st->sent, st->acked, st->recv, st->bytes_sent, st->bytes_recv);
    fprintf(f, ",\"conn_rate\":%.1f,\"sent_rate\":%.1f,\"acked_rate\":%.1f,\"recv_rate\":%.1f",
            bench_report_rate(st->connected, &st->conn_win, el),
            bench_report_rate(st->sent, &st->sent_win, el),
            bench_report_rate(st->acked, &st->acked_win, el),
            bench_report_rate(st->recv, &st->recv_win, el));
    json_hist(f, "latency_us", st->latency);
    json_hist(f, "connect_us", st->conn_latency);
    if (st->has_seq) {
        const struct bench_seq_stats *s = &st->seq;
        fprintf(f,
                ",\"seq\":{\"streams\":%" PRIu64 ",\"received\":%" PRIu64 ",\"unique\":%" PRIu64
                ",\"lost\":%" PRIu64 ",\"duplicates\":%" PRIu64 ",\"reordered\":%" PRIu64
                ",\"late\":%" PRIu64 ",\"nohdr\":%" PRIu64 "}",
                s->streams, s->received, s->unique, s->lost, s->duplicates, s->reordered, s->late,
                st->nohdr + s->invalid);
    } else {
        fputs(",\"seq\":null", f);
    }
    json_series(f, "conn_per_s", st, offsetof(struct bench_sample, conn));
    json_series(f, "sent_per_s", st, offsetof(struct bench_sample, sent));
    json_series(f, "acked_per_s", st, offsetof(struct bench_sample, acked));
    json_series(f, "recv_per_s", st, offsetof(struct bench_sample, recv));
    fputs("}\n", f);
    fflush(f);
}
