/* test_common_json.c: canonical JSON, dotted paths, the bounded parser, SHA-256 (FIPS 180-4
 * vectors), errlist and the protocol frame checks. umdq-uses: common */
#include <stdint.h>
#include "errlist.h"
#include "jsonx.h"
#include "proto.h"
#include "sha256.h"
#include "t.h"
#include "umdq.h"

/* Canonical text of the JSON text s (NULL when it does not parse or has no canonical form). */
static char *canon(const char *s) {
    char err[200];
    cJSON *v = json_parse_n(s, strlen(s), err, sizeof err);
    if (!v) return NULL;
    char *out = json_canonical(v);
    cJSON_Delete(v);
    return out;
}

#define T_CANON(in, want) do { char *t_c = canon(in); T_EQ_STR(t_c, want); free(t_c); } while (0)

static void test_common_canonical_numbers(void) {
    T_CANON("1", "1");
    T_CANON("1.0", "1");
    T_CANON("1e0", "1");
    T_CANON("10E-1", "1");
    T_CANON("0.1", "0.1");
    T_CANON("-0", "0");
    T_CANON("-0.0", "0");
    T_CANON("-3", "-3");
    T_CANON("0.375", "0.375");
    T_CANON("1.5e-4", "0.00015");
    T_CANON("1e-8", "1e-08");
    T_CANON("1e300", "1e+300");
    T_CANON("123456789012", "123456789012");
    T_CANON("0.30000000000000004", "0.30000000000000004");
    T_CANON("9007199254740991", "9007199254740991");            /* 2^53 - 1: an integer */
    T_CANON("9007199254740993", "9007199254740992");            /* 2^53 + 1 reads as 2^53 */
    T_CANON("9007199254740994", "9007199254740994");
    T_CANON("-9007199254740993", "-9007199254740992");
    T_CANON("1e20", "1e+20");
    /* every form reads back to the same double */
    const char *forms[] = {"3.14159", "2.5e-7", "1e300", "6.02214076e23", "-1.7976931348623157e308"};
    for (size_t i = 0; i < sizeof forms / sizeof forms[0]; i++) {
        char *c = canon(forms[i]);
        T_REQUIRE(c);
        T_CHECK_MSG(strtod(c, NULL) == strtod(forms[i], NULL), "%s -> %s", forms[i], c);
        free(c);
    }
    char buf[40];
    T_EQ_INT(json_canonical_number(NAN, buf, sizeof buf), UMDQ_EINVAL);
    T_EQ_INT(json_canonical_number(INFINITY, buf, sizeof buf), UMDQ_EINVAL);
    cJSON *inf = cJSON_CreateNumber(INFINITY);
    T_CHECK(json_canonical(inf) == NULL);
    cJSON_Delete(inf);
}

static void test_common_canonical_objects(void) {
    T_CANON("{ \"b\": 1, \"a\": {\"d\": [3, 2, {\"z\":1,\"y\":2}], \"c\": null} }",
            "{\"a\":{\"c\":null,\"d\":[3,2,{\"y\":2,\"z\":1}]},\"b\":1}");
    T_CANON("{\"B\":1,\"a\":2,\"_\":3,\"aa\":4,\"\\u00e9\":5}", "{\"B\":1,\"_\":3,\"a\":2,\"aa\":4,\"\xc3\xa9\":5}");
    T_CANON("  [true , false,null ]\n", "[true,false,null]");
    T_CANON("{}", "{}");
    T_CANON("[]", "[]");
    /* many keys take the sorting path that allocates */
    char in[2048], want[2048];
    strcpy(in, "{");
    strcpy(want, "{");
    for (int i = 39; i >= 0; i--) sprintf(in + strlen(in), "%s\"k%02d\":%d", i == 39 ? "" : ",", i, i);
    for (int i = 0; i < 40; i++) sprintf(want + strlen(want), "%s\"k%02d\":%d", i ? "," : "", i, i);
    strcat(in, "}");
    strcat(want, "}");
    T_CANON(in, want);
}

static void test_common_canonical_strings(void) {
    T_CANON("\"a\\\"b\\\\c\"", "\"a\\\"b\\\\c\"");
    T_CANON("\"\\/\"", "\"/\"");
    T_CANON("\"tab\\tnl\\ncr\\rbs\\bff\\f\"", "\"tab\\tnl\\ncr\\rbs\\bff\\f\"");
    T_CANON("\"\\u0001\\u001f\\u001F\"", "\"\\u0001\\u001f\\u001f\"");
    T_CANON("\"\\u00e9\\u20ac\"", "\"\xc3\xa9\xe2\x82\xac\"");
    T_CANON("\"\xe2\x82\xac\"", "\"\xe2\x82\xac\"");
    T_CANON("\"\\u007f\"", "\"\x7f\"");
}

static void test_common_parse_errors(void) {
    char err[200];
    T_CHECK(json_parse_n("{\"a\": }", 7, err, sizeof err) == NULL);
    T_CONTAINS(err, "byte");
    T_CHECK(json_parse_n("{\"a\": 1} x", 10, err, sizeof err) == NULL);
    T_CONTAINS(err, "after the value");
    T_CHECK(json_parse_n("{\"a\": {\"b\": 1, \"b\": 2}}", 24, err, sizeof err) == NULL);
    T_CONTAINS(err, "duplicate key \"a.b\"");
    T_CHECK(json_parse_n("", 0, err, sizeof err) == NULL);
    /* length-bounded: the bytes after len are not read */
    cJSON *v = json_parse_n("[1,2]garbage", 5, err, sizeof err);
    T_REQUIRE(v);
    T_EQ_INT(cJSON_GetArraySize(v), 2);
    cJSON_Delete(v);
}

static void test_common_paths(void) {
    char err[200];
    cJSON *root = cJSON_CreateObject();
    T_EQ_INT(json_path_set(root, "model.width", cJSON_CreateNumber(384), err, sizeof err), 0);
    T_EQ_INT(json_path_set(root, "model.heads", cJSON_CreateNumber(6), err, sizeof err), 0);
    T_EQ_INT(json_path_set(root, "model.width", cJSON_CreateNumber(192), err, sizeof err), 0);
    T_EQ_INT(json_path_set(root, "umd.schedule", cJSON_CreateString("linear"), err, sizeof err), 0);
    T_EQ_INT(json_path_set(root, "train.device", cJSON_CreateBool(1), err, sizeof err), 0);
    T_EQ_INT(json_get_int(root, "model.width", 0), 192);
    T_NEAR(json_get_number(root, "model.heads", 0), 6, 0, 0);
    T_EQ_STR(json_get_string(root, "umd.schedule", NULL), "linear");
    T_EQ_INT(json_get_bool(root, "train.device", 0), 1);
    T_EQ_INT(json_get_int(root, "model.depth", 7), 7);
    T_EQ_STR(json_get_string(root, "model.width", "dflt"), "dflt");
    T_CHECK(json_path_get(root, "model.width.x") == NULL);
    T_CHECK(json_path_get(root, "mod") == NULL);
    T_EQ_INT(json_path_set(root, "model.width.x", cJSON_CreateNumber(1), err, sizeof err), UMDQ_EINVAL);
    T_CONTAINS(err, "\"model.width\" is not an object");
    char *c = json_canonical(root);
    T_EQ_STR(c, "{\"model\":{\"heads\":6,\"width\":192},\"train\":{\"device\":true},\"umd\":{\"schedule\":\"linear\"}}");
    free(c);
    cJSON_Delete(root);
}

static void hex_of(const char *s, size_t n, char hex[65]) {
    sha256_hex(s, n, hex);
}

static void sha256_vectors(void) {
    char hex[65];
    hex_of("", 0, hex);
    T_EQ_STR(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    hex_of("abc", 3, hex);
    T_EQ_STR(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    const char *m448 = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    hex_of(m448, strlen(m448), hex);
    T_EQ_STR(hex, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    const char *m896 = "abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu";
    hex_of(m896, strlen(m896), hex);
    T_EQ_STR(hex, "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1");
    /* one million 'a', fed in uneven pieces */
    char chunk[997];
    memset(chunk, 'a', sizeof chunk);
    sha256_ctx c;
    sha256_init(&c);
    size_t left = 1000000;
    for (size_t piece = 1; left; piece = piece % 997 + 1) {
        size_t n = piece < left ? piece : left;
        sha256_update(&c, chunk, n);
        left -= n;
    }
    unsigned char d[32];
    sha256_final(&c, d);
    sha256_to_hex(d, hex);
    T_EQ_STR(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
    /* lengths around the padding boundary agree between one-shot and byte-wise hashing */
    char buf[130];
    memset(buf, 'x', sizeof buf);
    for (size_t n = 50; n < 130; n++) {
        char one[65], bytewise[65];
        sha256_hex(buf, n, one);
        sha256_init(&c);
        for (size_t i = 0; i < n; i++) sha256_update(&c, buf + i, 1);
        sha256_final(&c, d);
        sha256_to_hex(d, bytewise);
        T_CHECK_MSG(strcmp(one, bytewise) == 0, "length %zu", n);
    }
}

/* The FIPS vectors through the compression picked for this CPU, then through the portable one. */
static void test_common_sha256_vectors(void) {
    sha256_use_portable(0);
    sha256_vectors();
    const char *picked = sha256_implementation();
    sha256_use_portable(1);
    T_EQ_STR(sha256_implementation(), "portable");
    sha256_vectors();
    sha256_use_portable(0);
    T_EQ_STR(sha256_implementation(), picked);
    /* both agree on random lengths and contents */
    unsigned char buf[3000];
    unsigned x = 12345;
    for (size_t i = 0; i < sizeof buf; i++) buf[i] = (unsigned char)((x = x * 1103515245u + 12345u) >> 16);
    for (size_t n = 0; n < sizeof buf; n += 37) {
        char a[65], b[65];
        sha256_hex(buf, n, a);
        sha256_use_portable(1);
        sha256_hex(buf, n, b);
        sha256_use_portable(0);
        T_CHECK_MSG(strcmp(a, b) == 0, "length %zu: %s vs portable", n, picked);
    }
}

static void test_common_errlist(void) {
    errlist *e = errlist_new();
    T_REQUIRE(e);
    errlist_add(e, "umd.r_t0", "must be in [0, 1], got %g", 1.5);
    errlist_add(e, "", "not an object");
    errlist_add(e, "umd.r_t0", "must be in [0, 1], got %g", 1.5); /* repeat: kept once */
    errlist_add(e, "umd.r_t0", "another problem");
    T_EQ_INT(errlist_count(e), 3);
    T_EQ_STR(errlist_path(e, 0), "umd.r_t0");
    T_EQ_STR(errlist_message(e, 0), "must be in [0, 1], got 1.5");
    T_CHECK(errlist_path(e, 3) == NULL);
    char *j = errlist_join(e, "\n");
    T_EQ_STR(j, "umd.r_t0: must be in [0, 1], got 1.5\nnot an object\numd.r_t0: another problem");
    free(j);
    char small[16];
    errlist_format(e, small, sizeof small);
    T_EQ_STR(small, "umd.r_t0: must ");
    char longmsg[2000];
    memset(longmsg, 'm', sizeof longmsg - 1);
    longmsg[sizeof longmsg - 1] = 0;
    errlist_add(e, "x", "%s", longmsg);
    T_EQ_INT((int)strlen(errlist_message(e, 3)), (int)sizeof longmsg - 1);
    errlist_clear(e);
    T_EQ_INT(errlist_count(e), 0);
    for (int i = 0; i < 1500; i++) errlist_add(e, "k", "problem %d", i);
    T_EQ_INT(errlist_count(e), 1000);
    j = errlist_join(e, "; ");
    T_CONTAINS(j, "(500 more problems not shown)");
    free(j);
    errlist_destroy(&e);
    T_CHECK(e == NULL);
    errlist_destroy(&e);
}

static void test_common_proto(void) {
    char err[200];
    cJSON *m = proto_new("hb");
    T_REQUIRE(m);
    cJSON_AddNumberToObject(m, "job", 42);
    char *txt = proto_print(m);
    T_REQUIRE(txt);
    cJSON *back = NULL;
    const char *type = NULL;
    T_EQ_INT(proto_parse(txt, strlen(txt), &back, &type, err, sizeof err), 0);
    T_EQ_STR(type, "hb");
    int64_t job = 0;
    T_EQ_INT(proto_get_int(back, "job", &job, err, sizeof err), 0);
    T_EQ_INT(job, 42);
    const char *s = NULL;
    T_EQ_INT(proto_get_str(back, "t", &s, err, sizeof err), 0);
    T_EQ_STR(s, "hb");
    T_EQ_INT(proto_get_str(back, "job", &s, err, sizeof err), UMDQ_EPROTO);
    T_CONTAINS(err, "\"job\" must be a string");
    T_EQ_INT(proto_get_int(back, "lease", &job, err, sizeof err), UMDQ_EPROTO);
    T_CONTAINS(err, "missing field \"lease\"");
    cJSON_Delete(back);
    cJSON_Delete(m);
    free(txt);

    const char *bad[] = {"[1]", "{\"v\":1}", "{\"t\":\"hb\"}", "{\"t\":\"hb\",\"v\":2}", "{\"t\":3,\"v\":1}",
                         "{\"t\":\"hb\",\"v\":1", "{\"t\":\"hb\",\"v\":1,\"job\":1.5}"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        back = NULL;
        int rc = proto_parse(bad[i], strlen(bad[i]), &back, &type, err, sizeof err);
        if (i == 6) {
            T_EQ_INT(rc, 0);
            T_EQ_INT(proto_get_int(back, "job", &job, err, sizeof err), UMDQ_EPROTO);
            cJSON_Delete(back);
        } else {
            T_CHECK_MSG(rc == UMDQ_EPROTO && back == NULL, "accepted %s", bad[i]);
        }
    }
    char *big = malloc(PROTO_MAX_MSG + 2);
    T_REQUIRE(big);
    memset(big, ' ', PROTO_MAX_MSG + 1);
    memcpy(big, "{\"t\":\"x\",\"v\":1}", 15);
    T_EQ_INT(proto_parse(big, PROTO_MAX_MSG + 1, &back, &type, err, sizeof err), UMDQ_EPROTO);
    T_EQ_INT(proto_parse(big, PROTO_MAX_MSG, &back, &type, err, sizeof err), 0);
    cJSON_Delete(back);
    free(big);
}

int main(void) {
    T_RUN(test_common_canonical_numbers);
    T_RUN(test_common_canonical_objects);
    T_RUN(test_common_canonical_strings);
    T_RUN(test_common_parse_errors);
    T_RUN(test_common_paths);
    T_RUN(test_common_sha256_vectors);
    T_RUN(test_common_errlist);
    T_RUN(test_common_proto);
    return t_done();
}
