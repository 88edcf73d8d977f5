/*
 * check.h: the check counter and CHECK(), shared by the C test programs.
 * CHECK(cond) counts one check and exits 1 with the file, line, condition
 * and svmap's last error message when `cond` is false.
 */
#ifndef SVMAP_TEST_CHECK_H
#define SVMAP_TEST_CHECK_H

#include <stdio.h>
#include <stdlib.h>

#include "svmap.h"

static int checks;

#define CHECK(cond)                                                                    \
    do {                                                                               \
        checks++;                                                                      \
        if (!(cond)) {                                                                 \
            fprintf(stderr, "%s:%d: check failed: %s\n  last error: \"%s\"\n",         \
                    __FILE__, __LINE__, #cond, svmap_last_error_message());            \
            exit(1);                                                                   \
        }                                                                              \
    } while (0)

#endif
