/* test_daemon_web.c: the dashboard's pieces in umdqd: the embedded files and what may name them,
 * HMAC-SHA256 against RFC 4231, one-time login codes, session cookies and their CSRF values.
 * umdq-uses: daemon common */
#include <stdio.h>
#include <string.h>
#include "t.h"
#include "umdq.h"
#include "web.h"

static void test_web_assets_only_embedded(void) {
    const umdq_embedded_file *f = web_asset("/");
    T_REQUIRE(f);
    T_EQ_STR(f->name, "index.html");
    T_CONTAINS((const char *)f->data, "app.js");
    T_CHECK(web_asset("/app.js") && web_asset("/app.css") && web_asset("/vendor/uPlot.iife.min.js"));
    T_EQ_INT(strlen((const char *)web_asset("/app.js")->data), web_asset("/app.js")->len);
    const char *refused[] = {"", "app.js", "/../app.js", "/vendor/../app.js", "//app.js", "/./app.js", "/APP.JS",
                             "/app.js/", "/app.js?x=1", "/vendor/", "/vendor", "/package.json",
                             "/vendor/uPlot.LICENSE/../../app.js", "/%2e%2e/app.js", "/index.html/.."};
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++)
        T_CHECK_MSG(web_asset(refused[i]) == NULL, "\"%s\" was served", refused[i]);
    T_CHECK(web_asset(NULL) == NULL);
    T_EQ_STR(web_asset_type("index.html"), "text/html; charset=utf-8");
    T_EQ_STR(web_asset_type("vendor/uPlot.iife.min.js"), "text/javascript; charset=utf-8");
    T_EQ_STR(web_asset_type("app.css"), "text/css; charset=utf-8");
    T_EQ_STR(web_asset_type("favicon.svg"), "image/svg+xml");
}

static void test_web_hmac_rfc4231(void) {
    char hex[65];
    /* RFC 4231 test case 2 */
    web_hmac_sha256("Jefe", "what do ya want for nothing?", hex);
    T_EQ_STR(hex, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    /* test case 6: a 131-byte key, hashed first */
    char key[132];
    memset(key, 0xaa, 131);
    key[131] = 0;
    web_hmac_sha256(key, "Test Using Larger Than Block-Size Key - Hash Key First", hex);
    T_EQ_STR(hex, "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54");
    T_CHECK(web_equal("abc", "abc"));
    T_CHECK(!web_equal("abc", "abd") && !web_equal("abc", "ab") && !web_equal("ab", "abc") && !web_equal("", "a"));
}

static void test_web_login_code_once(void) {
    web_auth *a = NULL;
    T_REQUIRE(web_auth_new("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", &a) == 0);
    char code[WEB_CODE_HEX + 1], code2[WEB_CODE_HEX + 1], session[WEB_SESSION_MAX], csrf[WEB_CSRF_HEX + 1];
    T_REQUIRE(web_login_new(a, code) == 0);
    T_REQUIRE(web_login_new(a, code2) == 0);
    T_EQ_INT(strlen(code), WEB_CODE_HEX);
    T_CHECK(strcmp(code, code2) != 0);
    T_EQ_INT(web_login_take(a, "", session, csrf), UMDQ_EINVAL);
    T_EQ_INT(web_login_take(a, NULL, session, csrf), UMDQ_EINVAL);
    char wrong[WEB_CODE_HEX + 1];
    memcpy(wrong, code, sizeof wrong);
    wrong[0] = wrong[0] == 'a' ? 'b' : 'a';
    T_EQ_INT(web_login_take(a, wrong, session, csrf), UMDQ_EINVAL);
    T_EQ_INT(web_login_take(a, code, session, csrf), 0);
    T_EQ_INT(strlen(csrf), WEB_CSRF_HEX);
    T_EQ_INT(web_login_take(a, code, session, csrf), UMDQ_EINVAL); /* used up */
    T_EQ_INT(web_login_take(a, code2, session, csrf), 0);           /* the other is still good */
    /* more codes than the table holds: the oldest go, the newest stay good */
    char first[WEB_CODE_HEX + 1], last[WEB_CODE_HEX + 1];
    T_REQUIRE(web_login_new(a, first) == 0);
    for (int i = 0; i < 40; i++) T_REQUIRE(web_login_new(a, last) == 0);
    T_EQ_INT(web_login_take(a, first, session, csrf), UMDQ_EINVAL);
    T_EQ_INT(web_login_take(a, last, session, csrf), 0);
    web_auth_destroy(&a);
    T_CHECK(a == NULL);
    web_auth_destroy(&a);
}

static void test_web_session_cookie(void) {
    web_auth *a = NULL, *other = NULL;
    T_REQUIRE(web_auth_new("token-one-token-one-token-one-token-one", &a) == 0);
    T_REQUIRE(web_auth_new("token-two-token-two-token-two-token-two", &other) == 0);
    char code[WEB_CODE_HEX + 1], session[WEB_SESSION_MAX], csrf[WEB_CSRF_HEX + 1], again[WEB_CSRF_HEX + 1];
    T_REQUIRE(web_login_new(a, code) == 0);
    T_REQUIRE(web_login_take(a, code, session, csrf) == 0);
    T_CHECK(web_session_check(a, session, again));
    T_EQ_STR(again, csrf);
    T_CHECK(web_session_check(a, session, NULL));
    /* a session of another token, or any change to the value, is refused */
    T_CHECK(!web_session_check(other, session, NULL));
    char bad[WEB_SESSION_MAX + 8];
    for (size_t i = 0; i < strlen(session); i++) {
        snprintf(bad, sizeof bad, "%s", session);
        bad[i] = bad[i] == '1' ? '2' : bad[i] == '.' ? 'x' : '1';
        T_CHECK_MSG(!web_session_check(a, bad, NULL), "changed at %zu: %s", i, bad);
    }
    snprintf(bad, sizeof bad, "%s0", session);
    T_CHECK(!web_session_check(a, bad, NULL));
    T_CHECK(!web_session_check(a, "", NULL) && !web_session_check(a, NULL, NULL) && !web_session_check(a, "1.2.3", NULL));
    /* two logins: two sessions with different CSRF values */
    char session2[WEB_SESSION_MAX], csrf2[WEB_CSRF_HEX + 1];
    T_REQUIRE(web_login_new(a, code) == 0);
    T_REQUIRE(web_login_take(a, code, session2, csrf2) == 0);
    T_CHECK(strcmp(session, session2) != 0 && strcmp(csrf, csrf2) != 0);
    web_auth_destroy(&a);
    web_auth_destroy(&other);
}

int main(void) {
    T_RUN(test_web_assets_only_embedded);
    T_RUN(test_web_hmac_rfc4231);
    T_RUN(test_web_login_code_once);
    T_RUN(test_web_session_cookie);
    return t_done();
}
