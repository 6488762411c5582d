/* test_umdq.c: error names. umdq-uses: common */
#include "t.h"
#include "umdq.h"

static void test_strerror(void) {
    T_EQ_STR(umdq_strerror(UMDQ_OK), "ok");
    T_EQ_STR(umdq_strerror(UMDQ_ENOTFOUND), "not found");
    T_EQ_STR(umdq_strerror(-999), "unknown error");
}

int main(void) {
    T_RUN(test_strerror);
    return t_done();
}
