/* cmd_dashboard.c: `umdq dashboard`: a one-time link that signs a browser in to the dashboard. */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "umdq.h"

int cli_dashboard_link(cli_client *c, char *url, size_t urllen, char *err, size_t errlen) {
    cJSON *answer = NULL;
    int rc = client_call(c, "POST", "/api/login", NULL, 0, &answer, err, errlen);
    if (rc == 0) {
        const cJSON *u = cJSON_GetObjectItemCaseSensitive(answer, "url");
        if (cJSON_IsString(u) && strlen(u->valuestring) < urllen) snprintf(url, urllen, "%s", u->valuestring);
        else {
            snprintf(err, errlen, "the daemon's answer to POST /api/login has no url");
            rc = UMDQ_EPROTO;
        }
    }
    cJSON_Delete(answer);
    return rc;
}

int cmd_dashboard(cli_ctx *ctx, int argc, char **argv) {
    int json = 0;
    const cli_opt opts[] = {
        {"json", 0, CLI_FLAG, NULL, "print the daemon's JSON answer ({\"code\", \"url\", \"expires_in\"})",
         NULL, &json, 0, 0},
        {NULL, 0, CLI_FLAG, NULL, NULL, NULL, NULL, 0, 0},
    };
    const cli_command cmd = {
        "dashboard", "", NULL,
        "Prints the address of the daemon's web dashboard with a one-time login code: open it in a "
        "browser on this machine. The page trades the code for a session cookie (HttpOnly, "
        "SameSite=Strict, good for 7 days); the code works once, within 10 minutes. The browser "
        "never sees the API token.",
        opts, 0, 0};
    int nops = 0;
    int rc = cli_args(ctx, &cmd, argc, argv, &nops);
    if (rc >= 0) return rc;
    cli_client *c = NULL;
    rc = cli_connect(ctx, &c);
    if (rc) return rc;
    if (json) {
        cJSON *answer = NULL;
        rc = cli_call(ctx, c, "POST", "/api/login", NULL, 0, &answer);
        if (rc == 0) cli_print_json(answer);
        cJSON_Delete(answer);
        client_destroy(&c);
        return rc;
    }
    char url[1024], err[1024];
    rc = cli_dashboard_link(c, url, sizeof url, err, sizeof err);
    client_destroy(&c);
    if (rc != 0) {
        cli_error(ctx, "%s", err);
        return client_exit_code(rc);
    }
    printf("%s\n", url);
    if (ctx->tty_err) fprintf(stderr, "open it in a browser on this machine; the link works once, within 10 minutes\n");
    return UMDQ_EXIT_OK;
}
