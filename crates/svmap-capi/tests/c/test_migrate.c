/*
 * test_migrate.c: range attributes and prefetch of the C runtime with two
 * devices whose callbacks record every invalidation and migration in one
 * log. Checks: a granule moving to a device is invalidated on the other
 * device before the target's migrate callback takes it; callbacks come in
 * whole granules of the range's granularity (aligned, clipped to the range);
 * granules held by another device come back first; attribute lists with a
 * bad entry are refused and change nothing.
 */
#include <stdint.h>
#include <string.h>

#include "check.h"

#define PG 4096ull
#define MIB2 (2ull << 20)
#define MAX_LOG 4096

struct event {
    int dev;  /* 0 or 1 */
    char op;  /* 'I' invalidate, 'M' migrate */
    int to_device;
    uint64_t start, end;
};

static struct event log_[MAX_LOG];
static int n_log;
static int fail_migrate[2];
static int devs[2] = {0, 1};

static void record(int dev, char op, int to, uint64_t s, uint64_t e) {
    CHECK(n_log < MAX_LOG);
    log_[n_log++] = (struct event){dev, op, to, s, e};
}

static int ok_range(void *u, uint64_t s, uint64_t e) {
    (void)u;
    (void)s;
    (void)e;
    return 0;
}

static int rec_invalidate(void *u, uint64_t s, uint64_t e) {
    record(*(int *)u, 'I', 0, s, e);
    return 0;
}

static int rec_migrate(void *u, uint64_t s, uint64_t e, int to_device) {
    int d = *(int *)u;
    if (fail_migrate[d]) return 7;
    record(d, 'M', to_device, s, e);
    return 0;
}

static uint64_t get1(svmap_runtime_t *rt, uint64_t a, uint64_t len, uint32_t type, uint64_t v) {
    svmap_attr_t at = {.type_ = type, .value = v};
    CHECK(svmap_runtime_get_attr(rt, a, len, &at, 1) == SVMAP_OK);
    return at.value;
}

static uint64_t location(svmap_runtime_t *rt, uint64_t a) {
    uint64_t loc = 99;
    CHECK(svmap_runtime_location(rt, a, &loc) == SVMAP_OK);
    return loc;
}

/* Every migration to a device in log_[from..] is a granule of `gran`
 * bytes' alignment inside [lo, hi), and the other device invalidated the
 * same granule after the previous migration and before it. */
static int check_moves_to(int from, int dev, uint64_t lo, uint64_t hi, uint64_t gran) {
    int moves = 0, last = from - 1;
    for (int i = from; i < n_log; i++) {
        struct event *m = &log_[i];
        if (m->op != 'M' || m->to_device != 1) continue;
        CHECK(m->dev == dev);
        CHECK(m->start < m->end && m->start >= lo && m->end <= hi);
        CHECK(m->start % gran == 0 || m->start == lo);
        CHECK(m->end % gran == 0 || m->end == hi);
        CHECK((m->start & ~(gran - 1)) == ((m->end - 1) & ~(gran - 1)));
        int invalidated = 0;
        for (int j = last + 1; j < i; j++)
            if (log_[j].op == 'I' && log_[j].dev == 1 - dev && log_[j].start == m->start &&
                log_[j].end == m->end)
                invalidated = 1;
        CHECK(invalidated);
        last = i;
        moves++;
    }
    return moves;
}

int main(void) {
    svmap_runtime_t *rt = svmap_runtime_new(false);
    CHECK(rt != NULL);
    const char *names[2] = {"gpu40", "gpu44"};
    for (int i = 0; i < 2; i++) {
        svmap_device_config_t cfg;
        CHECK(svmap_device_config_init(&cfg, names[i], i == 0 ? 40 : 44) == SVMAP_OK);
        svmap_device_ops_t ops = {
            .user = &devs[i],
            .map = ok_range,
            .invalidate = rec_invalidate,
            .unmap = ok_range,
            .map_region = ok_range,
        };
        CHECK(svmap_runtime_add_device(rt, &cfg, &ops) == SVMAP_OK);
        CHECK(svmap_runtime_set_migrate(rt, names[i], rec_migrate, &devs[i]) == SVMAP_OK);
    }
    CHECK(svmap_runtime_set_migrate(rt, "nope", rec_migrate, NULL) != SVMAP_OK);

    uint64_t len = 3 * MIB2, a = 0;
    CHECK(svmap_runtime_alloc(rt, len, names, 2, &a) == SVMAP_OK);
    CHECK(location(rt, a) == SVMAP_LOCATION_SYSTEM);

    /* 4 KiB granules on the first 8 pages; the rest keeps 2 MiB. */
    svmap_attr_t set[2] = {
        {.type_ = SVMAP_ATTR_GRANULARITY, .value = 0},
        {.type_ = SVMAP_ATTR_SET_FLAGS, .value = SVMAP_FLAG_ALWAYS_MAPPED},
    };
    CHECK(svmap_runtime_set_attr(rt, a, 8 * PG, set, 2) == SVMAP_OK);
    CHECK(get1(rt, a, 8 * PG, SVMAP_ATTR_GRANULARITY, 0) == 0);
    CHECK(get1(rt, a, len, SVMAP_ATTR_GRANULARITY, 0) == 0);
    CHECK(get1(rt, a + 8 * PG, PG, SVMAP_ATTR_GRANULARITY, 0) == 9);
    CHECK(get1(rt, a, 8 * PG, SVMAP_ATTR_SET_FLAGS, 0) == SVMAP_FLAG_ALWAYS_MAPPED);
    CHECK(get1(rt, a, 9 * PG, SVMAP_ATTR_SET_FLAGS, 0) == 0);

    /* Prefetch three 4 KiB pages to gpu44: three granules, each
     * invalidated on gpu40 first. */
    int from = n_log;
    CHECK(svmap_runtime_prefetch(rt, a, 3 * PG, 2) == SVMAP_OK);
    CHECK(check_moves_to(from, 1, a, a + 8 * PG, PG) == 3);
    CHECK(location(rt, a + 2 * PG) == 2 && location(rt, a + 3 * PG) == SVMAP_LOCATION_SYSTEM);

    /* Now to gpu40 over five pages: gpu44 gives its three back first (to
     * system), then five moves to gpu40, each after gpu44 invalidated it. */
    from = n_log;
    CHECK(svmap_runtime_prefetch(rt, a, 5 * PG, 1) == SVMAP_OK);
    int backs = 0;
    for (int i = from; i < n_log; i++)
        if (log_[i].op == 'M' && log_[i].to_device == 0) {
            CHECK(log_[i].dev == 1 && log_[i].end - log_[i].start == PG);
            backs++;
        }
    CHECK(backs == 3);
    CHECK(check_moves_to(from, 0, a, a + 8 * PG, PG) == 5);
    CHECK(location(rt, a + 4 * PG) == 1);

    /* 2 MiB granules, clipped to the range: a prefetch of one page past the
     * small granules moves its whole 2 MiB-aligned granule (which may hold
     * the small ones too: those on gpu40 come back first). */
    from = n_log;
    CHECK(svmap_runtime_prefetch(rt, a + 9 * PG, PG, 2) == SVMAP_OK);
    CHECK(check_moves_to(from, 1, a, a + len, MIB2) == 1);
    struct event *big = &log_[n_log - 1];
    CHECK(big->start <= a + 9 * PG && a + 9 * PG < big->end);
    CHECK(big->end - big->start > PG);

    /* A prefetch location among the attributes migrates at once. */
    from = n_log;
    svmap_attr_t pf = {.type_ = SVMAP_ATTR_PREFETCH_LOCATION, .value = SVMAP_LOCATION_SYSTEM};
    CHECK(svmap_runtime_set_attr(rt, a, len, &pf, 1) == SVMAP_OK);
    for (uint64_t p = 0; p < len; p += PG) CHECK(location(rt, a + p) == SVMAP_LOCATION_SYSTEM);
    CHECK(n_log > from);
    for (int i = from; i < n_log; i++) CHECK(log_[i].op == 'M' && log_[i].to_device == 0);

    /* Bad attribute lists: refused, nothing changes. */
    svmap_attr_t bad_type[2] = {{.type_ = SVMAP_ATTR_GRANULARITY, .value = 3}, {.type_ = 99}};
    CHECK(svmap_runtime_set_attr(rt, a, PG, bad_type, 2) == SVMAP_EINVAL);
    svmap_attr_t bad_gran = {.type_ = SVMAP_ATTR_GRANULARITY, .value = 10};
    CHECK(svmap_runtime_set_attr(rt, a, PG, &bad_gran, 1) == SVMAP_EINVAL);
    svmap_attr_t bad_flag = {.type_ = SVMAP_ATTR_SET_FLAGS, .value = 8};
    CHECK(svmap_runtime_set_attr(rt, a, PG, &bad_flag, 1) == SVMAP_EINVAL);
    svmap_attr_t bad_dev = {.type_ = SVMAP_ATTR_ACCESS, .value = (7ull << 32) | SVMAP_ACCESS_NONE};
    CHECK(svmap_runtime_set_attr(rt, a, PG, &bad_dev, 1) == SVMAP_EINVAL);
    svmap_attr_t bad_code = {.type_ = SVMAP_ATTR_ACCESS, .value = 3};
    CHECK(svmap_runtime_set_attr(rt, a, PG, &bad_code, 1) == SVMAP_EINVAL);
    CHECK(svmap_runtime_set_attr(rt, a, PG, NULL, 1) == SVMAP_EINVAL);
    CHECK(svmap_runtime_set_attr(rt, a, PG, NULL, 0) == SVMAP_OK);
    CHECK(get1(rt, a, PG, SVMAP_ATTR_GRANULARITY, 0) == 0);
    CHECK(get1(rt, a, PG, SVMAP_ATTR_SET_FLAGS, 0) == SVMAP_FLAG_ALWAYS_MAPPED);
    svmap_attr_t get_bad = {.type_ = 42};
    CHECK(svmap_runtime_get_attr(rt, a, PG, &get_bad, 1) == SVMAP_EINVAL);
    CHECK(svmap_runtime_set_attr(rt, a + 1, PG, set, 1) == SVMAP_EINVAL);
    CHECK(svmap_runtime_set_attr(rt, PG, PG, set, 1) == SVMAP_ENOENT);

    /* Access none refuses a prefetch there without a callback; an unknown
     * device is EINVAL; a failing callback is EIO. */
    svmap_attr_t none = {.type_ = SVMAP_ATTR_ACCESS, .value = (1ull << 32) | SVMAP_ACCESS_NONE};
    CHECK(svmap_runtime_set_attr(rt, a, PG, &none, 1) == SVMAP_OK);
    CHECK(get1(rt, a, PG, SVMAP_ATTR_ACCESS, 1ull << 32) == ((1ull << 32) | SVMAP_ACCESS_NONE));
    from = n_log;
    CHECK(svmap_runtime_prefetch(rt, a, PG, 2) == SVMAP_EPERM);
    CHECK(svmap_runtime_prefetch(rt, a, PG, 5) == SVMAP_EINVAL);
    CHECK(n_log == from);
    fail_migrate[0] = 1;
    CHECK(svmap_runtime_prefetch(rt, a, PG, 1) == SVMAP_EIO);
    fail_migrate[0] = 0;
    CHECK(location(rt, a) == SVMAP_LOCATION_SYSTEM);

    CHECK(svmap_runtime_free(rt, a) == SVMAP_OK);
    CHECK(svmap_runtime_prefetch(rt, a, PG, 1) == SVMAP_ENOENT);
    svmap_runtime_delete(rt);
    printf("%d checks passed\n", checks);
    return 0;
}
