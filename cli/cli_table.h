/* cli_table.h: aligned text tables for umdq's listings.
 *
 *   ID  NAME    STATE    PROGRESS
 *    3  fmnist  RUNNING     10/12
 *
 * Columns are separated by two spaces; right-aligned columns suit numbers. Widths count UTF-8
 * code points; control characters in cells are shown as spaces so a cell never breaks a row.
 * The last column is not padded, so lines carry no trailing spaces. */
#ifndef UMDQ_CLI_TABLE_H
#define UMDQ_CLI_TABLE_H
#include <stddef.h>

typedef struct cli_table cli_table;

typedef enum { TABLE_LEFT = 0, TABLE_RIGHT = 1 } table_align;

cli_table *table_new(void);              /* NULL on out of memory */
void table_destroy(cli_table **t);       /* accepts NULL, NULLs the pointer */

/* Add a column (before the first row). 0 or UMDQ_ENOMEM. */
int table_column(cli_table *t, const char *title, table_align align);
/* Cap a column's width: longer cells are cut and end with "..." (max >= 4). */
void table_column_max(cli_table *t, int col, size_t max);
int table_ncolumns(const cli_table *t);
int table_nrows(const cli_table *t);

/* Start a new row; its cells are then filled left to right by table_cell*. Missing cells at
 * the end of a row stay empty; cells beyond the columns are ignored. 0 or UMDQ_ENOMEM. */
int table_row(cli_table *t);
int table_cell(cli_table *t, const char *text);              /* text copied; NULL = "" */
/* As table_cell, with an SGR colour ("32" green) used when the table is rendered in colour. */
int table_cell_color(cli_table *t, const char *sgr, const char *text);
int table_cellf(cli_table *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The whole table, header first (bold in colour), one line per row, each ending in "\n".
 * Caller frees; NULL on out of memory. */
char *table_render(const cli_table *t, int color);

#endif
