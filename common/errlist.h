/* errlist.h: a list of (key path, message) problems, so a refused sweep or config can name every
 * bad key at once instead of the first one. */
#ifndef UMDQ_ERRLIST_H
#define UMDQ_ERRLIST_H
#include <stddef.h>

typedef struct errlist errlist;

errlist *errlist_new(void);                  /* NULL on out of memory */
void errlist_destroy(errlist **e);           /* accepts NULL, NULLs the pointer */
/* Add a problem. path may be "" (whole document); fmt is printf-style. A problem with the same
 * path and message as one already in the list is not added again; past 1000 problems the rest
 * are only counted (errlist_join ends with "(N more problems not shown)"). */
void errlist_add(errlist *e, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
int errlist_count(const errlist *e);
/* Remove every problem (the list can be reused). */
void errlist_clear(errlist *e);
const char *errlist_path(const errlist *e, int i);    /* borrowed until errlist_destroy */
const char *errlist_message(const errlist *e, int i); /* borrowed until errlist_destroy */
/* "path: message" items joined by sep, e.g. "\n" or "; ". Caller frees. */
char *errlist_join(const errlist *e, const char *sep);
/* Copy errlist_join(e, "; ") into buf (truncated to n). */
void errlist_format(const errlist *e, char *buf, size_t n);

#endif
