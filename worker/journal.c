/* journal.c: the unconfirmed messages of one attempt, two queues (metrics, log) in the order sent
 * (see journal.h). */
#include "journal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "umdq.h"

typedef struct entry {
    int64_t key;       /* metrics: seq; log: offset */
    char *data;        /* owned */
    size_t len;
    int64_t sent_ms;   /* when it was last sent */
    struct entry *next;
} entry;

typedef struct {
    entry *head, *tail; /* oldest first */
    size_t bytes;       /* of the entries held */
    size_t max;
} queue;

struct journal {
    int64_t job, attempt;
    char lease[80];
    queue metrics, log;
    int64_t next_seq;   /* the number of the next metrics message */
    int64_t log_end;    /* the end of the log bytes added so far */
    int64_t dropped_entries, dropped_bytes;
};

int journal_new(int64_t job, int64_t attempt, const char *lease, journal **out) {
    *out = NULL;
    journal *j = calloc(1, sizeof *j);
    if (!j) return UMDQ_ENOMEM;
    j->job = job;
    j->attempt = attempt;
    snprintf(j->lease, sizeof j->lease, "%s", lease ? lease : "");
    j->next_seq = 1;
    j->metrics.max = JOURNAL_METRICS_MAX;
    j->log.max = JOURNAL_LOG_MAX;
    *out = j;
    return 0;
}

static void queue_pop(queue *q) {
    entry *e = q->head;
    if (!e) return;
    q->head = e->next;
    if (!q->head) q->tail = NULL;
    q->bytes -= e->len;
    free(e->data);
    free(e);
}

static void queue_clear(queue *q) {
    while (q->head) queue_pop(q);
}

void journal_destroy(journal **jp) {
    if (!jp || !*jp) return;
    journal *j = *jp;
    queue_clear(&j->metrics);
    queue_clear(&j->log);
    free(j);
    *jp = NULL;
}

void journal_set_limits(journal *j, size_t metrics_max, size_t log_max) {
    j->metrics.max = metrics_max ? metrics_max : JOURNAL_METRICS_MAX;
    j->log.max = log_max ? log_max : JOURNAL_LOG_MAX;
}

int64_t journal_job(const journal *j) { return j->job; }
int64_t journal_attempt(const journal *j) { return j->attempt; }
const char *journal_lease(const journal *j) { return j->lease; }

/* Append an entry (data taken) and drop the oldest ones past the limit; the new one stays. */
static int queue_add(journal *j, queue *q, int64_t key, char *data, size_t len, int64_t now) {
    entry *e = malloc(sizeof *e);
    if (!e) {
        free(data);
        return UMDQ_ENOMEM;
    }
    *e = (entry){key, data, len, now, NULL};
    if (q->tail) q->tail->next = e;
    else q->head = e;
    q->tail = e;
    q->bytes += len;
    while (q->bytes > q->max && q->head != e) {
        j->dropped_entries++;
        j->dropped_bytes += (int64_t)q->head->len;
        queue_pop(q);
    }
    return 0;
}

static void describe(const entry *e, int is_log, journal_entry *out) {
    memset(out, 0, sizeof *out);
    out->is_log = is_log;
    if (is_log) out->offset = e->key;
    else out->seq = e->key;
    out->data = e->data;
    out->len = e->len;
}

int journal_add_metrics(journal *j, char *points_text, int64_t now, journal_entry *out) {
    if (!points_text) return UMDQ_ENOMEM;
    int rc = queue_add(j, &j->metrics, j->next_seq, points_text, strlen(points_text), now);
    if (rc != 0) return rc;
    j->next_seq++;
    describe(j->metrics.tail, 0, out);
    return 0;
}

int journal_add_log(journal *j, int64_t offset, char *data, size_t len, int64_t now, journal_entry *out) {
    if (!data) return UMDQ_ENOMEM;
    int rc = queue_add(j, &j->log, offset, data, len, now);
    if (rc != 0) return rc;
    if (offset + (int64_t)len > j->log_end) j->log_end = offset + (int64_t)len;
    describe(j->log.tail, 1, out);
    return 0;
}

int64_t journal_sent_seq(const journal *j) { return j->next_seq - 1; }
int64_t journal_sent_log(const journal *j) { return j->log_end; }
int64_t journal_from_seq(const journal *j) { return j->metrics.head ? j->metrics.head->key : j->next_seq; }
int64_t journal_from_log(const journal *j) { return j->log.head ? j->log.head->key : j->log_end; }

void journal_confirm(journal *j, int64_t seq, int64_t log) {
    while (j->metrics.head && j->metrics.head->key <= seq) queue_pop(&j->metrics);
    /* a chunk the daemon has only in part stays whole: it appends only the bytes it lacks */
    while (j->log.head && j->log.head->key + (int64_t)j->log.head->len <= log) queue_pop(&j->log);
}

int journal_unconfirmed(const journal *j) { return j->metrics.head != NULL || j->log.head != NULL; }

int journal_overdue(const journal *j, int64_t now, int64_t ms) {
    return (j->metrics.head && now - j->metrics.head->sent_ms >= ms) ||
           (j->log.head && now - j->log.head->sent_ms >= ms);
}

void journal_resend(journal *j, int64_t now, void (*send)(void *ud, const journal *j, const journal_entry *e),
                    void *ud) {
    journal_entry d;
    for (entry *e = j->metrics.head; e; e = e->next) {
        describe(e, 0, &d);
        send(ud, j, &d);
        e->sent_ms = now;
    }
    for (entry *e = j->log.head; e; e = e->next) {
        describe(e, 1, &d);
        send(ud, j, &d);
        e->sent_ms = now;
    }
}

void journal_take_dropped(journal *j, int64_t *entries, int64_t *bytes) {
    *entries = j->dropped_entries;
    *bytes = j->dropped_bytes;
    j->dropped_entries = j->dropped_bytes = 0;
}
