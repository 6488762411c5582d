/* test_trainmain_cli.c: `umdq train` as a user meets it: --help, --help-config, usage errors, bad
 * config files (unreadable, bad JSON, bad keys), the checkpoint rules of --out and --resume, and,
 * when this build's trainer can run, a short run with its JSON summary and a Ctrl-C that
 * checkpoints. Runs $UMDQ_BUILD/bin/umdq train as a subprocess when it exists, else calls
 * umd_train_main in a forked child. */
/* umdq-uses: umd common */
#include <dirent.h>
#include <ftw.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include "ckpt.h"
#include "config.h"
#include "errlist.h"
#include "t.h"
#include "umd.h"
#include "umdq.h"

static char tmpdir[256];
static char umdq_bin[1024];
static char out_text[65536], err_text[65536];

static int rm_entry(const char *p, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(p);
}

static void tmp_remove(void) {
    if (tmpdir[0]) nftw(tmpdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    tmpdir[0] = 0;
}

static void tmp_make(void) {
    tmp_remove();
    snprintf(tmpdir, sizeof tmpdir, "/tmp/umdq-test-trainmain-XXXXXX");
    T_REQUIRE(mkdtemp(tmpdir) != NULL);
}

static void write_text(const char *name, const char *text) {
    char p[512];
    snprintf(p, sizeof p, "%s/%s", tmpdir, name);
    FILE *f = fopen(p, "wb");
    T_REQUIRE(f != NULL);
    fputs(text, f);
    T_REQUIRE(fclose(f) == 0);
}

static void read_text(const char *p, char *buf, size_t n) {
    FILE *f = fopen(p, "rb");
    buf[0] = 0;
    if (!f) return;
    size_t r = fread(buf, 1, n - 1, f);
    buf[r] = 0;
    fclose(f);
}

/* Start `umdq train ARGS...` (args NULL-terminated) in tmpdir with stdout and stderr in files. */
static pid_t train_start(const char *const *args) {
    char *argv[32];
    int argc = 0;
    argv[argc++] = "train";
    for (int i = 0; args[i] && argc < 30; i++) argv[argc++] = (char *)args[i];
    argv[argc] = NULL;
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid != 0) return pid;
    char p[512];
    if (chdir(tmpdir) != 0) _exit(99);
    snprintf(p, sizeof p, "%s/stdout.txt", tmpdir);
    if (!freopen(p, "w", stdout)) _exit(99);
    snprintf(p, sizeof p, "%s/stderr.txt", tmpdir);
    if (!freopen(p, "w", stderr)) _exit(99);
    if (umdq_bin[0]) {
        char *full[34];
        full[0] = "umdq";
        for (int i = 0; i <= argc; i++) full[i + 1] = argv[i];
        execv(umdq_bin, full);
        _exit(98);
    }
    int rc = umd_train_main(argc, argv);
    fflush(stdout);
    fflush(stderr);
    _exit(rc);
}

/* Wait for pid; read its outputs; return its exit status (128 + signal when killed). */
static int train_wait(pid_t pid) {
    int status = 0;
    char p[512];
    while (waitpid(pid, &status, 0) < 0) {
    }
    snprintf(p, sizeof p, "%s/stdout.txt", tmpdir);
    read_text(p, out_text, sizeof out_text);
    snprintf(p, sizeof p, "%s/stderr.txt", tmpdir);
    read_text(p, err_text, sizeof err_text);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static int train_run(const char *const *args) { return train_wait(train_start(args)); }

#define TRAIN(...) train_run((const char *const[]){__VA_ARGS__, NULL})

/* Whether an entry of tmpdir starts with prefix. */
static int tmp_has(const char *prefix) {
    DIR *d = opendir(tmpdir);
    struct dirent *e;
    int found = 0;
    if (!d) return 0;
    while ((e = readdir(d)) != NULL)
        if (strncmp(e->d_name, prefix, strlen(prefix)) == 0) found = 1;
    closedir(d);
    return found;
}

static void trainmain_help(void) {
    tmp_make();
    T_EQ_INT(TRAIN("--help"), 0);
    T_CONTAINS(out_text, "usage: umdq train CONFIG.json");
    T_CONTAINS(out_text, "--steps N");
    T_CONTAINS(out_text, "--out DIR");
    T_CONTAINS(out_text, "--resume");
    T_CONTAINS(out_text, "--json");
    T_CONTAINS(out_text, "--threads N");
    T_CONTAINS(out_text, "--help-config");
    T_CONTAINS(out_text, "Exit codes");
    T_EQ_INT(TRAIN("-h"), 0);
    T_CONTAINS(out_text, "usage: umdq train");
    T_EQ_INT(TRAIN("--help-config"), 0);
    T_CONTAINS(out_text, "KEY");
    T_CONTAINS(out_text, "umd.mask_ratio");
    T_CONTAINS(out_text, "[0, 1)");     /* mask_ratio's range, open above */
    T_CONTAINS(out_text, "0.375");      /* its default */
    T_CONTAINS(out_text, "cosine|linear");
    T_CONTAINS(out_text, "train.steps");
    T_CHECK(strstr(out_text, "\ncommand ") == NULL); /* command-only keys are not the trainer's */
    tmp_remove();
}

static void trainmain_usage(void) {
    tmp_make();
    write_text("c.json", "{\"data\": {\"dataset\": \"synthetic\"}}");
    T_EQ_INT(TRAIN(NULL), 2);
    T_CONTAINS(err_text, "missing CONFIG.json");
    T_EQ_INT(TRAIN("c.json", "--frobnicate"), 2);
    T_CONTAINS(err_text, "unknown option '--frobnicate'");
    T_EQ_INT(TRAIN("c.json", "--steps", "abc"), 2);
    T_CONTAINS(err_text, "--steps");
    T_EQ_INT(TRAIN("c.json", "--steps=0"), 2);
    T_CONTAINS(err_text, "--steps");
    T_EQ_INT(TRAIN("c.json", "--threads", "-3"), 2);
    T_CONTAINS(err_text, "--threads");
    T_EQ_INT(TRAIN("c.json", "--out"), 2);
    T_CONTAINS(err_text, "--out needs a value");
    T_EQ_INT(TRAIN("c.json", "d.json"), 2);
    T_CONTAINS(err_text, "one CONFIG.json");
    T_CHECK(strlen(out_text) == 0); /* nothing on stdout */
    tmp_remove();
}

static void trainmain_bad_file(void) {
    tmp_make();
    T_EQ_INT(TRAIN("absent.json"), 2);
    T_CONTAINS(err_text, "absent.json");
    T_CONTAINS(err_text, "No such file");
    /* JSON with an error on line 3 */
    write_text("bad.json", "{\n  \"train\": {\"steps\": 3},\n  \"model\": {\"width\": 16,,}\n}\n");
    T_EQ_INT(TRAIN("bad.json"), 2);
    T_CONTAINS(err_text, "bad.json:3:");
    T_CONTAINS(err_text, "invalid JSON");
    write_text("cut.json", "{\"train\": {\"steps\": 3}");
    T_EQ_INT(TRAIN("cut.json"), 2);
    T_CONTAINS(err_text, "cut.json:1:");
    T_CONTAINS(err_text, "invalid JSON");
    write_text("empty.json", "");
    T_EQ_INT(TRAIN("empty.json"), 2);
    T_CONTAINS(err_text, "empty.json");
    write_text("dup.json", "{\"seed\": 1, \"seed\": 2}");
    T_EQ_INT(TRAIN("dup.json"), 2);
    T_CONTAINS(err_text, "dup.json");
    T_CONTAINS(err_text, "duplicate");
    write_text("array.json", "[1, 2]");
    T_EQ_INT(TRAIN("array.json"), 2);
    T_CONTAINS(err_text, "array.json: a config is a JSON object");
    write_text("trail.json", "{} {}");
    T_EQ_INT(TRAIN("trail.json"), 2);
    T_CONTAINS(err_text, "trail.json");
    T_CHECK(!tmp_has("umdq-train-")); /* nothing was created */
    tmp_remove();
}

static void trainmain_bad_keys(void) {
    tmp_make();
    write_text("keys.json", "{\"model\": {\"widht\": 64}, \"train\": {\"steps\": 0, \"batch\": \"big\"},"
                            " \"umd\": {\"mask_ratio\": 1.5}}");
    T_EQ_INT(TRAIN("keys.json"), 2);
    /* every bad key path is listed, not only the first */
    T_CONTAINS(err_text, "keys.json");
    T_CONTAINS(err_text, "model.widht");
    T_CONTAINS(err_text, "train.steps");
    T_CONTAINS(err_text, "train.batch");
    T_CONTAINS(err_text, "umd.mask_ratio");
    /* --steps overrides train.steps, so that problem goes away and the others stay */
    T_EQ_INT(TRAIN("keys.json", "--steps", "5"), 2);
    T_CHECK(strstr(err_text, "train.steps") == NULL);
    T_CONTAINS(err_text, "model.widht");
    write_text("cmd.json", "{\"kind\": \"command\", \"command\": \"true\"}");
    T_EQ_INT(TRAIN("cmd.json"), 2);
    T_CONTAINS(err_text, "kind");
    tmp_remove();
}

static const char *tiny_config =
    "{\"seed\": 5, \"data\": {\"dataset\": \"synthetic\", \"image_size\": 8, \"channels\": 1,"
    " \"classes\": 2, \"train_size\": 64, \"test_size\": 16},"
    " \"model\": {\"patch\": 4, \"width\": 16, \"depth\": 1, \"dec_depth\": 1, \"heads\": 2,"
    " \"mlp_ratio\": 2, \"cls_tokens\": 1},"
    " \"train\": {\"steps\": 3, \"batch\": 8, \"log_every\": 1, \"ckpt_every\": 0,"
    " \"device\": \"cpu\", \"threads\": 1}}";

/* The config hash of text with train.steps = steps (0 = as written), as umdq train computes it. */
static void config_hash_of(const char *text, int64_t steps, char hash[65]) {
    cJSON *root = cJSON_Parse(text);
    T_REQUIRE(root != NULL);
    if (steps) {
        cJSON *train = cJSON_GetObjectItem(root, "train");
        cJSON_ReplaceItemInObject(train, "steps", cJSON_CreateNumber((double)steps));
    }
    errlist *errs = errlist_new();
    umd_config cfg;
    memset(&cfg, 0, sizeof cfg);
    int rc = umd_config_parse(root, &cfg, errs);
    errlist_destroy(&errs);
    cJSON_Delete(root);
    T_REQUIRE(rc == 0);
    memcpy(hash, cfg.hash, 65);
}

static void write_fake_ckpt(const char *dir, const char *hash, int64_t step) {
    char p[600];
    snprintf(p, sizeof p, "%s/%s", tmpdir, dir);
    T_REQUIRE(mkdir(p, 0755) == 0 || access(p, F_OK) == 0);
    snprintf(p, sizeof p, "%s/%s/ckpt.umd", tmpdir, dir);
    umd_ckpt_header h;
    memset(&h, 0, sizeof h);
    snprintf(h.config_hash, sizeof h.config_hash, "%s", hash);
    h.step = step;
    char err[512];
    T_REQUIRE(umd_ckpt_write(p, &h, NULL, 0, err, sizeof err) == 0);
}

static void trainmain_checkpoint_rules(void) {
    char hash[65], line[200];
    tmp_make();
    write_text("tiny.json", tiny_config);
    config_hash_of(tiny_config, 0, hash);
    /* --resume with nothing to resume */
    T_EQ_INT(TRAIN("tiny.json", "--out", "run1", "--resume"), 2);
    T_CONTAINS(err_text, "run1/ckpt.umd");
    T_CONTAINS(err_text, "no checkpoint");
    /* without --out the default directory is umdq-train-<hash[:8]> */
    T_EQ_INT(TRAIN("tiny.json", "--resume"), 2);
    snprintf(line, sizeof line, "umdq-train-%.8s/ckpt.umd", hash);
    T_CONTAINS(err_text, line);
    /* an existing checkpoint is never overwritten by a fresh run */
    write_fake_ckpt("run2", hash, 2);
    T_EQ_INT(TRAIN("tiny.json", "--out", "run2"), 2);
    T_CONTAINS(err_text, "run2/ckpt.umd already exists");
    T_CONTAINS(err_text, "--resume");
    /* a checkpoint of another config (here: other --steps) is not resumed */
    T_EQ_INT(TRAIN("tiny.json", "--out", "run2", "--resume", "--steps", "7"), 2);
    T_CONTAINS(err_text, "another config");
    /* a file that is not a checkpoint */
    write_text("run2/ckpt.umd", "hello");
    T_EQ_INT(TRAIN("tiny.json", "--out", "run2", "--resume"), 2);
    T_CONTAINS(err_text, "not a umdq checkpoint");
    tmp_remove();
}

/* Parse the JSON summary on stdout. Caller deletes. */
static cJSON *summary(void) {
    const char *brace = strchr(out_text, '{');
    return brace ? cJSON_Parse(brace) : NULL;
}

static void trainmain_run(void) {
    char hash[65], p[600];
    tmp_make();
    write_text("tiny.json", tiny_config);
    config_hash_of(tiny_config, 0, hash);
    int rc = TRAIN("tiny.json", "--out", "run", "--json");
    if (rc == 1 && strstr(err_text, "not available in this build")) {
        tmp_remove();
        T_SKIP("this build's trainer refuses every run (%s)", "umd_run is a placeholder");
    }
    T_CHECK_MSG(rc == 0, "exit %d: %s", rc, err_text);
    cJSON *sum = summary();
    T_REQUIRE(sum != NULL);
    T_EQ_STR(cJSON_GetStringValue(cJSON_GetObjectItem(sum, "status")), "ok");
    T_EQ_STR(cJSON_GetStringValue(cJSON_GetObjectItem(sum, "config_hash")), hash);
    T_EQ_INT(cJSON_GetNumberValue(cJSON_GetObjectItem(sum, "steps")), 3);
    T_CHECK(cJSON_IsNumber(cJSON_GetObjectItem(sum, "final_loss")));
    T_CHECK(cJSON_IsNumber(cJSON_GetObjectItem(sum, "seconds")));
    T_CHECK(cJSON_IsObject(cJSON_GetObjectItem(sum, "results")));
    const char *ck = cJSON_GetStringValue(cJSON_GetObjectItem(sum, "checkpoint"));
    T_REQUIRE(ck != NULL);
    snprintf(p, sizeof p, "%s%s%s", ck[0] == '/' ? "" : tmpdir, ck[0] == '/' ? "" : "/", ck);
    umd_ckpt_header h;
    char err[512];
    T_CHECK_MSG(umd_ckpt_read_header(p, &h, err, sizeof err) == 0, "%s", err);
    T_EQ_INT(h.step, 3);
    T_EQ_STR(h.config_hash, hash);
    cJSON_Delete(h.meta);
    cJSON_Delete(sum);
    /* progress went to stderr, one line per report (not a terminal) */
    T_CONTAINS(err_text, "step 3/3");
    /* a second fresh run into the same directory is refused; --resume of a finished run is done */
    T_EQ_INT(TRAIN("tiny.json", "--out", "run", "--json"), 2);
    T_EQ_INT(TRAIN("tiny.json", "--out", "run", "--resume"), 0);
    T_CONTAINS(err_text, "done");
    tmp_remove();
}

static void trainmain_interrupt(void) {
    char p[600];
    tmp_make();
    /* a run far longer than the test waits, stopped by SIGINT once it reports progress */
    write_text("long.json", tiny_config);
    pid_t pid = train_start((const char *const[]){"long.json", "--out", "run", "--steps", "100000000", NULL});
    snprintf(p, sizeof p, "%s/stderr.txt", tmpdir);
    int seen = 0;
    for (int i = 0; i < 1200 && !seen; i++) { /* up to 120 s for start-up */
        read_text(p, err_text, sizeof err_text);
        seen = strstr(err_text, "step ") != NULL;
        int status;
        if (!seen && waitpid(pid, &status, WNOHANG) == pid) {
            read_text(p, err_text, sizeof err_text);
            tmp_remove();
            if (strstr(err_text, "not available in this build"))
                T_SKIP("this build's trainer refuses every run");
            T_CHECK_MSG(0, "the run ended before reporting progress: %s", err_text);
            return;
        }
        if (!seen) nanosleep(&(struct timespec){0, 100000000}, NULL);
    }
    if (!seen) {
        kill(pid, SIGKILL);
        train_wait(pid);
        tmp_remove();
        T_CHECK_MSG(0, "no progress report");
        return;
    }
    kill(pid, SIGINT);
    int rc = train_wait(pid);
    T_EQ_INT(rc, 130);
    T_CONTAINS(err_text, "interrupted");
    T_CONTAINS(err_text, "resume with: umdq train long.json --out run --steps 100000000 --resume");
    snprintf(p, sizeof p, "%s/run/ckpt.umd", tmpdir);
    umd_ckpt_header h;
    char err[512];
    T_CHECK_MSG(umd_ckpt_read_header(p, &h, err, sizeof err) == 0, "%s", err);
    T_CHECK(h.step >= 1);
    cJSON_Delete(h.meta);
    tmp_remove();
}

int main(void) {
    const char *b = getenv("UMDQ_BUILD");
    if (b) {
        snprintf(umdq_bin, sizeof umdq_bin, "%s/bin/umdq", b);
        if (access(umdq_bin, X_OK) != 0) umdq_bin[0] = 0;
    }
    printf("# running %s\n", umdq_bin[0] ? umdq_bin : "umd_train_main in a child");
    T_RUN(trainmain_help);
    T_RUN(trainmain_usage);
    T_RUN(trainmain_bad_file);
    T_RUN(trainmain_bad_keys);
    T_RUN(trainmain_checkpoint_rules);
    T_RUN(trainmain_run);
    T_RUN(trainmain_interrupt);
    tmp_remove();
    return t_done();
}
