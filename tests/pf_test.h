/* pf_test.h - the check() and counters shared by the C tests. Each test
   prints one line per check and ends with "N passed, M failed". */
#ifndef PF_TEST_H
#define PF_TEST_H
#include <stdarg.h>
#include <stdio.h>

static int passed, failed;

static void check(int ok, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    printf(ok ? "ok   - " : "FAIL - ");
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
    if (ok) passed++; else failed++;
}

#endif
