/*
 * test_runtime.c: the runtime (svmap_runtime_t) on this process's memory
 * with two recording devices plugged in as C callbacks. Every callback
 * checks, as it is called, that the range is below the device's limit,
 * that a map never overlaps a range the device still holds (mapped, or
 * invalidated but not yet unmapped), and that an unmap comes only after an
 * acknowledged invalidation of the same range. Then a runtime started with
 * its devices and the top 64 MiB below 2^40 reserved at once: the
 * program's own mappings land elsewhere, every SVM range inside it.
 */
#define _DEFAULT_SOURCE /* MAP_ANONYMOUS under -std=c11 */
#include <stdint.h>
#include <sys/mman.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"

#define MAX_HELD 256

struct held {
    uint64_t start, end;
    int invalidated;
};

struct recorder {
    const char *name;
    uint64_t limit;
    struct held held[MAX_HELD];
    int n_held;
    int errors;
    int fail_invalidate;
    int calls, maps, invalidates, unmaps, protects, regions;
    char last_op[16], prev_op[16];
};

static void bad(struct recorder *r, const char *what, uint64_t s, uint64_t e) {
    fprintf(stderr, "%s: %s [%#llx, %#llx)\n", r->name, what, (unsigned long long)s,
            (unsigned long long)e);
    r->errors++;
}

static void note(struct recorder *r, const char *op, uint64_t s, uint64_t e) {
    r->calls++;
    memcpy(r->prev_op, r->last_op, sizeof r->prev_op);
    snprintf(r->last_op, sizeof r->last_op, "%s", op);
    if (s >= e || e > r->limit) bad(r, "range at or above the limit, or empty", s, e);
}

static int find(struct recorder *r, uint64_t s, uint64_t e) {
    for (int i = 0; i < r->n_held; i++)
        if (r->held[i].start == s && r->held[i].end == e) return i;
    return -1;
}

static int rec_map(void *u, uint64_t s, uint64_t e) {
    struct recorder *r = u;
    note(r, "map", s, e);
    r->maps++;
    for (int i = 0; i < r->n_held; i++)
        if (r->held[i].start < e && s < r->held[i].end) bad(r, "map over a held range", s, e);
    if (r->n_held == MAX_HELD) return 1;
    r->held[r->n_held++] = (struct held){s, e, 0};
    return 0;
}

static int rec_invalidate(void *u, uint64_t s, uint64_t e) {
    struct recorder *r = u;
    note(r, "invalidate", s, e);
    r->invalidates++;
    if (r->fail_invalidate) return 5;
    for (int i = 0; i < r->n_held; i++)
        if (r->held[i].start < e && s < r->held[i].end) r->held[i].invalidated = 1;
    return 0;
}

static int rec_unmap(void *u, uint64_t s, uint64_t e) {
    struct recorder *r = u;
    note(r, "unmap", s, e);
    r->unmaps++;
    int i = find(r, s, e);
    if (i < 0) {
        bad(r, "unmap of a range not held", s, e);
        return 1;
    }
    if (!r->held[i].invalidated) bad(r, "unmap before an invalidation", s, e);
    r->held[i] = r->held[--r->n_held];
    return 0;
}

static int rec_protect(void *u, uint64_t s, uint64_t e, svmap_prot_t p) {
    struct recorder *r = u;
    note(r, "protect", s, e);
    r->protects++;
    (void)p;
    if (strcmp(r->prev_op, "invalidate") != 0) bad(r, "protect without an invalidation first", s, e);
    return 0;
}

static int rec_region(void *u, uint64_t s, uint64_t e) {
    struct recorder *r = u;
    note(r, "map_region", s, e);
    r->regions++;
    return 0;
}

int main(void) {
    static struct recorder rec[2] = {
        {.name = "gpu40", .limit = 1ull << 40},
        {.name = "gpu44", .limit = 1ull << 44},
    };
    svmap_runtime_t *rt = svmap_runtime_new(false);
    CHECK(rt != NULL);
    for (int i = 0; i < 2; i++) {
        svmap_device_config_t cfg;
        CHECK(svmap_device_config_init(&cfg, rec[i].name, i == 0 ? 40 : 44) == SVMAP_OK);
        svmap_device_ops_t ops = {
            .user = &rec[i],
            .map = rec_map,
            .invalidate = rec_invalidate,
            .protect = rec_protect,
            .unmap = rec_unmap,
            .map_region = rec_region,
        };
        CHECK(svmap_runtime_add_device(rt, &cfg, &ops) == SVMAP_OK);
    }
    const char *both[2] = {"gpu40", "gpu44"};
    const char *g40[1] = {"gpu40"};
    /* Without a window: ranges get their own mappings; then with one. */
    for (int round = 0; round < 2; round++) {
        if (round == 1 && getenv("SVMAP_TEST_UNDER_VALGRIND") != NULL) {
            /* Valgrind holds ranges /proc/self/maps does not show: the
             * window meets one and is refused, with nothing replaced. */
            CHECK(svmap_runtime_reserve_window(rt, both, 2) == SVMAP_EEXIST);
            continue;
        }
        if (round == 1) CHECK(svmap_runtime_reserve_window(rt, both, 2) == SVMAP_OK);
        uint64_t addr[24];
        for (int k = 0; k < 24; k++) {
            uint64_t len = 0x1000ull << (k % 5);
            CHECK(svmap_runtime_alloc(rt, len, k % 3 ? both : g40, k % 3 ? 2 : 1, &addr[k]) ==
                  SVMAP_OK);
            CHECK(addr[k] + len <= 1ull << 40);
            *(volatile uint64_t *)addr[k] = 0x5eed0000u + k;
            int fd;
            uint64_t off, flen;
            CHECK(svmap_runtime_buffer_fd(rt, addr[k], &fd, &off, &flen) == SVMAP_OK);
            CHECK(fd >= 0 && flen >= len);
            /* Free every other one at once: its range is reused later. */
            if (k % 2) CHECK(svmap_runtime_free(rt, addr[k]) == SVMAP_OK);
        }
        CHECK(svmap_runtime_protect(rt, addr[2], 0x1000, SVMAP_PROT_READ) == SVMAP_OK);
        CHECK(rec[0].protects > 0 && strcmp(rec[0].last_op, "protect") == 0);
        CHECK(svmap_runtime_protect(rt, addr[2], 0x1000, SVMAP_PROT_READ_WRITE) == SVMAP_OK);
        for (int k = 0; k < 24; k += 2) {
            CHECK(*(volatile uint64_t *)addr[k] == 0x5eed0000u + k);
            CHECK(svmap_runtime_free(rt, addr[k]) == SVMAP_OK);
        }
    }
    /* A device that does not acknowledge: the free fails naming it and the
     * range is never handed out again. */
    uint64_t stuck;
    CHECK(svmap_runtime_alloc(rt, 0x4000, both, 2, &stuck) == SVMAP_OK);
    rec[1].fail_invalidate = 1;
    CHECK(svmap_runtime_free(rt, stuck) == SVMAP_EIO);
    CHECK(strstr(svmap_last_error_message(), "gpu44") != NULL);
    for (int k = 0; k < 16; k++) {
        uint64_t a;
        CHECK(svmap_runtime_alloc(rt, 0x4000, g40, 1, &a) == SVMAP_OK);
        CHECK(a + 0x4000 <= stuck || stuck + 0x4000 <= a);
        CHECK(svmap_runtime_free(rt, a) == SVMAP_OK);
    }
    /* Bad arguments are refused, never a crash. */
    CHECK(svmap_runtime_free(rt, 0x1234) != SVMAP_OK);
    CHECK(svmap_runtime_protect(rt, stuck, 0x1000, 7) == SVMAP_EINVAL);
    CHECK(svmap_runtime_add_device(rt, NULL, NULL) == SVMAP_EINVAL);
    CHECK(svmap_runtime_alloc(NULL, 0x1000, g40, 1, &stuck) == SVMAP_EINVAL);
    for (int i = 0; i < 2; i++) CHECK(rec[i].errors == 0);
    CHECK(rec[0].maps > 24 && rec[0].unmaps > 0 && rec[1].invalidates > 0);
    svmap_runtime_delete(rt);

    /* Started with its devices and its window reserved at once. */
    static struct recorder srec[2] = {
        {.name = "gpu40", .limit = 1ull << 40},
        {.name = "gpu44", .limit = 1ull << 44},
    };
    svmap_device_config_t cfgs[2];
    svmap_device_ops_t sops[2];
    for (int i = 0; i < 2; i++) {
        CHECK(svmap_device_config_init(&cfgs[i], srec[i].name, i == 0 ? 40 : 44) == SVMAP_OK);
        svmap_device_ops_t o = {
            .user = &srec[i],
            .map = rec_map,
            .invalidate = rec_invalidate,
            .protect = rec_protect,
            .unmap = rec_unmap,
            .map_region = rec_region,
        };
        sops[i] = o;
    }
    CHECK(svmap_runtime_start(false, cfgs, sops, 0, 0) == NULL);
    CHECK(strstr(svmap_last_error_message(), "no devices") != NULL);
    CHECK(svmap_runtime_start(false, NULL, sops, 2, 0) == NULL);
    CHECK(svmap_runtime_start(false, cfgs, sops, 2, 1ull << 41) == NULL);
    CHECK(strstr(svmap_last_error_message(), "common window") != NULL);
    if (getenv("SVMAP_TEST_UNDER_VALGRIND") == NULL) {
        const uint64_t hi = 1ull << 40, lo = hi - (64ull << 20);
        svmap_runtime_t *st = svmap_runtime_start(false, cfgs, sops, 2, 64ull << 20);
        CHECK(st != NULL);
        /* The program's own mappings go elsewhere. */
        void *m[8];
        for (int i = 0; i < 8; i++) {
            m[i] = mmap(NULL, 1u << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            CHECK(m[i] != MAP_FAILED);
            uint64_t a = (uint64_t)(uintptr_t)m[i];
            CHECK(a + (1u << 20) <= lo || a >= hi);
        }
        /* Every SVM range inside the window, for either device or both. */
        for (int k = 0; k < 16; k++) {
            uint64_t a, len = 0x10000ull << (k % 3);
            CHECK(svmap_runtime_alloc(st, len, k % 2 ? both : g40, k % 2 ? 2 : 1, &a) == SVMAP_OK);
            CHECK(lo <= a && a + len <= hi);
            *(volatile uint64_t *)a = 0xab00u + k;
            CHECK(*(volatile uint64_t *)a == 0xab00u + k);
            CHECK(svmap_runtime_free(st, a) == SVMAP_OK);
        }
        for (int i = 0; i < 8; i++) CHECK(munmap(m[i], 1u << 20) == 0);
        for (int i = 0; i < 2; i++) CHECK(srec[i].errors == 0);
        CHECK(srec[0].maps == 16 && srec[1].maps == 8);
        svmap_runtime_delete(st);
    }
    printf("test_runtime: %d checks passed (gpu40: %d calls, gpu44: %d calls)\n", checks,
           rec[0].calls, rec[1].calls);
    return 0;
}
