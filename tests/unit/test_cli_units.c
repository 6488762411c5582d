/* test_cli_units.c: the CLI's parts in process: option tables and their --help, durations,
 * numbers, CSV quoting, aligned tables, jobs tables and export rows from API answers.
 * umdq-uses: cli common */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli_client.h"
#include "cli_fmt.h"
#include "cli_opt.h"
#include "cli_table.h"
#include "cli_view.h"
#include "t.h"
#include "umdq.h"
#include "util.h"

static void test_cli_duration(void) {
    char b[32];
    fmt_duration(0, b, sizeof b);
    T_EQ_STR(b, "0s");
    fmt_duration(0.9, b, sizeof b);
    T_EQ_STR(b, "0s");
    fmt_duration(45, b, sizeof b);
    T_EQ_STR(b, "45s");
    fmt_duration(59.99, b, sizeof b);
    T_EQ_STR(b, "59s");
    fmt_duration(60, b, sizeof b);
    T_EQ_STR(b, "1m00s");
    fmt_duration(83, b, sizeof b);
    T_EQ_STR(b, "1m23s");
    fmt_duration(3599, b, sizeof b);
    T_EQ_STR(b, "59m59s");
    fmt_duration(3600 + 5 * 60 + 59, b, sizeof b);
    T_EQ_STR(b, "1h05m");
    fmt_duration(86400 * 3 + 3600 * 4 + 1, b, sizeof b);
    T_EQ_STR(b, "3d04h");
    fmt_duration(-1, b, sizeof b);
    T_EQ_STR(b, "-");
    fmt_duration(NAN, b, sizeof b);
    T_EQ_STR(b, "-");
}

static void test_cli_number(void) {
    char b[32];
    fmt_number(0.8123456, b, sizeof b);
    T_EQ_STR(b, "0.812");
    fmt_number(3000, b, sizeof b);
    T_EQ_STR(b, "3000");
    fmt_number(-2, b, sizeof b);
    T_EQ_STR(b, "-2");
    fmt_number(0.5, b, sizeof b);
    T_EQ_STR(b, "0.5");
    fmt_number(0.375, b, sizeof b);
    T_EQ_STR(b, "0.375");
    fmt_number(12.3456, b, sizeof b);
    T_EQ_STR(b, "12.3");
    fmt_number(1234.56, b, sizeof b);
    T_EQ_STR(b, "1234.6");
    fmt_number(0.0003, b, sizeof b);
    T_EQ_STR(b, "0.0003");
    fmt_number(1.5e-5, b, sizeof b);
    T_EQ_STR(b, "1.5e-05");
    fmt_number(2.5e10, b, sizeof b);
    T_EQ_STR(b, "25000000000");
    fmt_number(2.55e12 + 0.5, b, sizeof b);
    T_EQ_STR(b, "2.55e+12");
    fmt_number(-0.04567, b, sizeof b);
    T_EQ_STR(b, "-0.0457");
}

/* CSV text of fields joined by commas. Caller frees. */
static char *csv_line(const char *const *fields, int n) {
    strbuf b;
    strbuf_init(&b);
    for (int i = 0; i < n; i++) {
        if (i) strbuf_append(&b, ",", 1);
        csv_append_field(&b, fields[i]);
    }
    return strbuf_steal(&b);
}

static void test_cli_csv_quoting(void) {
    const char *plain[] = {"id", "0.5", "fmnist", ""};
    char *s = csv_line(plain, 4);
    T_EQ_STR(s, "id,0.5,fmnist,");
    free(s);
    const char *hard[] = {"a,b", "say \"hi\"", "two\nlines", "cr\r", " lead", "trail "};
    s = csv_line(hard, 6);
    T_EQ_STR(s, "\"a,b\",\"say \"\"hi\"\"\",\"two\nlines\",\"cr\r\",\" lead\",\"trail \"");
    free(s);
    const char *only_quote[] = {"\""};
    s = csv_line(only_quote, 1);
    T_EQ_STR(s, "\"\"\"\"");
    free(s);
}

static void test_cli_table_alignment(void) {
    cli_table *t = table_new();
    T_REQUIRE(t);
    T_EQ_INT(table_column(t, "ID", TABLE_RIGHT), 0);
    T_EQ_INT(table_column(t, "NAME", TABLE_LEFT), 0);
    T_EQ_INT(table_column(t, "ACC", TABLE_RIGHT), 0);
    table_row(t);
    table_cell(t, "3");
    table_cell(t, "fmnist-ablation");
    table_cell(t, "0.812");
    table_row(t);
    table_cell(t, "12");
    table_cell_color(t, "31", "x");
    table_cell(t, "1");
    table_row(t);
    table_cell(t, "4");
    table_cell(t, "tab\there");
    char *s = table_render(t, 0);
    T_REQUIRE(s);
    T_EQ_STR(s, "ID  NAME               ACC\n"
                " 3  fmnist-ablation  0.812\n"
                "12  x                    1\n"
                " 4  tab here\n");
    free(s);
    /* in colour: the header is bold and the red cell is wrapped, padding stays outside */
    s = table_render(t, 1);
    T_REQUIRE(s);
    T_CONTAINS(s, "\033[1mID\033[0m");
    T_CONTAINS(s, "\033[31mx\033[0m                    1\n");
    free(s);
    table_destroy(&t);
    T_CHECK(t == NULL);
    table_destroy(&t); /* accepts NULL */
}

static void test_cli_table_utf8_and_cap(void) {
    cli_table *t = table_new();
    T_REQUIRE(t);
    table_column(t, "NAME", TABLE_LEFT);
    table_column(t, "N", TABLE_RIGHT);
    table_column_max(t, 0, 8);
    table_row(t);
    table_cell(t, "\xc3\xa9t\xc3\xa9"); /* "été": 3 columns, 5 bytes */
    table_cell(t, "1");
    table_row(t);
    table_cell(t, "a-very-long-sweep-name");
    table_cell(t, "22");
    char *s = table_render(t, 0);
    T_REQUIRE(s);
    T_EQ_STR(s, "NAME       N\n"
                "\xc3\xa9t\xc3\xa9        1\n"
                "a-ver...  22\n");
    free(s);
    table_destroy(&t);
}

/* A sweep answer as the daemon gives it (docs/api.md), with awkward values. */
static const char *sweep_answer =
    "{\"sweep\": {\"id\": 3, \"name\": \"abl\", \"state\": \"DONE\", \"total\": 3,"
    " \"counts\": {\"QUEUED\": 0, \"RUNNING\": 0, \"SUCCEEDED\": 2, \"FAILED\": 1, \"LOST\": 0,"
    " \"PREEMPTED\": 0, \"CANCELLED\": 0},"
    " \"swept\": [\"umd.mask_ratio\", \"params.tag\"]},"
    " \"jobs\": ["
    "  {\"id\": 10, \"state\": \"SUCCEEDED\", \"attempts\": 1, \"max_attempts\": 3, \"seed\": 0,"
    "   \"params\": {\"umd.mask_ratio\": 0.375, \"params.tag\": \"a,b\"},"
    "   \"results\": {\"probe_acc\": 0.81234567, \"fid\": 12.5}},"
    "  {\"id\": 11, \"state\": \"FAILED\", \"attempts\": 3, \"max_attempts\": 3, \"seed\": 0,"
    "   \"params\": {\"umd.mask_ratio\": 0, \"params.tag\": \"say \\\"x\\\"\"},"
    "   \"results\": {}},"
    "  {\"id\": 12, \"state\": \"SUCCEEDED\", \"attempts\": 1, \"max_attempts\": 3, \"seed\": 1,"
    "   \"params\": {\"umd.mask_ratio\": 0.75, \"params.tag\": \"c\"},"
    "   \"results\": {\"probe_acc\": 0.5, \"img_per_s\": 1234.5}}]}";

static void test_cli_export_csv(void) {
    cJSON *a = cJSON_Parse(sweep_answer);
    T_REQUIRE(a);
    strbuf b;
    strbuf_init(&b);
    T_EQ_INT(view_export_csv(a, &b), 0);
    T_EQ_STR(b.data,
             "id,state,seed,attempts,umd.mask_ratio,params.tag,fid,img_per_s,probe_acc\r\n"
             "10,SUCCEEDED,0,1,0.375,\"a,b\",12.5,,0.81234567\r\n"
             "11,FAILED,0,3,0,\"say \"\"x\"\"\",,,\r\n"
             "12,SUCCEEDED,1,1,0.75,c,,1234.5,0.5\r\n");
    strbuf_free(&b);
    cJSON_Delete(a);
}

static void test_cli_export_json(void) {
    cJSON *a = cJSON_Parse(sweep_answer);
    T_REQUIRE(a);
    cJSON *rows = view_export_json(a);
    T_REQUIRE(rows);
    T_EQ_INT(cJSON_GetArraySize(rows), 3);
    cJSON *r1 = cJSON_GetArrayItem(rows, 1);
    /* every row has every key, in the export's order; missing results are null */
    const char *order[] = {"id", "state", "seed", "attempts", "umd.mask_ratio", "params.tag",
                           "fid", "img_per_s", "probe_acc"};
    int i = 0;
    const cJSON *f;
    cJSON_ArrayForEach(f, r1) {
        T_REQUIRE(i < 9);
        T_EQ_STR(f->string, order[i]);
        i++;
    }
    T_EQ_INT(i, 9);
    T_CHECK(cJSON_IsNull(cJSON_GetObjectItem(r1, "probe_acc")));
    T_NEAR(cJSON_GetObjectItem(cJSON_GetArrayItem(rows, 0), "probe_acc")->valuedouble,
           0.81234567, 0, 1e-15);
    cJSON_Delete(rows);
    cJSON_Delete(a);
}

static void test_cli_jobs_table(void) {
    cJSON *a = cJSON_Parse(sweep_answer);
    T_REQUIRE(a);
    cli_table *t = view_jobs_table(a);
    T_REQUIRE(t);
    /* seeds differ, so SEED is a column */
    T_EQ_INT(table_ncolumns(t), 3 + 1 + 2 + 3);
    T_EQ_INT(table_nrows(t), 3);
    char *s = table_render(t, 0);
    T_REQUIRE(s);
    T_EQ_STR(s,
             "ID  STATE      ATTEMPTS  SEED  umd.mask_ratio  params.tag   fid  img_per_s  probe_acc\n"
             "10  SUCCEEDED       1/3     0           0.375         a,b  12.5          -      0.812\n"
             "11  FAILED          3/3     0               0     say \"x\"     -          -          -\n"
             "12  SUCCEEDED       1/3     1            0.75           c     -     1234.5        0.5\n");
    free(s);
    table_destroy(&t);
    cJSON_Delete(a);
}

static void test_cli_sweep_counts(void) {
    cJSON *a = cJSON_Parse(sweep_answer);
    T_REQUIRE(a);
    view_counts k;
    view_sweep_counts(cJSON_GetObjectItem(a, "sweep"), &k);
    T_EQ_INT(k.total, 3);
    T_EQ_INT(k.succeeded, 2);
    T_EQ_INT(k.failed, 1);
    T_EQ_INT(k.queued + k.running, 0);
    T_CHECK(view_state_final("LOST"));
    T_CHECK(!view_state_final("RUNNING"));
    cJSON_Delete(a);
}

static void test_cli_escape(void) {
    char *s = client_escape("fmnist abl/1?x=é");
    T_EQ_STR(s, "fmnist%20abl%2F1%3Fx%3D%C3%A9");
    free(s);
    s = client_escape("a-b_c.d~9");
    T_EQ_STR(s, "a-b_c.d~9");
    free(s);
}

/* The values one parse fills. */
static int o_flag, o_int;
static double o_num;
static const char *o_str;
static const cli_opt test_opts[] = {
    {"follow", 'f', CLI_FLAG, NULL, "keep going", NULL, &o_flag, 0, 0},
    {"port", 'p', CLI_INT, "P", "a port", "5755", &o_int, 0, 65534},
    {"timeout", 't', CLI_NUM, "S", "seconds", NULL, &o_num, 0, 100},
    {"format", 0, CLI_STR, "FMT", "csv or json", "csv", &o_str, 0, 0},
    {NULL, 0, CLI_FLAG, NULL, NULL, NULL, NULL, 0, 0},
};
static const char *o_home;
static const cli_opt test_globals[] = {
    {"home", 0, CLI_STR, "DIR", "state directory", NULL, &o_home, 0, 0},
    {NULL, 0, CLI_FLAG, NULL, NULL, NULL, NULL, 0, 0},
};
static const cli_command test_cmd = {"demo", "SWEEP [MORE]", "a demo", NULL, test_opts, 1, 2};

/* Parse a space-separated command line; returns cli_parse's code, operands in ops. */
static int parse_line(const char *line, char **ops, int *nops, char *err, size_t errlen) {
    static char buf[512];
    static char *argv[32];
    snprintf(buf, sizeof buf, "%s", line);
    int argc = 0;
    for (char *p = strtok(buf, " "); p && argc < 31; p = strtok(NULL, " ")) argv[argc++] = p;
    argv[argc] = NULL;
    o_flag = o_int = 0;
    o_num = 0;
    o_str = o_home = NULL;
    int rc = cli_parse(&test_cmd, test_globals, argc, argv, nops, err, errlen);
    for (int i = 0; rc == 0 && i < *nops; i++) ops[i] = argv[1 + i];
    return rc;
}

static void test_cli_parse_options(void) {
    char err[256] = "";
    char *ops[8];
    int n = 0;
    T_EQ_INT(parse_line("demo s1 -f --port=80 more -t 2.5 --format json --home /x", ops, &n, err,
                        sizeof err), 0);
    T_EQ_INT(n, 2);
    T_EQ_STR(ops[0], "s1");
    T_EQ_STR(ops[1], "more");
    T_EQ_INT(o_flag, 1);
    T_EQ_INT(o_int, 80);
    T_NEAR(o_num, 2.5, 0, 0);
    T_EQ_STR(o_str, "json");
    T_EQ_STR(o_home, "/x");
    /* clustered short options, attached values, "--" and "-" */
    T_EQ_INT(parse_line("demo -fp7 -- -notanoption -", ops, &n, err, sizeof err), 0);
    T_EQ_INT(o_flag, 1);
    T_EQ_INT(o_int, 7);
    T_EQ_INT(n, 2);
    T_EQ_STR(ops[0], "-notanoption");
    T_EQ_STR(ops[1], "-");
}

static void test_cli_parse_errors(void) {
    char err[256];
    char *ops[8];
    int n;
    T_EQ_INT(parse_line("demo s1 --prot 80", ops, &n, err, sizeof err), UMDQ_EINVAL);
    T_CONTAINS(err, "unknown option '--prot'");
    T_CONTAINS(err, "did you mean '--port'?");
    T_EQ_INT(parse_line("demo s1 --port 70000", ops, &n, err, sizeof err), UMDQ_EINVAL);
    T_CONTAINS(err, "--port must be in [0, 65534], got 70000");
    T_EQ_INT(parse_line("demo s1 --port x", ops, &n, err, sizeof err), UMDQ_EINVAL);
    T_CONTAINS(err, "--port needs an integer, got 'x'");
    T_EQ_INT(parse_line("demo s1 -t nan", ops, &n, err, sizeof err), UMDQ_EINVAL);
    T_CONTAINS(err, "-t needs a number");
    T_EQ_INT(parse_line("demo s1 --format", ops, &n, err, sizeof err), UMDQ_EINVAL);
    T_CONTAINS(err, "--format needs a value");
    T_EQ_INT(parse_line("demo s1 --follow=yes", ops, &n, err, sizeof err), UMDQ_EINVAL);
    T_CONTAINS(err, "--follow takes no value");
    T_EQ_INT(parse_line("demo", ops, &n, err, sizeof err), UMDQ_EINVAL);
    T_CONTAINS(err, "missing SWEEP");
    T_EQ_INT(parse_line("demo a b c", ops, &n, err, sizeof err), UMDQ_EINVAL);
    T_CONTAINS(err, "unexpected argument 'c'");
    T_EQ_INT(parse_line("demo a -x", ops, &n, err, sizeof err), UMDQ_EINVAL);
    T_CONTAINS(err, "unknown option '-x'");
}

static void test_cli_help_text(void) {
    char path[] = "/tmp/umdq-cli-help-XXXXXX";
    int fd = mkstemp(path);
    T_REQUIRE(fd >= 0);
    FILE *f = fdopen(fd, "w+");
    T_REQUIRE(f);
    cli_help(&test_cmd, test_globals, f);
    fflush(f);
    rewind(f);
    char text[4096];
    size_t n = fread(text, 1, sizeof text - 1, f);
    text[n] = 0;
    fclose(f);
    unlink(path);
    T_CONTAINS(text, "Usage: umdq demo [options] SWEEP [MORE]\n");
    T_CONTAINS(text, "\n  -f, --follow            keep going\n");
    T_CONTAINS(text, "\n  -p, --port P            a port (default 5755)\n");
    T_CONTAINS(text, "\n      --format FMT        csv or json (default csv)\n");
    T_CONTAINS(text, "Global options:\n      --home DIR");
    T_CONTAINS(text, "  -h, --help");
    T_CONTAINS(text, "Exit codes: 0 ok");
    /* no line is wider than 80 columns and none ends in a space */
    for (char *line = text; *line;) {
        char *nl = strchr(line, '\n');
        size_t l = nl ? (size_t)(nl - line) : strlen(line);
        T_CHECK_MSG(l <= 80, "line too long: %.*s", (int)l, line);
        T_CHECK_MSG(l == 0 || line[l - 1] != ' ', "trailing space: %.*s", (int)l, line);
        line += l + (nl ? 1 : 0);
    }
}

int main(void) {
    T_RUN(test_cli_duration);
    T_RUN(test_cli_number);
    T_RUN(test_cli_csv_quoting);
    T_RUN(test_cli_table_alignment);
    T_RUN(test_cli_table_utf8_and_cap);
    T_RUN(test_cli_export_csv);
    T_RUN(test_cli_export_json);
    T_RUN(test_cli_jobs_table);
    T_RUN(test_cli_sweep_counts);
    T_RUN(test_cli_escape);
    T_RUN(test_cli_parse_options);
    T_RUN(test_cli_parse_errors);
    T_RUN(test_cli_help_text);
    return t_done();
}
