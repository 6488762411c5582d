/* test_worker_journal.c: the journal of unconfirmed reports (worker/journal.h): numbering, log
 * ranges, confirmation, resending oldest first, the memory bound and the "from" it implies.
 * umdq-uses: worker common */
#include <stdlib.h>
#include <string.h>

#include "journal.h"
#include "t.h"
#include "umdq.h"

typedef struct {
    int n;
    int is_log[16];
    int64_t key[16];
    char data[16][64];
} sent;

static void record(void *ud, const journal *j, const journal_entry *e) {
    sent *s = ud;
    (void)j;
    if (s->n >= 16) return;
    s->is_log[s->n] = e->is_log;
    s->key[s->n] = e->is_log ? e->offset : e->seq;
    snprintf(s->data[s->n], sizeof s->data[0], "%.*s", (int)e->len, e->data);
    s->n++;
}

static void add_points(journal *j, const char *text, int64_t now, journal_entry *e) {
    T_REQUIRE(journal_add_metrics(j, strdup(text), now, e) == 0);
}

static void add_log(journal *j, int64_t offset, const char *text, int64_t now, journal_entry *e) {
    T_REQUIRE(journal_add_log(j, offset, strdup(text), strlen(text), now, e) == 0);
}

static void test_worker_journal_numbers_and_confirm(void) {
    journal *j = NULL;
    journal_entry e;
    T_REQUIRE(journal_new(7, 2, "abc", &j) == 0);
    T_EQ_INT(journal_job(j), 7);
    T_EQ_INT(journal_attempt(j), 2);
    T_EQ_STR(journal_lease(j), "abc");
    T_EQ_INT(journal_unconfirmed(j), 0);
    T_EQ_INT(journal_sent_seq(j), 0);
    T_EQ_INT(journal_from_seq(j), 1);
    T_EQ_INT(journal_from_log(j), 0);
    add_points(j, "[[\"m\",1,1]]", 0, &e);
    T_EQ_INT(e.seq, 1);
    T_EQ_INT(e.is_log, 0);
    T_EQ_STR(e.data, "[[\"m\",1,1]]");
    add_points(j, "[[\"m\",2,2]]", 0, &e);
    T_EQ_INT(e.seq, 2);
    add_log(j, 0, "hello ", 0, &e);
    T_EQ_INT(e.is_log, 1);
    T_EQ_INT(e.offset, 0);
    add_log(j, 6, "world\n", 0, &e);
    add_points(j, "[[\"m\",3,3]]", 0, &e);
    T_EQ_INT(journal_sent_seq(j), 3);
    T_EQ_INT(journal_sent_log(j), 12);
    T_EQ_INT(journal_unconfirmed(j), 1);
    T_EQ_INT(journal_from_seq(j), 1);

    /* the daemon has messages 1..2 and 8 bytes: the second chunk, stored in part, stays whole */
    journal_confirm(j, 2, 8);
    T_EQ_INT(journal_from_seq(j), 3);
    T_EQ_INT(journal_from_log(j), 6);
    sent s = {0};
    journal_resend(j, 100, record, &s);
    T_EQ_INT(s.n, 2);
    T_EQ_INT(s.is_log[0], 0);
    T_EQ_INT(s.key[0], 3);
    T_EQ_INT(s.is_log[1], 1);
    T_EQ_INT(s.key[1], 6);
    T_EQ_STR(s.data[1], "world\n");
    /* overdue counts from the last send */
    T_EQ_INT(journal_overdue(j, 100 + 2999, 3000), 0);
    T_EQ_INT(journal_overdue(j, 100 + 3000, 3000), 1);
    journal_confirm(j, 3, 12);
    T_EQ_INT(journal_unconfirmed(j), 0);
    T_EQ_INT(journal_overdue(j, 100000, 3000), 0);
    T_EQ_INT(journal_from_seq(j), 4);
    T_EQ_INT(journal_from_log(j), 12);
    /* a confirmation that lags changes nothing */
    journal_confirm(j, 1, 0);
    T_EQ_INT(journal_sent_seq(j), 3);
    journal_destroy(&j);
    T_CHECK(j == NULL);
    journal_destroy(&j);
}

/* Past the limits the oldest entries go, the newest always stays, and "from" moves with them. */
static void test_worker_journal_bound(void) {
    journal *j = NULL;
    journal_entry e;
    T_REQUIRE(journal_new(1, 1, "l", &j) == 0);
    journal_set_limits(j, 25, 10);
    add_points(j, "[[\"a\",1,1]]", 0, &e); /* 11 bytes each */
    add_points(j, "[[\"a\",2,2]]", 0, &e);
    T_EQ_INT(journal_from_seq(j), 1);
    add_points(j, "[[\"a\",3,3]]", 0, &e); /* 33 > 25: message 1 goes */
    T_EQ_INT(journal_from_seq(j), 2);
    add_log(j, 0, "0123", 0, &e);
    add_log(j, 4, "4567", 0, &e);
    add_log(j, 8, "89ab", 0, &e); /* 12 > 10: bytes 0..4 go */
    T_EQ_INT(journal_from_log(j), 4);
    add_log(j, 12, "a chunk larger than the bound", 0, &e); /* kept alone */
    T_EQ_INT(journal_from_log(j), 12);
    T_EQ_INT(journal_sent_log(j), 41);
    int64_t entries = 0, bytes = 0;
    journal_take_dropped(j, &entries, &bytes);
    T_EQ_INT(entries, 4);
    T_EQ_INT(bytes, 11 + 4 + 4 + 4);
    journal_take_dropped(j, &entries, &bytes);
    T_EQ_INT(entries, 0);
    sent s = {0};
    journal_resend(j, 0, record, &s);
    T_EQ_INT(s.n, 3);
    T_EQ_INT(s.key[0], 2);
    T_EQ_INT(s.key[1], 3);
    T_EQ_INT(s.key[2], 12);
    journal_destroy(&j);
}

int main(void) {
    T_RUN(test_worker_journal_numbers_and_confirm);
    T_RUN(test_worker_journal_bound);
    return t_done();
}
