/* test_cli_compare.c: the comparison of a umd sweep as `umdq show` and `umdq export` give it: the
 * fixed result columns and their order, percentages, the mean and sd over seeds, the FID network.
 * umdq-uses: cli common */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli_table.h"
#include "cli_view.h"
#include "t.h"
#include "umdq.h"
#include "util.h"

/* A umd sweep answer (docs/api.md): two variants x two seeds, one job still running, one result
 * outside the comparison (final_loss). */
static const char *umd_answer =
    "{\"sweep\": {\"id\": 7, \"name\": \"abl\", \"state\": \"RUNNING\", \"total\": 4,"
    " \"swept\": [\"name\", \"umd.r_t0\"]},"
    " \"jobs\": ["
    "  {\"id\": 1, \"kind\": \"umd\", \"state\": \"SUCCEEDED\", \"attempts\": 2, \"max_attempts\": 3, \"seed\": 0,"
    "   \"run_seconds\": 4000,"
    "   \"params\": {\"name\": \"UMD\", \"umd.r_t0\": 0.5},"
    "   \"results\": {\"probe_ridge_top1\": 0.8, \"pixel_ridge_top1\": 0.7, \"fid\": 10, \"fid_net\": \"net-a\","
    "                 \"final_loss\": 0.25, \"device_hours\": 0.5}},"
    "  {\"id\": 2, \"kind\": \"umd\", \"state\": \"SUCCEEDED\", \"attempts\": 1, \"max_attempts\": 3, \"seed\": 1,"
    "   \"params\": {\"name\": \"UMD\", \"umd.r_t0\": 0.5},"
    "   \"results\": {\"probe_ridge_top1\": 0.9, \"pixel_ridge_top1\": 0.7, \"fid\": 14, \"fid_net\": \"net-a\"}},"
    "  {\"id\": 3, \"kind\": \"umd\", \"state\": \"SUCCEEDED\", \"attempts\": 1, \"max_attempts\": 3, \"seed\": 0,"
    "   \"params\": {\"name\": \"MAE\", \"umd.r_t0\": 1},"
    "   \"results\": {\"probe_ridge_top1\": 0.95, \"fid\": 40, \"fid_net\": \"net-a\"}},"
    "  {\"id\": 4, \"kind\": \"umd\", \"state\": \"RUNNING\", \"attempts\": 1, \"max_attempts\": 3, \"seed\": 1,"
    "   \"params\": {\"name\": \"MAE\", \"umd.r_t0\": 1},"
    "   \"results\": {}}]}";

static void test_compare_export_csv_columns(void) {
    cJSON *a = cJSON_Parse(umd_answer);
    T_REQUIRE(a);
    strbuf b;
    strbuf_init(&b);
    T_EQ_INT(view_export_csv(a, &b), 0);
    T_REQUIRE(b.data);
    /* the header: swept keys, every comparison column even when no job has it, the
     * wall time, attempts, the rest */
    const char *header = "id,state,seed,name,umd.r_t0,probe_ridge_top1,probe_linear_top1,pixel_ridge_top1,"
                         "pixel_linear_top1,fid,fid_net,fid_samples,val_denoise_loss,val_mask_mse,"
                         "train_img_per_s,device_hours,run_seconds,attempts,final_loss\r\n";
    T_CHECK_MSG(strncmp(b.data, header, strlen(header)) == 0, "header: %.300s", b.data);
    T_CONTAINS(b.data, "\r\n1,SUCCEEDED,0,UMD,0.5,0.8,,0.7,,10,net-a,,,,,0.5,4000,2,0.25\r\n");
    T_CONTAINS(b.data, "\r\n4,RUNNING,1,MAE,1,,,,,,,,,,,,,1,\r\n");
    int lines = 0;
    for (const char *p = b.data; (p = strstr(p, "\r\n")) != NULL; p += 2) lines++;
    T_EQ_INT(lines, 5);
    strbuf_free(&b);
    cJSON_Delete(a);
}

static void test_compare_export_json_order(void) {
    cJSON *a = cJSON_Parse(umd_answer);
    T_REQUIRE(a);
    cJSON *rows = view_export_json(a);
    T_REQUIRE(rows);
    T_EQ_INT(cJSON_GetArraySize(rows), 4);
    const cJSON *r = cJSON_GetArrayItem(rows, 3);
    const char *order[] = {"id", "state", "seed", "name", "umd.r_t0", "probe_ridge_top1", "probe_linear_top1",
                           "pixel_ridge_top1", "pixel_linear_top1", "fid", "fid_net", "fid_samples",
                           "val_denoise_loss", "val_mask_mse", "train_img_per_s", "device_hours", "run_seconds",
                           "attempts", "final_loss"};
    int i = 0;
    const cJSON *f;
    cJSON_ArrayForEach(f, r) {
        T_REQUIRE(i < 19);
        T_EQ_STR(f->string, order[i]);
        i++;
    }
    T_EQ_INT(i, 19);
    T_CHECK(cJSON_IsNull(cJSON_GetObjectItem(r, "fid")));
    T_EQ_INT(cJSON_GetObjectItem(cJSON_GetArrayItem(rows, 0), "attempts")->valueint, 2);
    cJSON_Delete(rows);
    cJSON_Delete(a);
}

static void test_compare_jobs_table(void) {
    cJSON *a = cJSON_Parse(umd_answer);
    T_REQUIRE(a);
    cli_table *t = view_jobs_table(a);
    T_REQUIRE(t);
    char *s = table_render(t, 0);
    T_REQUIRE(s);
    /* only the comparison columns some job has, probes in %, no other results */
    T_EQ_STR(s,
             "ID  STATE      ATTEMPTS  SEED  name  umd.r_t0  PROBE  PX-PROBE  FID  DEV-H   WALL\n"
             " 1  SUCCEEDED       2/3     0   UMD       0.5  80.0%     70.0%   10    0.5  1h06m\n"
             " 2  SUCCEEDED       1/3     1   UMD       0.5  90.0%     70.0%   14      -      -\n"
             " 3  SUCCEEDED       1/3     0   MAE         1  95.0%         -   40      -      -\n"
             " 4  RUNNING         1/3     1   MAE         1      -         -    -      -      -\n");
    free(s);
    table_destroy(&t);
    cJSON_Delete(a);
}

static void test_compare_seed_means(void) {
    cJSON *a = cJSON_Parse(umd_answer);
    T_REQUIRE(a);
    cli_table *t = view_seed_table(a);
    T_REQUIRE(t);
    T_EQ_INT(table_nrows(t), 2);
    char *s = table_render(t, 0);
    T_REQUIRE(s);
    /* UMD: probe (0.8, 0.9): mean 85%, sd 7.1%; FID (10, 14): 12 +- 2.83; MAE: one value each */
    T_CONTAINS(s, "UMD");
    T_CONTAINS(s, "85.0\xc2\xb1" "7.1%");
    T_CONTAINS(s, "12\xc2\xb1" "2.83");
    T_CONTAINS(s, "95.0%");
    free(s);
    table_destroy(&t);

    int several = -1;
    T_EQ_STR(view_fid_net(cJSON_GetObjectItem(a, "jobs"), &several), "net-a");
    T_EQ_INT(several, 0);
    /* one seed per variant: nothing to average */
    cJSON *jobs = cJSON_GetObjectItem(a, "jobs");
    cJSON_DeleteItemFromArray(jobs, 3);
    cJSON_DeleteItemFromArray(jobs, 1);
    T_CHECK(view_seed_table(a) == NULL);
    cJSON_Delete(a);
}

static void test_compare_not_for_commands(void) {
    /* a command sweep keeps the generic layout: attempts fourth, every result sorted */
    cJSON *a = cJSON_Parse(umd_answer);
    T_REQUIRE(a);
    const cJSON *job;
    cJSON_ArrayForEach(job, cJSON_GetObjectItem(a, "jobs"))
        cJSON_ReplaceItemInObject((cJSON *)job, "kind", cJSON_CreateString("command"));
    T_CHECK(!view_is_umd_sweep(cJSON_GetObjectItem(a, "jobs")));
    strbuf b;
    strbuf_init(&b);
    T_EQ_INT(view_export_csv(a, &b), 0);
    T_REQUIRE(b.data);
    T_CHECK_MSG(strncmp(b.data, "id,state,seed,attempts,name,umd.r_t0,device_hours,fid,fid_net,final_loss,"
                                "pixel_ridge_top1,probe_ridge_top1\r\n", 100) == 0, "header: %.200s", b.data);
    T_CHECK(view_seed_table(a) == NULL);
    strbuf_free(&b);
    cJSON_Delete(a);
}

int main(void) {
    T_RUN(test_compare_export_csv_columns);
    T_RUN(test_compare_export_json_order);
    T_RUN(test_compare_jobs_table);
    T_RUN(test_compare_seed_means);
    T_RUN(test_compare_not_for_commands);
    return t_done();
}
