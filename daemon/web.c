/* web.c: embedded dashboard files, login codes and session cookies (see web.h). */
#include "web.h"

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "sha256.h"
#include "umdq.h"
#include "util.h"

/* generated from web/ by scripts/embed-web.sh: names relative to web/ ("vendor/uPlot.min.css") */
extern const umdq_embedded_file umdq_web_files[];

#define WEB_CODES 32 /* login codes waiting to be used; the oldest is dropped past that */

const umdq_embedded_file *web_asset(const char *url) {
    if (!url || url[0] != '/') return NULL;
    const char *name = url[1] ? url + 1 : "index.html";
    for (const umdq_embedded_file *f = umdq_web_files; f->name; f++)
        if (strcmp(f->name, name) == 0) return f;
    return NULL;
}

static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

const char *web_asset_type(const char *name) {
    if (ends_with(name, ".html")) return "text/html; charset=utf-8";
    if (ends_with(name, ".js")) return "text/javascript; charset=utf-8";
    if (ends_with(name, ".css")) return "text/css; charset=utf-8";
    if (ends_with(name, ".svg")) return "image/svg+xml";
    if (ends_with(name, ".png")) return "image/png";
    return "text/plain; charset=utf-8";
}

/* ---- HMAC-SHA256 (RFC 2104) ----------------------------------------------------------------------- */

void web_hmac_sha256(const char *key, const char *msg, char hex[65]) {
    unsigned char k[64], pad[64], inner[32], out[32];
    size_t kl = strlen(key);
    memset(k, 0, sizeof k);
    if (kl > 64) sha256(key, kl, k);
    else memcpy(k, key, kl);
    sha256_ctx c;
    for (int i = 0; i < 64; i++) pad[i] = k[i] ^ 0x36;
    sha256_init(&c);
    sha256_update(&c, pad, 64);
    sha256_update(&c, msg, strlen(msg));
    sha256_final(&c, inner);
    for (int i = 0; i < 64; i++) pad[i] = k[i] ^ 0x5c;
    sha256_init(&c);
    sha256_update(&c, pad, 64);
    sha256_update(&c, inner, 32);
    sha256_final(&c, out);
    sha256_to_hex(out, hex);
}

int web_equal(const char *a, const char *b) {
    size_t n = strlen(a), m = strlen(b);
    unsigned char diff = (unsigned char)(n != m);
    for (size_t i = 0; i < n; i++) diff |= (unsigned char)(a[i] ^ (i < m ? b[i] : 0));
    return diff == 0;
}

/* ---- codes and sessions -------------------------------------------------------------------------- */

typedef struct {
    char code[WEB_CODE_HEX + 1]; /* "" = free slot */
    double expires;              /* now_s() */
} login_code;

struct web_auth {
    char *token;                 /* the HMAC key; owned */
    pthread_mutex_t mu;          /* guards codes */
    login_code codes[WEB_CODES];
};

int web_auth_new(const char *token, web_auth **out) {
    *out = NULL;
    web_auth *a = calloc(1, sizeof *a);
    if (!a || !(a->token = strdup(token))) {
        free(a);
        return UMDQ_ENOMEM;
    }
    pthread_mutex_init(&a->mu, NULL);
    *out = a;
    return 0;
}

void web_auth_destroy(web_auth **ap) {
    if (!ap || !*ap) return;
    web_auth *a = *ap;
    pthread_mutex_destroy(&a->mu);
    free(a->token);
    free(a);
    *ap = NULL;
}

int web_login_new(web_auth *a, char *code) {
    if (random_hex(code, WEB_CODE_HEX) != 0) return UMDQ_EIO;
    double now = now_s();
    pthread_mutex_lock(&a->mu);
    int slot = 0;
    for (int i = 0; i < WEB_CODES; i++) {
        if (!a->codes[i].code[0] || a->codes[i].expires < now) { slot = i; break; }
        if (a->codes[i].expires < a->codes[slot].expires) slot = i;
    }
    memcpy(a->codes[slot].code, code, WEB_CODE_HEX + 1);
    a->codes[slot].expires = now + WEB_LOGIN_TTL_S;
    pthread_mutex_unlock(&a->mu);
    return 0;
}

/* "EXPIRY.NONCE" signed: value = EXPIRY.NONCE.MAC, MAC = HMAC(token, "session|EXPIRY|NONCE");
 * csrf = HMAC(token, "csrf|NONCE"). */
static void session_mac(const web_auth *a, long long expiry, const char *nonce, char mac[65]) {
    char msg[128];
    snprintf(msg, sizeof msg, "umdq-session|%lld|%s", expiry, nonce);
    web_hmac_sha256(a->token, msg, mac);
}

static void csrf_of(const web_auth *a, const char *nonce, char csrf[65]) {
    char msg[128];
    snprintf(msg, sizeof msg, "umdq-csrf|%s", nonce);
    web_hmac_sha256(a->token, msg, csrf);
}

int web_login_take(web_auth *a, const char *code, char *session, char *csrf) {
    int found = 0;
    double now = now_s();
    if (!code || strlen(code) != WEB_CODE_HEX) return UMDQ_EINVAL;
    pthread_mutex_lock(&a->mu);
    for (int i = 0; i < WEB_CODES; i++) {
        if (!a->codes[i].code[0] || !web_equal(a->codes[i].code, code)) continue;
        found = a->codes[i].expires >= now;
        memset(&a->codes[i], 0, sizeof a->codes[i]); /* used or expired: gone either way */
    }
    pthread_mutex_unlock(&a->mu);
    if (!found) return UMDQ_EINVAL;
    char nonce[33], mac[65];
    if (random_hex(nonce, 32) != 0) return UMDQ_EIO;
    long long expiry = (long long)now + WEB_SESSION_TTL_S;
    session_mac(a, expiry, nonce, mac);
    snprintf(session, WEB_SESSION_MAX, "%lld.%s.%s", expiry, nonce, mac);
    csrf_of(a, nonce, csrf);
    return 0;
}

int web_session_check(const web_auth *a, const char *session, char *csrf) {
    char nonce[33], mac[65];
    if (!session) return 0;
    const char *dot = strchr(session, '.');
    if (!dot || dot == session || dot - session > 19) return 0;
    long long expiry = 0;
    for (const char *p = session; p < dot; p++) {
        if (*p < '0' || *p > '9') return 0;
        expiry = expiry * 10 + (*p - '0');
    }
    const char *n = dot + 1, *dot2 = strchr(n, '.');
    if (!dot2 || dot2 - n != 32) return 0;
    memcpy(nonce, n, 32);
    nonce[32] = 0;
    for (int i = 0; i < 32; i++)
        if (!((nonce[i] >= '0' && nonce[i] <= '9') || (nonce[i] >= 'a' && nonce[i] <= 'f'))) return 0;
    session_mac(a, expiry, nonce, mac);
    if (!web_equal(mac, dot2 + 1)) return 0;
    if ((double)expiry < now_s()) return 0;
    if (csrf) csrf_of(a, nonce, csrf);
    return 1;
}
