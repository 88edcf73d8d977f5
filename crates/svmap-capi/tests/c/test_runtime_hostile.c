/*
 * test_runtime_hostile.c: the runtime's entry points (svmap_runtime_*)
 * under hostile input: NULL handles and pointers, NULL names, counts too
 * large to be arrays, zero, unaligned, wrapping and huge lengths, unknown
 * enums and devices, double frees, frees of addresses never allocated,
 * device callbacks that fail with garbage codes, callbacks that call back
 * into the runtime, and a mapping made behind the runtime's back. Each call returns its documented status with a
 * message, never a crash, and a failed call changes nothing the caller
 * can see. Run by tests/c_api.rs, statically linked and under valgrind.
 */
#define _GNU_SOURCE /* MAP_ANONYMOUS, MAP_FIXED_NOREPLACE under -std=c11 */
#include <limits.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>

#include "check.h"

/* A device whose callbacks return `rc[op]` (0: done) and count calls. */
enum { OP_MAP, OP_INVALIDATE, OP_PROTECT, OP_UNMAP, OP_REGION, N_OPS };

struct dev {
    uint64_t limit;
    int rc[N_OPS];
    int calls[N_OPS];
    int above_limit;
    /* When set, the next callback calls the runtime itself. */
    svmap_runtime_t *reenter;
    svmap_status_t reentered;
};

static int note(struct dev *d, int op, uint64_t s, uint64_t e) {
    d->calls[op]++;
    if (s >= e || e > d->limit) d->above_limit++;
    if (d->reenter) {
        uint64_t a = 0;
        const char *n[1] = {"a"};
        d->reentered = svmap_runtime_alloc(d->reenter, 0x1000, n, 1, &a);
        svmap_runtime_delete(d->reenter); /* refused: nothing happens */
        d->reenter = NULL;
    }
    return d->rc[op];
}

static int d_map(void *u, uint64_t s, uint64_t e) { return note(u, OP_MAP, s, e); }
static int d_invalidate(void *u, uint64_t s, uint64_t e) { return note(u, OP_INVALIDATE, s, e); }
static int d_unmap(void *u, uint64_t s, uint64_t e) { return note(u, OP_UNMAP, s, e); }
static int d_region(void *u, uint64_t s, uint64_t e) { return note(u, OP_REGION, s, e); }
static int d_protect(void *u, uint64_t s, uint64_t e, svmap_prot_t p) {
    (void)p;
    return note(u, OP_PROTECT, s, e);
}

/* The status is `want` and the message says why (non-empty). */
#define REFUSED(call, want)                                                           \
    do {                                                                              \
        svmap_status_t st_ = (call);                                                  \
        if (st_ != (want)) fprintf(stderr, "got status %d\n", (int)st_);             \
        CHECK(st_ == (want));                                                         \
        CHECK(svmap_last_error_message()[0] != '\0');                                 \
    } while (0)

#define OK(call)                                                                      \
    do {                                                                              \
        CHECK((call) == SVMAP_OK);                                                    \
        CHECK(svmap_last_error_message()[0] == '\0');                                 \
    } while (0)

int main(void) {
    static struct dev dev[2] = {{.limit = 1ull << 40}, {.limit = 1ull << 44}};
    const char *names[2] = {"a", "b"};
    svmap_runtime_t *rt = svmap_runtime_new(false);
    CHECK(rt != NULL);
    svmap_device_ops_t ops[2];
    for (int i = 0; i < 2; i++) {
        ops[i] = (svmap_device_ops_t){
            .user = &dev[i],
            .map = d_map,
            .invalidate = d_invalidate,
            .protect = d_protect,
            .unmap = d_unmap,
            .map_region = d_region,
        };
    }
    svmap_device_config_t cfg;

    /* add_device: NULL handle, config, ops and name; bad widths; a
     * duplicate name. */
    OK(svmap_device_config_init(&cfg, "a", 40));
    REFUSED(svmap_runtime_add_device(NULL, &cfg, &ops[0]), SVMAP_EINVAL);
    REFUSED(svmap_runtime_add_device(rt, NULL, &ops[0]), SVMAP_EINVAL);
    REFUSED(svmap_runtime_add_device(rt, &cfg, NULL), SVMAP_EINVAL);
    cfg.name = NULL;
    REFUSED(svmap_runtime_add_device(rt, &cfg, &ops[0]), SVMAP_EINVAL);
    for (uint32_t bits = 0; bits < 300; bits += 65) {
        OK(svmap_device_config_init(&cfg, "a", bits));
        REFUSED(svmap_runtime_add_device(rt, &cfg, &ops[0]), SVMAP_EINVAL);
    }
    OK(svmap_device_config_init(&cfg, "a", 40));
    OK(svmap_runtime_add_device(rt, &cfg, &ops[0]));
    REFUSED(svmap_runtime_add_device(rt, &cfg, &ops[1]), SVMAP_EEXIST);
    OK(svmap_device_config_init(&cfg, "b", 44));
    OK(svmap_runtime_add_device(rt, &cfg, &ops[1]));

    /* alloc: NULL handle, out-parameter and names; counts that cannot be
     * arrays; unknown devices; zero, wrapping and huge lengths. The
     * out-parameter is left alone on failure. */
    uint64_t addr = 0xdead;
    REFUSED(svmap_runtime_alloc(NULL, 0x1000, names, 2, &addr), SVMAP_EINVAL);
    REFUSED(svmap_runtime_alloc(rt, 0x1000, names, 2, NULL), SVMAP_EINVAL);
    REFUSED(svmap_runtime_alloc(rt, 0x1000, NULL, 2, &addr), SVMAP_EINVAL);
    REFUSED(svmap_runtime_alloc(rt, 0x1000, names, SIZE_MAX, &addr), SVMAP_EINVAL);
    REFUSED(svmap_runtime_alloc(rt, 0x1000, names, (SIZE_MAX >> 3) + 1, &addr), SVMAP_EINVAL);
    const char *nulls[2] = {"a", NULL};
    REFUSED(svmap_runtime_alloc(rt, 0x1000, nulls, 2, &addr), SVMAP_EINVAL);
    const char *unknown[1] = {"nope"};
    REFUSED(svmap_runtime_alloc(rt, 0x1000, unknown, 1, &addr), SVMAP_ENOENT);
    const char *bad_utf8[1] = {"\xff\xfe"};
    CHECK(svmap_runtime_alloc(rt, 0x1000, bad_utf8, 1, &addr) != SVMAP_OK);
    REFUSED(svmap_runtime_alloc(rt, 0, names, 2, &addr), SVMAP_EINVAL);
    REFUSED(svmap_runtime_alloc(rt, UINT64_MAX, names, 2, &addr), SVMAP_ENOMEM);
    REFUSED(svmap_runtime_alloc(rt, UINT64_MAX - 0xfff, names, 2, &addr), SVMAP_ENOMEM);
    REFUSED(svmap_runtime_alloc(rt, 1ull << 41, names, 2, &addr), SVMAP_ENOMEM);
    CHECK(addr == 0xdead);
    for (int i = 0; i < 2; i++) CHECK(dev[i].calls[OP_MAP] == 0);

    /* A length that is not a page multiple is rounded up. */
    OK(svmap_runtime_alloc(rt, 1, names, 2, &addr));
    CHECK(addr % 4096 == 0 && addr + 4096 <= 1ull << 40);
    *(volatile char *)addr = 1;

    /* free: NULL handle, never allocated, inside a range, double. */
    REFUSED(svmap_runtime_free(NULL, addr), SVMAP_EINVAL);
    REFUSED(svmap_runtime_free(rt, 0), SVMAP_EINVAL);
    REFUSED(svmap_runtime_free(rt, UINT64_MAX), SVMAP_EINVAL);
    REFUSED(svmap_runtime_free(rt, addr + 8), SVMAP_EINVAL);
    REFUSED(svmap_runtime_free(rt, 0x7f0000000000), SVMAP_EINVAL);
    OK(svmap_runtime_free(rt, addr));
    REFUSED(svmap_runtime_free(rt, addr), SVMAP_EINVAL);
    for (int i = 0; i < 2; i++)
        CHECK(dev[i].calls[OP_MAP] == 1 && dev[i].calls[OP_INVALIDATE] == 1 &&
              dev[i].calls[OP_UNMAP] == 1);

    /* protect: NULL handle, zero length, wrapping, unaligned, unmapped,
     * unknown protections. */
    OK(svmap_runtime_alloc(rt, 0x4000, names, 2, &addr));
    REFUSED(svmap_runtime_protect(NULL, addr, 0x1000, SVMAP_PROT_READ), SVMAP_EINVAL);
    REFUSED(svmap_runtime_protect(rt, addr, 0, SVMAP_PROT_READ), SVMAP_EINVAL);
    REFUSED(svmap_runtime_protect(rt, addr, UINT64_MAX, SVMAP_PROT_READ), SVMAP_EINVAL);
    REFUSED(svmap_runtime_protect(rt, addr + 1, 0x1000, SVMAP_PROT_READ), SVMAP_EINVAL);
    REFUSED(svmap_runtime_protect(rt, addr, 0x1001, SVMAP_PROT_READ), SVMAP_EINVAL);
    REFUSED(svmap_runtime_protect(rt, 0x1000, 0x1000, SVMAP_PROT_READ), SVMAP_ENOMEM);
    REFUSED(svmap_runtime_protect(rt, addr, 0x1000, 3), SVMAP_EINVAL);
    REFUSED(svmap_runtime_protect(rt, addr, 0x1000, UINT32_MAX), SVMAP_EINVAL);
    for (int i = 0; i < 2; i++) CHECK(dev[i].calls[OP_PROTECT] == 0);
    *(volatile char *)addr = 2; /* still read-write */

    /* device_map: NULL handle and name, unknown device and policy, empty,
     * inverted, unaligned, past the limit, over a buffer. `r0` is free
     * room for both devices, found by the runtime's own search. */
    uint64_t r0;
    OK(svmap_runtime_alloc(rt, 0x1000, names, 2, &r0));
    OK(svmap_runtime_free(rt, r0));
    REFUSED(svmap_runtime_device_map(NULL, "a", r0, r0 + 0x1000, SVMAP_CPU_FAULT), SVMAP_EINVAL);
    REFUSED(svmap_runtime_device_map(rt, NULL, r0, r0 + 0x1000, SVMAP_CPU_FAULT), SVMAP_EINVAL);
    REFUSED(svmap_runtime_device_map(rt, "nope", r0, r0 + 0x1000, SVMAP_CPU_FAULT),
            SVMAP_ENOENT);
    REFUSED(svmap_runtime_device_map(rt, "a", r0, r0 + 0x1000, 2), SVMAP_EINVAL);
    REFUSED(svmap_runtime_device_map(rt, "a", r0, r0 + 0x1000, UINT32_MAX), SVMAP_EINVAL);
    REFUSED(svmap_runtime_device_map(rt, "a", r0, r0, SVMAP_CPU_FAULT), SVMAP_EINVAL);
    REFUSED(svmap_runtime_device_map(rt, "a", r0 + 0x1000, r0, SVMAP_CPU_FAULT), SVMAP_EINVAL);
    REFUSED(svmap_runtime_device_map(rt, "a", r0 + 1, r0 + 0x1000, SVMAP_CPU_FAULT),
            SVMAP_EINVAL);
    REFUSED(svmap_runtime_device_map(rt, "a", (1ull << 40) - 0x1000, (1ull << 40) + 0x1000,
                                     SVMAP_CPU_FAULT),
            SVMAP_EINVAL);
    REFUSED(svmap_runtime_device_map(rt, "a", UINT64_MAX - 0xfff, UINT64_MAX, SVMAP_CPU_FAULT),
            SVMAP_EINVAL);
    REFUSED(svmap_runtime_device_map(rt, "a", addr, addr + 0x1000, SVMAP_CPU_FAULT),
            SVMAP_EEXIST);
    for (int i = 0; i < 2; i++) CHECK(dev[i].calls[OP_REGION] == 0);

    /* buffer_fd: NULL handle and out-parameters; addresses of no range. */
    int fd = -7;
    uint64_t off = 7, len = 7;
    REFUSED(svmap_runtime_buffer_fd(NULL, addr, &fd, &off, &len), SVMAP_EINVAL);
    REFUSED(svmap_runtime_buffer_fd(rt, addr, NULL, &off, &len), SVMAP_EINVAL);
    REFUSED(svmap_runtime_buffer_fd(rt, addr, &fd, NULL, &len), SVMAP_EINVAL);
    REFUSED(svmap_runtime_buffer_fd(rt, addr, &fd, &off, NULL), SVMAP_EINVAL);
    REFUSED(svmap_runtime_buffer_fd(rt, 0, &fd, &off, &len), SVMAP_ENOENT);
    REFUSED(svmap_runtime_buffer_fd(rt, UINT64_MAX, &fd, &off, &len), SVMAP_ENOENT);
    CHECK(fd == -7 && off == 7 && len == 7);
    OK(svmap_runtime_buffer_fd(rt, addr + 0x3fff, &fd, &off, &len));
    CHECK(fd >= 0 && len >= 0x4000);
    OK(svmap_runtime_free(rt, addr));
    REFUSED(svmap_runtime_buffer_fd(rt, addr, &fd, &off, &len), SVMAP_ENOENT);

    /* reserve_window: NULL handle, NULL or unknown names. */
    REFUSED(svmap_runtime_reserve_window(NULL, names, 2), SVMAP_EINVAL);
    REFUSED(svmap_runtime_reserve_window(rt, NULL, 1), SVMAP_EINVAL);
    REFUSED(svmap_runtime_reserve_window(rt, unknown, 1), SVMAP_ENOENT);
    REFUSED(svmap_runtime_reserve_window(rt, names, SIZE_MAX), SVMAP_EINVAL);

    /* Callbacks that fail with garbage codes: the call fails with
     * SVMAP_EIO naming the code, what was done is undone, and nothing is
     * left mapped on any device. */
    int garbage[4] = {-1, 42, INT_MIN, INT_MAX};
    for (int g = 0; g < 4; g++) {
        int before_map = dev[0].calls[OP_MAP], before_unmap = dev[0].calls[OP_UNMAP];
        dev[1].rc[OP_MAP] = garbage[g];
        addr = 0xdead;
        REFUSED(svmap_runtime_alloc(rt, 0x2000, names, 2, &addr), SVMAP_EIO);
        char code[16];
        snprintf(code, sizeof code, "%d", garbage[g]);
        CHECK(strstr(svmap_last_error_message(), code) != NULL);
        CHECK(addr == 0xdead);
        /* Device a mapped it first, then had it invalidated and unmapped. */
        CHECK(dev[0].calls[OP_MAP] == before_map + 1);
        CHECK(dev[0].calls[OP_UNMAP] == before_unmap + 1);
        dev[1].rc[OP_MAP] = 0;
    }
    /* A failed protect callback and a failed region callback. */
    OK(svmap_runtime_alloc(rt, 0x2000, names, 2, &addr));
    dev[0].rc[OP_PROTECT] = -3;
    REFUSED(svmap_runtime_protect(rt, addr, 0x1000, SVMAP_PROT_READ), SVMAP_EIO);
    dev[0].rc[OP_PROTECT] = 0;
    dev[1].rc[OP_REGION] = 77;
    REFUSED(svmap_runtime_device_map(rt, "b", r0, r0 + 0x1000, SVMAP_CPU_DUMMY_PAGE), SVMAP_EIO);
    CHECK(strstr(svmap_last_error_message(), "77") != NULL);
    dev[1].rc[OP_REGION] = 0;
    /* An invalidation that is not acknowledged: the free fails, the
     * range stays allocated and is never handed out again; once the
     * device acknowledges, the free succeeds. */
    dev[1].rc[OP_INVALIDATE] = -1;
    REFUSED(svmap_runtime_free(rt, addr), SVMAP_EIO);
    REFUSED(svmap_runtime_free(rt, addr), SVMAP_EIO);
    for (int k = 0; k < 8; k++) {
        uint64_t b;
        OK(svmap_runtime_alloc(rt, 0x2000, names, 1, &b));
        CHECK(b + 0x2000 <= addr || addr + 0x2000 <= b);
        OK(svmap_runtime_free(rt, b));
    }
    dev[1].rc[OP_INVALIDATE] = 0;
    OK(svmap_runtime_free(rt, addr));
    REFUSED(svmap_runtime_free(rt, addr), SVMAP_EINVAL);

    /* A mapping made behind the runtime's back where its next allocation
     * would go: the allocation lands elsewhere, and the mapping is intact. */
    uint64_t next;
    OK(svmap_runtime_alloc(rt, 0x3000, names, 2, &next));
    OK(svmap_runtime_free(rt, next));
    void *foreign = mmap((void *)next, 0x3000, PROT_READ | PROT_WRITE,
                         MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
    CHECK(foreign == (void *)next);
    *(volatile uint64_t *)foreign = 0xf0f0;
    OK(svmap_runtime_alloc(rt, 0x3000, names, 2, &addr));
    CHECK(addr + 0x3000 <= next || next + 0x3000 <= addr);
    CHECK(*(volatile uint64_t *)foreign == 0xf0f0);
    OK(svmap_runtime_free(rt, addr));
    CHECK(munmap(foreign, 0x3000) == 0);

    /* A callback that calls the runtime: refused inside, the outer call
     * completes, and the runtime is still usable. */
    dev[0].reenter = rt;
    dev[0].reentered = SVMAP_OK;
    OK(svmap_runtime_alloc(rt, 0x1000, names, 1, &addr));
    CHECK(dev[0].reentered == SVMAP_EINVAL);
    OK(svmap_runtime_free(rt, addr));

    /* start: NULL arrays, counts that cannot be arrays, a misaligned
     * array, a NULL name, bad widths, duplicate names, no devices, a
     * window larger than the devices' common window. Each gives NULL
     * with a message, and nothing is called. */
#define START_REFUSED(call)                                                           \
    do {                                                                              \
        svmap_runtime_t *r_ = (call);                                                 \
        CHECK(r_ == NULL);                                                            \
        CHECK(svmap_last_error_message()[0] != '\0');                                 \
        svmap_runtime_delete(r_);                                                     \
    } while (0)
    svmap_device_config_t cfgs[3];
    OK(svmap_device_config_init(&cfgs[0], "s0", 40));
    OK(svmap_device_config_init(&cfgs[1], "s1", 44));
    cfgs[2] = cfgs[1];
    svmap_device_ops_t sops[3] = {ops[0], ops[1], ops[1]};
    int calls = 0;
    for (int i = 0; i < 2; i++)
        for (int op = 0; op < N_OPS; op++) calls += dev[i].calls[op];
    START_REFUSED(svmap_runtime_start(false, NULL, sops, 2, 0));
    START_REFUSED(svmap_runtime_start(false, cfgs, NULL, 2, 0));
    START_REFUSED(svmap_runtime_start(false, cfgs, sops, 0, 0));
    START_REFUSED(svmap_runtime_start(false, cfgs, sops, SIZE_MAX, 0));
    START_REFUSED(svmap_runtime_start(false, cfgs, sops, (SIZE_MAX >> 4) + 1, 0));
    /* More devices than a runtime can have: refused before the arrays are read. */
    START_REFUSED(svmap_runtime_start(false, cfgs, sops, 65, 0));
    START_REFUSED(svmap_runtime_start(false, cfgs, sops, (size_t)1 << 40, 0));
    START_REFUSED(svmap_runtime_start(
        false, (const svmap_device_config_t *)((const char *)cfgs + 1), sops, 2, 0));
    START_REFUSED(svmap_runtime_start(false, cfgs, sops, 3, 0));
    START_REFUSED(svmap_runtime_start(false, cfgs, sops, 2, UINT64_MAX));
    START_REFUSED(svmap_runtime_start(false, cfgs, sops, 2, 1ull << 40));
    cfgs[2].name = NULL;
    START_REFUSED(svmap_runtime_start(false, cfgs, sops, 3, 0));
    OK(svmap_device_config_init(&cfgs[2], "s2", 0));
    START_REFUSED(svmap_runtime_start(false, cfgs, sops, 3, 0));
    for (int i = 0; i < 2; i++)
        for (int op = 0; op < N_OPS; op++) calls -= dev[i].calls[op];
    CHECK(calls == 0);

    for (int i = 0; i < 2; i++) CHECK(dev[i].above_limit == 0);
    svmap_runtime_delete(rt);
    svmap_runtime_delete(NULL);
    printf("test_runtime_hostile: %d checks passed\n", checks);
    return 0;
}
