/*
 * Signal handling through uv_signal_t so handlers run on the loop like any other event.
 */
#include "node/signals.h"

#include <signal.h>

#include "node/broker.h"
#include "node/drain.h"
#include "node/log.h"
#include "node/security.h"

static void on_stop_signal(uv_signal_t *h, int signum)
{
    struct broker *b = h->data;
    log_info("signals", "received signal=%d", signum);
    drain_start(b);
}

static void on_hup(uv_signal_t *h, int signum)
{
    (void)signum;
    /* Security files only: listeners and limits need a restart, as with mosquitto. */
    log_info("signals", "SIGHUP: reloading password, acl, certificate and crl files");
    security_reload(h->data);
}

int signals_start(struct broker *b)
{
    uv_signal_t *hs[] = {&b->sigterm, &b->sigint, &b->sighup};
    int nums[] = {SIGTERM, SIGINT, SIGHUP};
    for (int i = 0; i < 3; i++) {
        int rc = uv_signal_init(b->loop, hs[i]);
        if (rc < 0)
            return rc;
        hs[i]->data = b;
        rc = uv_signal_start(hs[i], nums[i] == SIGHUP ? on_hup : on_stop_signal, nums[i]);
        if (rc < 0)
            return rc;
        /* Signals never keep the loop alive, and stay caught until the very end so a second
         * SIGTERM during shutdown cannot kill the process half-way. */
        uv_unref((uv_handle_t *)hs[i]);
    }
    return 0;
}

void signals_stop(struct broker *b)
{
    uv_signal_t *hs[] = {&b->sigterm, &b->sigint, &b->sighup};
    for (int i = 0; i < 3; i++)
        if (hs[i]->loop && !uv_is_closing((uv_handle_t *)hs[i]))
            uv_close((uv_handle_t *)hs[i], NULL);
}
