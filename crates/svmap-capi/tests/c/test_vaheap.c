/*
 * test_vaheap.c: the address heap (svmap_vaheap_*) used as a driver uses
 * Mesa's util_vma_heap for a GPU virtual address space: a heap given one
 * range, allocations of several alignments lowest and highest first,
 * frees that merge, a double free refused, exact allocations at an
 * address, ranges that must not cross a boundary, a seeded random churn
 * checked against a list of live ranges, and hostile arguments (NULLs,
 * misaligned pointers, inverted ranges, huge lengths, alignments and
 * boundaries that are not powers of two, bool bytes other than 0 and 1).
 * Run by tests/c_api.rs, linked statically and under valgrind. Exits 0
 * when every check passes.
 */
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "check.h"

#define START (1ull << 20) /* the heap's range: [1 MiB, 4 GiB) */
#define END (1ull << 32)
#define KIB 1024ull
#define MIB (1024ull * KIB)

static bool contains(const char *s, const char *part) { return strstr(s, part) != NULL; }

/* The call returned `want`, with a message exactly when it failed. */
static void status_is(svmap_status_t got, svmap_status_t want) {
    if (got != want) fprintf(stderr, "got %s, want %s\n", svmap_status_name((int)got),
                             svmap_status_name((int)want));
    CHECK(got == want);
    CHECK((svmap_last_error_message()[0] == '\0') == (want == SVMAP_OK));
}

static svmap_fit_request_t request(uint64_t length, uint64_t align, bool high) {
    svmap_fit_request_t r;
    memset(&r, 0, sizeof r);
    r.length = length;
    r.low = 0;
    r.high = UINT64_MAX;
    r.align = align;
    r.topdown = high;
    return r;
}

/* util_vma_heap_alloc: the address, or 0 when nothing fits (0 is never in
 * the heap). */
static uint64_t alloc(svmap_vaheap_t *h, uint64_t length, uint64_t align, bool high) {
    svmap_fit_request_t r = request(length, align, high);
    uint64_t a = 0;
    svmap_status_t st = svmap_vaheap_alloc(h, &r, &a);
    if (st == SVMAP_ENOMEM) return 0;
    status_is(st, SVMAP_OK);
    CHECK(a != 0);
    return a;
}

/* The heap's holes, at most `cap` of them, into `out`; returns the count. */
static size_t holes(const svmap_vaheap_t *h, svmap_vaheap_hole_t *out, size_t cap) {
    size_t n = 0;
    status_is(svmap_vaheap_holes(h, out, cap, &n), SVMAP_OK);
    CHECK(n == svmap_vaheap_hole_count(h));
    return n;
}

static void check_one_hole(const svmap_vaheap_t *h, uint64_t s, uint64_t e) {
    svmap_vaheap_hole_t v[2];
    CHECK(holes(h, v, 2) == 1);
    CHECK(v[0].start == s && v[0].end == e);
    CHECK(svmap_vaheap_free_bytes(h) == e - s);
}

static void test_mesa_style(void) {
    svmap_vaheap_t *h = svmap_vaheap_new();
    CHECK(h != NULL);
    CHECK(svmap_vaheap_hole_count(h) == 0 && svmap_vaheap_free_bytes(h) == 0);
    CHECK(alloc(h, 4 * KIB, 4 * KIB, false) == 0); /* nothing to give yet */

    /* util_vma_heap_init(heap, START, END - START) */
    status_is(svmap_vaheap_dealloc(h, START, END), SVMAP_OK);
    check_one_hole(h, START, END);

    /* Lowest first: each the lowest start of its alignment above the last. */
    uint64_t a = alloc(h, 4 * KIB, 4 * KIB, false);
    uint64_t b = alloc(h, 12 * KIB, 64 * KIB, false);
    uint64_t c = alloc(h, 3 * MIB, 2 * MIB, false);
    uint64_t d = alloc(h, 8 * KIB, 4 * KIB, false);
    CHECK(a == START);
    CHECK(b == START + 64 * KIB);     /* first 64 KiB multiple above a */
    CHECK(c == 2 * MIB);              /* first 2 MiB multiple above b */
    CHECK(d == START + 4 * KIB);      /* back into the room below b */
    /* Highest first (Mesa's default): the highest aligned start that ends by END. */
    uint64_t e = alloc(h, 4 * KIB, 4 * KIB, true);
    uint64_t f = alloc(h, 1 * MIB, 1 * MIB, true);
    uint64_t g = alloc(h, 20 * KIB, 64 * KIB, true);
    CHECK(e == END - 4 * KIB);
    CHECK(f == END - 2 * MIB);        /* END - 1 MiB holds e */
    CHECK(g == END - 64 * KIB);       /* above f: [END - 1 MiB, e) holds it */
    uint64_t taken = 4 * KIB + 12 * KIB + 3 * MIB + 8 * KIB + 4 * KIB + 1 * MIB + 20 * KIB;
    CHECK(svmap_vaheap_free_bytes(h) == END - START - taken);

    svmap_vaheap_hole_t v[8];
    size_t n = holes(h, v, 8);
    CHECK(n == 5);
    CHECK(v[0].start == d + 8 * KIB && v[0].end == b);
    CHECK(v[1].start == b + 12 * KIB && v[1].end == c);
    CHECK(v[2].start == c + 3 * MIB && v[2].end == f);
    CHECK(v[3].start == f + 1 * MIB && v[3].end == g);
    CHECK(v[4].start == g + 20 * KIB && v[4].end == e);
    /* A short array: the lowest holes, and the whole count. */
    svmap_vaheap_hole_t two[2];
    size_t all = 0;
    status_is(svmap_vaheap_holes(h, two, 2, &all), SVMAP_OK);
    CHECK(all == 5 && two[1].start == v[1].start && two[1].end == v[1].end);
    status_is(svmap_vaheap_holes(h, NULL, 0, &all), SVMAP_OK);
    CHECK(all == 5);

    /* util_vma_heap_free; a double free is refused and changes nothing. */
    status_is(svmap_vaheap_dealloc(h, b, b + 12 * KIB), SVMAP_OK);
    CHECK(svmap_vaheap_hole_count(h) == 4); /* merged on both sides */
    status_is(svmap_vaheap_dealloc(h, b, b + 12 * KIB), SVMAP_EINVAL);
    CHECK(contains(svmap_last_error_message(), "free hole"));
    status_is(svmap_vaheap_dealloc(h, d, d + 16 * KIB), SVMAP_EINVAL); /* d, and free space */
    CHECK(svmap_vaheap_hole_count(h) == 4);
    CHECK(svmap_vaheap_free_bytes(h) == END - START - taken + 12 * KIB);

    /* util_vma_heap_alloc_addr: exactly there, or refused. */
    status_is(svmap_vaheap_alloc_at(h, b, b + 4 * KIB), SVMAP_OK);
    status_is(svmap_vaheap_alloc_at(h, b, b + 4 * KIB), SVMAP_EEXIST);
    status_is(svmap_vaheap_alloc_at(h, c + MIB, c + 4 * MIB), SVMAP_EEXIST); /* inside c, past it */
    status_is(svmap_vaheap_alloc_at(h, 0, START), SVMAP_EEXIST);            /* never given */
    status_is(svmap_vaheap_alloc_at(h, b + 8 * KIB, b + 8 * KIB), SVMAP_EINVAL);
    status_is(svmap_vaheap_dealloc(h, b, b + 4 * KIB), SVMAP_OK);

    /* Give everything back, in pieces and out of order: one hole again. */
    status_is(svmap_vaheap_dealloc(h, g, g + 20 * KIB), SVMAP_OK);
    status_is(svmap_vaheap_dealloc(h, c, c + MIB), SVMAP_OK); /* part of c ... */
    status_is(svmap_vaheap_dealloc(h, c + MIB, c + 3 * MIB), SVMAP_OK); /* ... the rest */
    status_is(svmap_vaheap_dealloc(h, a, a + 12 * KIB), SVMAP_OK); /* a and d at once */
    status_is(svmap_vaheap_dealloc(h, f, f + MIB), SVMAP_OK);
    status_is(svmap_vaheap_dealloc(h, e, e + 4 * KIB), SVMAP_OK);
    check_one_hole(h, START, END);

    /* Mesa's nospan_minimum: a range may not cross a multiple of the boundary. */
    status_is(svmap_vaheap_alloc_at(h, START, 2 * MIB - 4 * KIB), SVMAP_OK);
    svmap_fit_request_t r = request(8 * KIB, 4 * KIB, false);
    uint64_t x = 0;
    status_is(svmap_vaheap_find_fit(h, &r, &x), SVMAP_OK);
    CHECK(x == 2 * MIB - 4 * KIB); /* crosses 2 MiB */
    status_is(svmap_vaheap_alloc_nocross(h, &r, 2 * MIB, &x), SVMAP_OK);
    CHECK(x == 2 * MIB);
    r.topdown = true;
    status_is(svmap_vaheap_find_fit_nocross(h, &r, 0, &x), SVMAP_OK);
    CHECK(x == END - 8 * KIB);
    x = 7;
    status_is(svmap_vaheap_alloc_nocross(h, &r, 3 * MIB, &x), SVMAP_EINVAL); /* not 2^k */
    status_is(svmap_vaheap_alloc_nocross(h, &r, 4 * KIB, &x), SVMAP_EINVAL); /* too short */
    CHECK(x == 7);
    status_is(svmap_vaheap_clear(h), SVMAP_OK);
    CHECK(svmap_vaheap_hole_count(h) == 0 && svmap_vaheap_free_bytes(h) == 0);
    svmap_vaheap_delete(h);
}

/* The seeded random churn of Mesa's vma test: allocations of random sizes,
 * alignments and directions and random frees, checked against a list of
 * live ranges after every step; at the end everything comes back as one hole. */
#define MAX_LIVE 200
static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint64_t next(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static void test_churn(void) {
    const uint64_t lo = 0x10000, hi = lo + 64 * MIB;
    svmap_vaheap_t *h = svmap_vaheap_new();
    CHECK(h != NULL);
    status_is(svmap_vaheap_dealloc(h, lo, hi), SVMAP_OK);
    uint64_t live_s[MAX_LIVE], live_e[MAX_LIVE];
    int live = 0, failed = 0, done = 0;
    uint64_t used = 0;
    for (int step = 0; step < 4000; step++) {
        if (live == MAX_LIVE || (live > 0 && next() % 3 == 0)) {
            int i = (int)(next() % (uint64_t)live);
            status_is(svmap_vaheap_dealloc(h, live_s[i], live_e[i]), SVMAP_OK);
            used -= live_e[i] - live_s[i];
            live--;
            live_s[i] = live_s[live];
            live_e[i] = live_e[live];
        } else {
            uint64_t len = (1 + next() % 256) * 4 * KIB;
            uint64_t align = 1ull << (12 + next() % 10); /* 4 KiB to 2 MiB */
            bool high = next() % 2;
            uint64_t a = alloc(h, len, align, high);
            if (a == 0) {
                failed++;
                continue;
            }
            CHECK(a % align == 0 && a >= lo && a + len <= hi);
            for (int i = 0; i < live; i++) CHECK(a + len <= live_s[i] || a >= live_e[i]);
            live_s[live] = a;
            live_e[live] = a + len;
            live++;
            used += len;
            done++;
        }
        CHECK(svmap_vaheap_free_bytes(h) == hi - lo - used);
    }
    CHECK(done > 1000);
    for (int i = 0; i < live; i++) status_is(svmap_vaheap_dealloc(h, live_s[i], live_e[i]), SVMAP_OK);
    check_one_hole(h, lo, hi);
    printf("churn: %d allocations, %d found no room, %d live at the end\n", done, failed, live);
    svmap_vaheap_delete(h);
}

static void test_hostile(void) {
    svmap_vaheap_t *h = svmap_vaheap_new();
    CHECK(h != NULL);
    status_is(svmap_vaheap_dealloc(h, START, END), SVMAP_OK);
    svmap_fit_request_t r = request(4 * KIB, 4 * KIB, false);
    uint64_t x = 7;
    size_t n = 9;
    svmap_vaheap_hole_t v[1];

    /* NULL handle: every call refused; the counts are 0. */
    status_is(svmap_vaheap_dealloc(NULL, 0, 4096), SVMAP_EINVAL);
    status_is(svmap_vaheap_alloc_at(NULL, START, START + 4096), SVMAP_EINVAL);
    status_is(svmap_vaheap_alloc(NULL, &r, &x), SVMAP_EINVAL);
    status_is(svmap_vaheap_alloc_nocross(NULL, &r, 0, &x), SVMAP_EINVAL);
    status_is(svmap_vaheap_find_fit(NULL, &r, &x), SVMAP_EINVAL);
    status_is(svmap_vaheap_find_fit_nocross(NULL, &r, 0, &x), SVMAP_EINVAL);
    status_is(svmap_vaheap_holes(NULL, v, 1, &n), SVMAP_EINVAL);
    status_is(svmap_vaheap_clear(NULL), SVMAP_EINVAL);
    CHECK(svmap_vaheap_hole_count(NULL) == 0 && svmap_vaheap_free_bytes(NULL) == 0);
    CHECK(contains(svmap_last_error_message(), "heap is NULL"));
    svmap_vaheap_delete(NULL);
    CHECK(x == 7 && n == 9);

    /* NULL and misaligned request and out-parameters: nothing read or written. */
    status_is(svmap_vaheap_alloc(h, NULL, &x), SVMAP_EINVAL);
    status_is(svmap_vaheap_alloc(h, &r, NULL), SVMAP_EINVAL);
    uint64_t words[8] = {0};
    uint64_t *mis = (uint64_t *)((char *)words + 1);
    const svmap_fit_request_t *mis_req = (const svmap_fit_request_t *)((char *)words + 4);
    status_is(svmap_vaheap_alloc(h, &r, mis), SVMAP_EINVAL);
    CHECK(contains(svmap_last_error_message(), "not aligned"));
    status_is(svmap_vaheap_find_fit(h, mis_req, &x), SVMAP_EINVAL);
    status_is(svmap_vaheap_holes(h, (svmap_vaheap_hole_t *)mis, 1, &n), SVMAP_EINVAL);
    status_is(svmap_vaheap_holes(h, v, 1, (size_t *)mis), SVMAP_EINVAL);
    status_is(svmap_vaheap_holes(h, NULL, 1, &n), SVMAP_EINVAL);
    status_is(svmap_vaheap_holes(h, v, SIZE_MAX, &n), SVMAP_EINVAL);
    for (int i = 0; i < 8; i++) CHECK(words[i] == 0);
    CHECK(x == 7 && n == 9);

    /* Inverted and empty ranges; a range past the last byte that can be free. */
    status_is(svmap_vaheap_dealloc(h, END + 4096, END), SVMAP_EINVAL);
    CHECK(contains(svmap_last_error_message(), "inverted"));
    status_is(svmap_vaheap_dealloc(h, END, END), SVMAP_EINVAL);
    status_is(svmap_vaheap_alloc_at(h, START + 4096, START), SVMAP_EINVAL);
    status_is(svmap_vaheap_dealloc(h, END, UINT64_MAX), SVMAP_OK);
    status_is(svmap_vaheap_dealloc(h, 0, UINT64_MAX), SVMAP_EINVAL); /* meets free space */
    check_one_hole(h, START, UINT64_MAX);

    /* Hostile requests. */
    svmap_fit_request_t bad = r;
    bad.length = 0;
    status_is(svmap_vaheap_alloc(h, &bad, &x), SVMAP_EINVAL);
    bad = r;
    bad.align = 3 * 4096;
    status_is(svmap_vaheap_alloc(h, &bad, &x), SVMAP_EINVAL);
    bad.align = 0;
    status_is(svmap_vaheap_find_fit(h, &bad, &x), SVMAP_EINVAL);
    bad = r;
    bad.low = 2 * MIB;
    bad.high = MIB;
    status_is(svmap_vaheap_alloc(h, &bad, &x), SVMAP_EINVAL);
    CHECK(contains(svmap_last_error_message(), "inverted window"));
    bad = r;
    bad.length = UINT64_MAX;
    status_is(svmap_vaheap_alloc(h, &bad, &x), SVMAP_ENOMEM);
    status_is(svmap_vaheap_alloc_nocross(h, &bad, 1ull << 63, &x), SVMAP_EINVAL);
    bad.length = UINT64_MAX - START + 1; /* one byte more than is free */
    bad.topdown = true;
    status_is(svmap_vaheap_alloc(h, &bad, &x), SVMAP_ENOMEM);
    bad.align = 1ull << 63;
    bad.length = 4096;
    status_is(svmap_vaheap_find_fit(h, &bad, &x), SVMAP_OK);
    CHECK(x == 1ull << 63);
    x = 7;
    unsigned char two = 2;
    bad = r;
    memcpy(&bad.topdown, &two, 1);
    status_is(svmap_vaheap_alloc(h, &bad, &x), SVMAP_EINVAL);
    CHECK(contains(svmap_last_error_message(), "req->topdown is 2"));
    bad = r;
    memcpy(&bad.respect_guard_gaps, &two, 1);
    status_is(svmap_vaheap_find_fit(h, &bad, &x), SVMAP_EINVAL);
    status_is(svmap_vaheap_find_fit_nocross(h, &r, 5, &x), SVMAP_EINVAL);
    CHECK(x == 7);
    check_one_hole(h, START, UINT64_MAX);

    /* The whole heap in one allocation, highest first. */
    bad = r;
    bad.length = UINT64_MAX - START;
    bad.topdown = true;
    status_is(svmap_vaheap_alloc(h, &bad, &x), SVMAP_OK);
    CHECK(x == START && svmap_vaheap_hole_count(h) == 0);
    svmap_vaheap_delete(h);
}

int main(void) {
    test_mesa_style();
    test_churn();
    test_hostile();
    printf("test_vaheap: %d checks passed\n", checks);
    return 0;
}
