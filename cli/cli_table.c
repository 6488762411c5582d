/* cli_table.c: aligned text tables (header, rows, per-cell colour) for umdq's listings. */
#include "cli_table.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli_fmt.h"
#include "umdq.h"
#include "util.h"

typedef struct {
    char *text;        /* owned; control characters replaced by spaces */
    const char *sgr;   /* borrowed static string, or NULL */
} table_cell_t;

typedef struct {
    char *title;       /* owned */
    table_align align;
    size_t max;        /* 0 = no cap */
} table_col;

struct cli_table {
    table_col *cols;   /* ncols, owned */
    int ncols;
    table_cell_t *cells; /* nrows * ncols, row-major, owned */
    int nrows, cap_rows;
    int next_cell;     /* the column table_cell fills next in the last row */
};

cli_table *table_new(void) {
    return calloc(1, sizeof(cli_table));
}

void table_destroy(cli_table **tp) {
    if (!tp || !*tp) return;
    cli_table *t = *tp;
    for (int c = 0; c < t->ncols; c++) free(t->cols[c].title);
    for (int i = 0; i < t->nrows * t->ncols; i++) free(t->cells[i].text);
    free(t->cols);
    free(t->cells);
    free(t);
    *tp = NULL;
}

int table_column(cli_table *t, const char *title, table_align align) {
    if (t->nrows > 0) return UMDQ_ESTATE;
    table_col *c = realloc(t->cols, sizeof(table_col) * (size_t)(t->ncols + 1));
    if (!c) return UMDQ_ENOMEM;
    t->cols = c;
    char *copy = strdup(title ? title : "");
    if (!copy) return UMDQ_ENOMEM;
    t->cols[t->ncols].title = copy;
    t->cols[t->ncols].align = align;
    t->cols[t->ncols].max = 0;
    t->ncols++;
    return 0;
}

void table_column_max(cli_table *t, int col, size_t max) {
    if (col >= 0 && col < t->ncols) t->cols[col].max = max < 4 ? 4 : max;
}

int table_ncolumns(const cli_table *t) { return t->ncols; }
int table_nrows(const cli_table *t) { return t->nrows; }

int table_row(cli_table *t) {
    if (t->ncols == 0) return UMDQ_ESTATE;
    if (t->nrows == t->cap_rows) {
        int cap = t->cap_rows ? t->cap_rows * 2 : 16;
        table_cell_t *c = realloc(t->cells, sizeof(table_cell_t) * (size_t)cap * (size_t)t->ncols);
        if (!c) return UMDQ_ENOMEM;
        t->cells = c;
        t->cap_rows = cap;
    }
    memset(&t->cells[t->nrows * t->ncols], 0, sizeof(table_cell_t) * (size_t)t->ncols);
    t->nrows++;
    t->next_cell = 0;
    return 0;
}

int table_cell_color(cli_table *t, const char *sgr, const char *text) {
    if (t->nrows == 0) return UMDQ_ESTATE;
    if (t->next_cell >= t->ncols) return 0;
    char *copy = strdup(text ? text : "");
    if (!copy) return UMDQ_ENOMEM;
    for (char *p = copy; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f) *p = ' ';
    table_cell_t *cell = &t->cells[(t->nrows - 1) * t->ncols + t->next_cell];
    cell->text = copy;
    cell->sgr = sgr;
    t->next_cell++;
    return 0;
}

int table_cell(cli_table *t, const char *text) {
    return table_cell_color(t, NULL, text);
}

int table_cellf(cli_table *t, const char *fmt, ...) {
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    return table_cell(t, buf);
}

/* Byte length of the longest prefix of s that is at most w code points wide. */
static size_t prefix_bytes(const char *s, size_t w) {
    size_t cols = 0, i = 0;
    while (s[i]) {
        if (((unsigned char)s[i] & 0xC0) != 0x80) {
            if (cols == w) break;
            cols++;
        }
        i++;
    }
    return i;
}

/* Append one cell padded to width (unless it is the last column and left-aligned). */
static void put_cell(strbuf *b, const char *text, const char *sgr, size_t width, size_t max,
                     table_align align, int last, int color) {
    size_t w = fmt_text_width(text);
    size_t len = strlen(text);
    int cut = 0;
    if (max && w > max) {
        len = prefix_bytes(text, max - 3);
        w = max;
        cut = 1;
    }
    size_t pad = width > w ? width - w : 0;
    if (align == TABLE_RIGHT)
        for (size_t i = 0; i < pad; i++) strbuf_append(b, " ", 1);
    if (color && sgr) strbuf_printf(b, "\033[%sm", sgr);
    strbuf_append(b, text, len);
    if (cut) strbuf_append(b, "...", 3);
    if (color && sgr) strbuf_puts(b, "\033[0m");
    if (align == TABLE_LEFT && !last)
        for (size_t i = 0; i < pad; i++) strbuf_append(b, " ", 1);
}

char *table_render(const cli_table *t, int color) {
    size_t *width = calloc((size_t)(t->ncols ? t->ncols : 1), sizeof(size_t));
    if (!width) return NULL;
    for (int c = 0; c < t->ncols; c++) {
        width[c] = fmt_text_width(t->cols[c].title);
        for (int r = 0; r < t->nrows; r++) {
            const char *s = t->cells[r * t->ncols + c].text;
            size_t w = s ? fmt_text_width(s) : 0;
            if (t->cols[c].max && w > t->cols[c].max) w = t->cols[c].max;
            if (w > width[c]) width[c] = w;
        }
    }
    strbuf b;
    strbuf_init(&b);
    for (int r = -1; r < t->nrows; r++) {
        /* the last column that has text in this row: nothing is written after it */
        int last = -1;
        for (int c = 0; c < t->ncols; c++) {
            const char *s = r < 0 ? t->cols[c].title : t->cells[r * t->ncols + c].text;
            if (s && *s) last = c;
        }
        for (int c = 0; c <= last; c++) {
            if (c > 0) strbuf_append(&b, "  ", 2);
            const char *s;
            const char *sgr;
            if (r < 0) {
                s = t->cols[c].title;
                sgr = "1";
            } else {
                s = t->cells[r * t->ncols + c].text;
                sgr = t->cells[r * t->ncols + c].sgr;
            }
            put_cell(&b, s ? s : "", sgr, width[c], r < 0 ? 0 : t->cols[c].max,
                     t->cols[c].align, c == last, color);
        }
        strbuf_append(&b, "\n", 1);
    }
    free(width);
    if (b.oom) {
        strbuf_free(&b);
        return NULL;
    }
    if (!b.data) return strdup("");
    return strbuf_steal(&b);
}
