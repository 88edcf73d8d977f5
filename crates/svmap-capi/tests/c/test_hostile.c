/*
 * test_hostile.c: hostile inputs at the C ABI. Every call below breaks a
 * rule the header states in a way the library can see (NULL everywhere,
 * lengths and counts that overflow, unknown enum values, bool fields that
 * hold neither 0 nor 1, misaligned out-parameters, closed or read-only
 * descriptors, freeing a buffer twice through the API, inverted ranges, a
 * pipe whose reader has gone, a peer that would start itself without end)
 * and must come back as a clean error with a message, never a crash. Run
 * by tests/c_api.rs, linked statically and under valgrind. Exits 0 when
 * every check passes.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "svmap.h"
#include "check.h"


/* A call that must fail with `want` and leave a non-empty message. */
#define REFUSED(call, want)                                                            \
    do {                                                                               \
        svmap_status_t got_ = (call);                                                  \
        checks++;                                                                      \
        if (got_ != (want) || svmap_last_error_message()[0] == '\0') {                 \
            fprintf(stderr, "%s:%d: %s\n  returned %s, wanted %s\n  last error: \"%s\"\n", \
                    __FILE__, __LINE__, #call, svmap_status_name((int)got_),           \
                    svmap_status_name((int)(want)), svmap_last_error_message());       \
            exit(1);                                                                   \
        }                                                                              \
    } while (0)

#define OK(call) CHECK((call) == SVMAP_OK && svmap_last_error_message()[0] == '\0')

static int contains(const char *s, const char *needle) { return strstr(s, needle) != NULL; }

/* Stores `v` into a bool field byte by byte, as code in another language or
 * a memset would (C itself never stores such a value through a bool). */
static void poke_bool(bool *field, unsigned char v) { memcpy(field, &v, 1); }

static void test_null_everywhere(void) {
    uint64_t u = 0;
    void *p = NULL;
    int fd = 0;
    svmap_replay_summary_t sum;

    REFUSED(svmap_space_config_default(NULL), SVMAP_EINVAL);
    REFUSED(svmap_space_map(NULL, 0, 0, 0), SVMAP_EINVAL);
    REFUSED(svmap_space_unmap(NULL, 0, 0), SVMAP_EINVAL);
    REFUSED(svmap_space_unmapped_area(NULL, NULL, NULL), SVMAP_EINVAL);
    REFUSED(svmap_space_find_fit(NULL, NULL, NULL), SVMAP_EINVAL);
    REFUSED(svmap_space_allocate(NULL, NULL, NULL), SVMAP_EINVAL);
    REFUSED(svmap_space_find_fit_nocross(NULL, NULL, 0, NULL), SVMAP_EINVAL);
    REFUSED(svmap_space_allocate_nocross(NULL, NULL, 0, NULL), SVMAP_EINVAL);
    REFUSED(svmap_space_mmap(NULL, NULL, NULL), SVMAP_EINVAL);
    REFUSED(svmap_space_munmap(NULL, 0, 0), SVMAP_EINVAL);
    REFUSED(svmap_space_find_vma(NULL, 0, NULL), SVMAP_EINVAL);
    CHECK(svmap_space_vma_count(NULL) == 0);

    REFUSED(svmap_device_config_init(NULL, NULL, 0), SVMAP_EINVAL);
    REFUSED(svmap_svm_add_device(NULL, NULL), SVMAP_EINVAL);
    REFUSED(svmap_svm_device_map(NULL, NULL, 0, 0, 0), SVMAP_EINVAL);
    REFUSED(svmap_svm_alloc(NULL, 0, 0, NULL, 0, false, NULL), SVMAP_EINVAL);
    REFUSED(svmap_svm_dealloc(NULL, 0), SVMAP_EINVAL);
    REFUSED(svmap_svm_protect(NULL, 0, 0, 0), SVMAP_EINVAL);
    REFUSED(svmap_svm_device_access(NULL, NULL, 0, false), SVMAP_EINVAL);
    REFUSED(svmap_svm_cpu_map(NULL, 0, 0, false), SVMAP_EINVAL);
    REFUSED(svmap_svm_cpu_unmap(NULL, 0, 0), SVMAP_EINVAL);
    REFUSED(svmap_svm_cpu_mmap(NULL, NULL, NULL), SVMAP_EINVAL);
    REFUSED(svmap_svm_find(NULL, NULL, NULL), SVMAP_EINVAL);
    REFUSED(svmap_svm_check_addressable(NULL, NULL, 0, 0), SVMAP_EINVAL);

    REFUSED(svmap_heap_alloc(NULL, 4096, 0, &p), SVMAP_EINVAL);
    REFUSED(svmap_heap_alloc(NULL, 4096, 0, NULL), SVMAP_EINVAL);
    REFUSED(svmap_heap_dealloc(NULL, NULL), SVMAP_EINVAL);
    REFUSED(svmap_heap_memfd(NULL, NULL, &fd), SVMAP_EINVAL);
    REFUSED(svmap_heap_memfd(NULL, NULL, NULL), SVMAP_EINVAL);

    REFUSED(svmap_peer_window(NULL, NULL, NULL), SVMAP_EINVAL);
    REFUSED(svmap_peer_alloc(NULL, 4096, false, NULL), SVMAP_EINVAL);
    REFUSED(svmap_peer_dealloc(NULL, NULL), SVMAP_EINVAL);
    REFUSED(svmap_peer_walk_list(NULL, NULL, 0, NULL, NULL), SVMAP_EINVAL);
    REFUSED(svmap_peer_sum_u64(NULL, NULL, 0, NULL), SVMAP_EINVAL);
    REFUSED(svmap_peer_walk_list(NULL, NULL, 0, &u, &u), SVMAP_EINVAL);

    REFUSED(svmap_replay_file(NULL, false, -1, -1, NULL), SVMAP_EINVAL);
    REFUSED(svmap_replay_file(NULL, false, -1, -1, &sum), SVMAP_EINVAL);
    REFUSED(svmap_replay_buffer(NULL, 1, false, -1, -1, &sum), SVMAP_EINVAL);

    /* Frees and getters accept NULL. */
    svmap_space_delete(NULL);
    svmap_svm_delete(NULL);
    svmap_reservation_delete(NULL);
    svmap_heap_delete(NULL);
    svmap_peer_delete(NULL);
    CHECK(svmap_heap_new_in(NULL) == NULL);
    CHECK(svmap_reservation_addr(NULL) == 0 && svmap_heap_len(NULL) == 0);
    CHECK(svmap_peer_pid(NULL) == 0);
}

static void test_bad_enums_and_bools(void) {
    svmap_space_config_t cfg;
    OK(svmap_space_config_default(&cfg));
    cfg.layout = 0xffffffffu;
    CHECK(svmap_space_new(&cfg) == NULL);
    CHECK(contains(svmap_last_error_message(), "layout"));
    cfg.layout = SVMAP_LAYOUT_TOPDOWN;
    poke_bool(&cfg.thp_align, 0xff);
    CHECK(svmap_space_new(&cfg) == NULL);
    CHECK(contains(svmap_last_error_message(), "thp_align"));
    CHECK(svmap_svm_new(&cfg) == NULL);
    cfg.thp_align = true;

    svmap_space_t *s = svmap_space_new(&cfg);
    CHECK(s != NULL);
    REFUSED(svmap_space_map(s, 0x10000, 0x20000, 0x80000000u), SVMAP_EINVAL);
    REFUSED(svmap_space_map(s, 0x20000, 0x10000, 0), SVMAP_EINVAL); /* end < start */
    REFUSED(svmap_space_unmap(s, UINT64_MAX, 0), SVMAP_EINVAL);

    uint64_t addr = 0;
    svmap_mmap_request_t req;
    memset(&req, 0, sizeof req);
    req.length = 4096;
    req.fixed = 3;
    REFUSED(svmap_space_mmap(s, &req, &addr), SVMAP_EINVAL);
    req.fixed = SVMAP_MAP_HINT;
    poke_bool(&req.growsdown, 2);
    REFUSED(svmap_space_mmap(s, &req, &addr), SVMAP_EINVAL);
    CHECK(contains(svmap_last_error_message(), "growsdown"));
    req.growsdown = false;
    poke_bool(&req.map32bit, 0x80);
    REFUSED(svmap_space_mmap(s, &req, &addr), SVMAP_EINVAL);
    req.map32bit = false;
    req.length = UINT64_MAX; /* rounds up past 2^64 */
    CHECK(svmap_space_mmap(s, &req, &addr) != SVMAP_OK);
    req.length = 4096;
    req.hint = UINT64_MAX - 4095;
    req.fixed = SVMAP_MAP_FIXED;
    CHECK(svmap_space_mmap(s, &req, &addr) != SVMAP_OK);
    REFUSED(svmap_space_munmap(s, UINT64_MAX & ~4095ull, UINT64_MAX), SVMAP_EINVAL);

    svmap_fit_request_t fit;
    memset(&fit, 0, sizeof fit);
    fit.length = 4096;
    fit.align = 1;
    fit.high = UINT64_MAX;
    poke_bool(&fit.topdown, 7);
    REFUSED(svmap_space_find_fit(s, &fit, &addr), SVMAP_EINVAL);
    REFUSED(svmap_space_allocate(s, &fit, &addr), SVMAP_EINVAL);
    REFUSED(svmap_space_find_fit_nocross(s, &fit, 0, &addr), SVMAP_EINVAL);
    REFUSED(svmap_space_allocate_nocross(s, &fit, 0, &addr), SVMAP_EINVAL);
    fit.topdown = true;
    poke_bool(&fit.respect_guard_gaps, 7);
    REFUSED(svmap_space_find_fit(s, &fit, &addr), SVMAP_EINVAL);
    REFUSED(svmap_space_allocate(s, &fit, &addr), SVMAP_EINVAL);
    fit.respect_guard_gaps = false;
    fit.length = 0;
    REFUSED(svmap_space_find_fit(s, &fit, &addr), SVMAP_EINVAL);
    fit.length = 4096;
    fit.low = UINT64_MAX; /* an empty window */
    CHECK(svmap_space_find_fit(s, &fit, &addr) != SVMAP_OK);
    fit.low = 0;
    fit.align = 3;
    REFUSED(svmap_space_find_fit(s, &fit, &addr), SVMAP_EINVAL);
    fit.align = 1;
    REFUSED(svmap_space_find_fit_nocross(s, &fit, UINT64_MAX, &addr), SVMAP_EINVAL);
    REFUSED(svmap_space_find_fit_nocross(s, &fit, 1, &addr), SVMAP_EINVAL); /* 4096 > 1 */
    fit.length = UINT64_MAX;
    REFUSED(svmap_space_allocate_nocross(s, &fit, 1ull << 63, &addr), SVMAP_EINVAL);
    fit.length = 4096;

    svmap_unmapped_area_info_t info;
    memset(&info, 0, sizeof info);
    info.flags = 0xfe;
    info.length = 4096;
    info.high_limit = UINT64_MAX;
    REFUSED(svmap_space_unmapped_area(s, &info, &addr), SVMAP_EINVAL);
    info.flags = 0;
    info.length = UINT64_MAX;
    info.align_mask = UINT64_MAX;
    info.start_gap = UINT64_MAX;
    CHECK(svmap_space_unmapped_area(s, &info, &addr) != SVMAP_OK);

    /* A misaligned out-parameter is refused, not written through. */
    uint64_t words[2] = {0, 0};
    uint64_t *misaligned = (uint64_t *)((char *)words + 1);
    info.length = 4096;
    info.align_mask = 0;
    info.start_gap = 0;
    REFUSED(svmap_space_unmapped_area(s, &info, misaligned), SVMAP_EINVAL);
    CHECK(contains(svmap_last_error_message(), "aligned"));
    CHECK(words[0] == 0 && words[1] == 0);
    svmap_space_delete(s);

    svmap_svm_t *svm = svmap_svm_new(NULL);
    CHECK(svm != NULL);
    svmap_device_config_t dev;
    OK(svmap_device_config_init(&dev, "gpu", 40));
    dev.mirror = 0xdead;
    REFUSED(svmap_svm_add_device(svm, &dev), SVMAP_EINVAL);
    dev.mirror = SVMAP_MIRROR_BUFFERS;
    dev.populate = 0xdead;
    REFUSED(svmap_svm_add_device(svm, &dev), SVMAP_EINVAL);
    dev.populate = SVMAP_POPULATE_ON_FAULT;
    dev.va_bits = 0xffffffffu;
    REFUSED(svmap_svm_add_device(svm, &dev), SVMAP_EINVAL);
    dev.va_bits = 40;
    dev.page_size = UINT64_MAX;
    REFUSED(svmap_svm_add_device(svm, &dev), SVMAP_EINVAL);
    dev.page_size = 4096;
    dev.base = UINT64_MAX;
    REFUSED(svmap_svm_add_device(svm, &dev), SVMAP_EINVAL);
    dev.base = 0;
    OK(svmap_svm_add_device(svm, &dev));
    /* A name that is not UTF-8. */
    svmap_device_config_t bad = dev;
    bad.name = "\xff\xfe";
    REFUSED(svmap_svm_add_device(svm, &bad), SVMAP_EINVAL);

    REFUSED(svmap_svm_device_map(svm, "gpu", 0x100000, 0x200000, 0xbad), SVMAP_EINVAL);
    REFUSED(svmap_svm_protect(svm, 0x100000, 4096, 0xbad), SVMAP_EINVAL);
    CHECK(svmap_svm_protect(svm, 0x100000, UINT64_MAX, SVMAP_PROT_READ) != SVMAP_OK);

    /* Counts and lengths that overflow. */
    const char *gpu[] = {"gpu"};
    uint64_t buf = 0;
    REFUSED(svmap_svm_alloc(svm, 4096, 0, gpu, SIZE_MAX, false, &buf), SVMAP_EINVAL);
    CHECK(contains(svmap_last_error_message(), "overflow"));
    REFUSED(svmap_svm_alloc(svm, 4096, 0, gpu, SIZE_MAX / 8 + 1, false, &buf), SVMAP_EINVAL);
    const char **misaligned_names = (const char **)((char *)gpu + 1);
    REFUSED(svmap_svm_alloc(svm, 4096, 0, misaligned_names, 1, false, &buf), SVMAP_EINVAL);
    CHECK(svmap_svm_alloc(svm, UINT64_MAX, 0, gpu, 1, false, &buf) != SVMAP_OK);
    CHECK(svmap_svm_alloc(svm, 4096, 1ull << 63, gpu, 1, false, &buf) != SVMAP_OK);
    CHECK(svmap_svm_range_count(svm) == 0);

    /* Double free through the API. */
    OK(svmap_svm_alloc(svm, 4096, 0, gpu, 1, false, &buf));
    OK(svmap_svm_dealloc(svm, buf));
    REFUSED(svmap_svm_dealloc(svm, buf), SVMAP_EINVAL);
    REFUSED(svmap_svm_dealloc(svm, UINT64_MAX), SVMAP_EINVAL);
    REFUSED(svmap_svm_device_access(svm, "gpu", UINT64_MAX, false), SVMAP_FAULT_OUT_OF_RANGE);
    REFUSED(svmap_svm_check_addressable(svm, "gpu", 0, UINT64_MAX), SVMAP_ABOVE_DEVICE_LIMIT);
    svmap_svm_delete(svm);
}

static void test_linux(void) {
    /* Lengths that overflow and bits out of range. */
    CHECK(svmap_reservation_new(40, UINT64_MAX) == NULL);
    CHECK(svmap_last_error_message()[0] != '\0');
    CHECK(svmap_reservation_new(0xffffffffu, 4096) == NULL);
    CHECK(svmap_reservation_new_at(UINT64_MAX & ~4095ull, 4096) == NULL);
    CHECK(svmap_reservation_new_at(0x100000, UINT64_MAX & ~4095ull) == NULL);
    CHECK(svmap_reservation_new_at(0x100001, 4096) == NULL);
    CHECK(svmap_heap_new(40, UINT64_MAX) == NULL);

    svmap_heap_t *heap = svmap_heap_new(40, 1 << 20);
    CHECK(heap != NULL);
    void *p = NULL;
    REFUSED(svmap_heap_alloc(heap, UINT64_MAX, 0, &p), SVMAP_EINVAL);
    REFUSED(svmap_heap_alloc(heap, 4096, 3, &p), SVMAP_EINVAL);
    CHECK(svmap_heap_alloc(heap, 4096, 1ull << 63, &p) != SVMAP_OK);
    REFUSED(svmap_heap_alloc(heap, 2 << 20, 0, &p), SVMAP_ENOMEM);
    CHECK(p == NULL); /* failures leave the out-parameter alone */
    void *slots[2] = {NULL, NULL};
    void **misaligned = (void **)((char *)slots + 1);
    REFUSED(svmap_heap_alloc(heap, 4096, 0, misaligned), SVMAP_EINVAL);
    CHECK(slots[0] == NULL && slots[1] == NULL && svmap_heap_live_count(heap) == 0);
    OK(svmap_heap_alloc(heap, 4096, 0, &p));
    int fd = -1;
    OK(svmap_heap_memfd(heap, p, &fd));
    REFUSED(svmap_heap_memfd(heap, (char *)p + 1, &fd), SVMAP_EINVAL);
    REFUSED(svmap_heap_dealloc(heap, (char *)p + 4096), SVMAP_EINVAL);
    REFUSED(svmap_heap_dealloc(heap, (void *)UINTPTR_MAX), SVMAP_EINVAL);
    /* Double free through the API: detected. */
    OK(svmap_heap_dealloc(heap, p));
    REFUSED(svmap_heap_dealloc(heap, p), SVMAP_EINVAL);
    REFUSED(svmap_heap_memfd(heap, p, &fd), SVMAP_EINVAL);
    CHECK(svmap_heap_live_count(heap) == 0);
    svmap_heap_delete(heap);
}

static void test_replay(void) {
    svmap_replay_summary_t sum;
    memset(&sum, 0, sizeof sum);
    /* A length past isize::MAX: refused before anything reads the bytes. */
    REFUSED(svmap_replay_buffer("x", SIZE_MAX, false, -1, -1, &sum), SVMAP_EINVAL);
    REFUSED(svmap_replay_buffer("x", (size_t)1 << 63, false, -1, -1, &sum), SVMAP_EINVAL);
    /* Bad descriptors: negative, closed, read-only. */
    const char *trace = "{\"op\": \"reset\"}\n";
    REFUSED(svmap_replay_buffer(trace, strlen(trace), false, -2, -1, &sum), SVMAP_EINVAL);
    REFUSED(svmap_replay_buffer(trace, strlen(trace), false, -1, -7, &sum), SVMAP_EINVAL);
    int closed = open("/dev/null", O_WRONLY | O_CLOEXEC);
    CHECK(closed >= 0);
    close(closed);
    REFUSED(svmap_replay_buffer(trace, strlen(trace), false, closed, -1, &sum), SVMAP_EINVAL);
    CHECK(contains(svmap_last_error_message(), "not open"));
    REFUSED(svmap_replay_buffer(trace, strlen(trace), false, -1, closed, &sum), SVMAP_EINVAL);
    int ro = open("/dev/null", O_RDONLY | O_CLOEXEC);
    CHECK(ro >= 0);
    REFUSED(svmap_replay_buffer(trace, strlen(trace), false, ro, -1, &sum), SVMAP_EINVAL);
    close(ro);
    /* Garbage, a NUL in the middle, no newline at the end. */
    const char garbage[] = "{\"op\": \"map\", \"start\"\0\xff\xfe\n{{{{";
    REFUSED(svmap_replay_buffer(garbage, sizeof garbage - 1, false, -1, -1, &sum),
            SVMAP_EBADTRACE);
    REFUSED(svmap_replay_file("/nonexistent/trace.jsonl", false, -1, -1, &sum), SVMAP_ENOENT);
    REFUSED(svmap_replay_file("/", false, -1, -1, &sum), SVMAP_EIO);
    CHECK(sum.ops == 0 && sum.results == 0); /* never written by a failure */
}

/* The last-error message stays readable until the next call on the thread,
 * and is replaced (not appended to) by each failure. */
static void test_last_error_lifetime(void) {
    REFUSED(svmap_space_map(NULL, 0, 0, 0), SVMAP_EINVAL);
    const char *m = svmap_last_error_message();
    /* These two do not replace it. */
    CHECK(strlen(svmap_status_name(SVMAP_EINVAL)) > 0);
    CHECK(strlen(svmap_version()) > 0);
    CHECK(m == svmap_last_error_message());
    CHECK(contains(m, "space is NULL"));
    for (int i = 0; i < 1000; i++) {
        REFUSED(svmap_space_unmap(NULL, 0, 0), SVMAP_EINVAL);
    }
    CHECK(strlen(svmap_last_error_message()) < 64);
    svmap_space_t *s = svmap_space_new(NULL);
    CHECK(s != NULL && svmap_last_error_message()[0] == '\0');
    svmap_space_delete(s);
}

/* Every function that takes a range refuses an inverted one (start above
 * end, or start + length past 2^64) with SVMAP_EINVAL, and changes
 * nothing. */
static void test_inverted_ranges(void) {
    svmap_space_t *s = svmap_space_new(NULL);
    CHECK(s != NULL);
    OK(svmap_space_map(s, 0x100000, 0x200000, 0));
    REFUSED(svmap_space_map(s, 0x400000, 0x300000, 0), SVMAP_EINVAL);
    REFUSED(svmap_space_unmap(s, 0x200000, 0x100000), SVMAP_EINVAL);
    REFUSED(svmap_space_munmap(s, 0x100000, UINT64_MAX & ~4095ull), SVMAP_EINVAL);
    CHECK(svmap_space_vma_count(s) == 1);
    uint64_t addr = 42;
    svmap_fit_request_t fit;
    memset(&fit, 0, sizeof fit);
    fit.length = 4096;
    fit.align = 4096;
    fit.low = 0x300000;
    fit.high = 0x200000;
    REFUSED(svmap_space_find_fit(s, &fit, &addr), SVMAP_EINVAL);
    CHECK(contains(svmap_last_error_message(), "inverted"));
    REFUSED(svmap_space_allocate(s, &fit, &addr), SVMAP_EINVAL);
    CHECK(addr == 42 && svmap_space_vma_count(s) == 1);
    /* The kernel's search keeps the kernel's answer: nothing fits. */
    svmap_unmapped_area_info_t info;
    memset(&info, 0, sizeof info);
    info.length = 4096;
    info.low_limit = 0x300000;
    info.high_limit = 0x200000;
    REFUSED(svmap_space_unmapped_area(s, &info, &addr), SVMAP_ENOMEM);
    CHECK(addr == 42);
    svmap_space_delete(s);

    svmap_svm_t *svm = svmap_svm_new(NULL);
    CHECK(svm != NULL);
    svmap_device_config_t dev;
    OK(svmap_device_config_init(&dev, "gpu", 40));
    OK(svmap_svm_add_device(svm, &dev));
    OK(svmap_svm_check_addressable(svm, "gpu", 0x1000, 0x2000));
    OK(svmap_svm_check_addressable(svm, "gpu", 0x1000, 0x1000)); /* empty */
    REFUSED(svmap_svm_check_addressable(svm, "gpu", 0x2000, 0x1000), SVMAP_EINVAL);
    CHECK(contains(svmap_last_error_message(), "inverted"));
    REFUSED(svmap_svm_check_addressable(svm, "gpu", UINT64_MAX, 0), SVMAP_EINVAL);
    REFUSED(svmap_svm_cpu_map(svm, 0x300000, 0x200000, false), SVMAP_EINVAL);
    REFUSED(svmap_svm_device_map(svm, "gpu", 0x300000, 0x200000, SVMAP_CPU_FAULT), SVMAP_EINVAL);
    OK(svmap_svm_cpu_map(svm, 0x200000, 0x300000, false));
    /* start + length wraps past 2^64 (page-aligned, so only the wrap is wrong). */
    REFUSED(svmap_svm_cpu_unmap(svm, 0x200000, UINT64_MAX & ~4095ull), SVMAP_EINVAL);
    CHECK(contains(svmap_last_error_message(), "wraps"));
    REFUSED(svmap_svm_protect(svm, 0x200000, UINT64_MAX & ~4095ull, SVMAP_PROT_READ),
            SVMAP_EINVAL);
    /* Nothing changed: the CPU mapping is still there. */
    svmap_mmap_request_t req;
    memset(&req, 0, sizeof req);
    req.length = 4096;
    req.hint = 0x200000;
    req.fixed = SVMAP_MAP_FIXED_NOREPLACE;
    REFUSED(svmap_svm_cpu_mmap(svm, &req, &addr), SVMAP_EEXIST);
    info.low_limit = 0x300000;
    info.high_limit = 0x200000;
    REFUSED(svmap_svm_find(svm, &info, &addr), SVMAP_ENOMEM);
    svmap_svm_delete(svm);

    CHECK(svmap_reservation_new_at(0x100000, UINT64_MAX & ~4095ull) == NULL);
    CHECK(contains(svmap_last_error_message(), "errno 22")); /* EINVAL */
}

/* Device parameters that would make the device model allocate without
 * bound (a TLB of 2^32 entries, 16 GiB pages) are refused with
 * SVMAP_EINVAL naming the field; the limits themselves are accepted. */
static void test_device_bounds(void) {
    svmap_svm_t *svm = svmap_svm_new(NULL);
    CHECK(svm != NULL);
    svmap_device_config_t dev;
    OK(svmap_device_config_init(&dev, "gpu", 40));
    dev.tlb_entries = UINT32_MAX;
    REFUSED(svmap_svm_add_device(svm, &dev), SVMAP_EINVAL);
    CHECK(contains(svmap_last_error_message(), "TLB"));
    dev.tlb_entries = SVMAP_MAX_TLB_ENTRIES + 1;
    REFUSED(svmap_svm_add_device(svm, &dev), SVMAP_EINVAL);
    dev.tlb_entries = 0;
    REFUSED(svmap_svm_add_device(svm, &dev), SVMAP_EINVAL);
    dev.tlb_entries = 64;
    dev.page_size = 1ull << 34;
    REFUSED(svmap_svm_add_device(svm, &dev), SVMAP_EINVAL);
    CHECK(contains(svmap_last_error_message(), "page size"));
    dev.page_size = SVMAP_MAX_DEVICE_PAGE_SIZE * 2;
    REFUSED(svmap_svm_add_device(svm, &dev), SVMAP_EINVAL);
    dev.page_size = 1ull << 21;
    dev.va_bits = 20; /* a page larger than the whole device */
    REFUSED(svmap_svm_add_device(svm, &dev), SVMAP_EINVAL);
    CHECK(svmap_svm_device_count(svm) == 0);

    dev.va_bits = 40;
    dev.page_size = SVMAP_MAX_DEVICE_PAGE_SIZE;
    dev.tlb_entries = SVMAP_MAX_TLB_ENTRIES;
    OK(svmap_svm_add_device(svm, &dev));
    CHECK(svmap_svm_device_count(svm) == 1);
    /* One 1 GiB page of the device backs a small allocation. */
    const char *gpu[] = {"gpu"};
    uint64_t buf = 0;
    OK(svmap_svm_alloc(svm, 4096, 0, gpu, 1, false, &buf));
    CHECK(buf % SVMAP_MAX_DEVICE_PAGE_SIZE == 0);
    OK(svmap_svm_device_access(svm, "gpu", buf + 4095, true));
    svmap_svm_delete(svm);
}

/* Replaying into a pipe whose reader has gone: SVMAP_EIO, and the process
 * lives on with SIGPIPE's default action, its signal mask as before and no
 * SIGPIPE left pending. */
static void test_closed_pipe(void) {
    struct sigaction dfl;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    CHECK(sigaction(SIGPIPE, &dfl, NULL) == 0); /* a write that raises it kills */
    sigset_t before, after, pending;
    CHECK(sigprocmask(SIG_BLOCK, NULL, &before) == 0);
    CHECK(!sigismember(&before, SIGPIPE));

    const char *trace =
        "{\"op\": \"mmap\", \"length\": \"0x1000\"}\n"
        "{\"op\": \"map\", \"start\": \"0x100000\", \"end\": \"0x200000\", "
        "\"expect\": {\"err\": \"EEXIST\"}}\n";
    svmap_replay_summary_t sum;
    memset(&sum, 0, sizeof sum);
    int fds[2];
    CHECK(pipe(fds) == 0);
    close(fds[0]);
    REFUSED(svmap_replay_buffer(trace, strlen(trace), true, fds[1], -1, &sum), SVMAP_EIO);
    CHECK(contains(svmap_last_error_message(), "Broken pipe"));
    CHECK(sum.ops == 0); /* not written by the failure */
    /* The mismatch note of the map (which prints no result line) goes to
     * err_fd, best effort: the replay runs to its end. */
    OK(svmap_replay_buffer(trace, strlen(trace), true, -1, fds[1], &sum));
    CHECK(sum.ops == 2 && sum.mismatches == 1);
    close(fds[1]);
    CHECK(sigprocmask(SIG_BLOCK, NULL, &after) == 0);
    CHECK(!sigismember(&after, SIGPIPE));
    CHECK(sigpending(&pending) == 0 && !sigismember(&pending, SIGPIPE));
    struct sigaction now;
    CHECK(sigaction(SIGPIPE, NULL, &now) == 0 && now.sa_handler == SIG_DFL);

    /* A caller that blocks SIGPIPE itself keeps it blocked, and a SIGPIPE
     * it already had pending stays pending for it. */
    sigset_t pipe_only;
    sigemptyset(&pipe_only);
    sigaddset(&pipe_only, SIGPIPE);
    CHECK(sigprocmask(SIG_BLOCK, &pipe_only, NULL) == 0);
    CHECK(raise(SIGPIPE) == 0);
    CHECK(pipe(fds) == 0);
    close(fds[0]);
    REFUSED(svmap_replay_buffer(trace, strlen(trace), false, fds[1], -1, &sum), SVMAP_EIO);
    close(fds[1]);
    CHECK(sigprocmask(SIG_BLOCK, NULL, &after) == 0 && sigismember(&after, SIGPIPE));
    CHECK(sigpending(&pending) == 0 && sigismember(&pending, SIGPIPE));
    int sig = 0;
    CHECK(sigwait(&pipe_only, &sig) == 0 && sig == SIGPIPE);
    CHECK(sigprocmask(SIG_SETMASK, &before, NULL) == 0);
}

/* A program started as a device peer whose main forgot
 * svmap_peer_serve_from_env() and spawns "itself" (NULL exe) again would
 * start peers without end: refused at once, and no process is started. */
static void test_peer_inside_a_peer(void) {
    CHECK(setenv("SVMAP_PEER_FD", "1000", 1) == 0);
    CHECK(svmap_peer_spawn(NULL, NULL, 40, 1 << 20) == NULL);
    CHECK(contains(svmap_last_error_message(), "svmap_peer_serve_from_env"));
    CHECK(contains(svmap_last_error_message(), "SVMAP_PEER_FD"));
    errno = 0;
    CHECK(waitpid(-1, NULL, WNOHANG) == -1 && errno == ECHILD); /* no child */
    /* An explicit program is not refused for that reason. */
    CHECK(svmap_peer_spawn("/nonexistent/svmap-peer", NULL, 40, 1 << 20) == NULL);
    CHECK(!contains(svmap_last_error_message(), "svmap_peer_serve_from_env"));
    CHECK(unsetenv("SVMAP_PEER_FD") == 0);
    /* Outside a peer the same NULL-exe call is not refused for it either
     * (70 bits: refused for the width, before anything starts). */
    CHECK(svmap_peer_spawn(NULL, NULL, 70, 1 << 20) == NULL);
    CHECK(contains(svmap_last_error_message(), "va_bits"));
}

/* Open descriptors of this process (the directory stream's own included). */
static int count_fds(void) {
    DIR *d = opendir("/proc/self/fd");
    CHECK(d != NULL);
    int n = 0;
    while (readdir(d) != NULL) n++;
    closedir(d);
    return n;
}

int main(void) {
    int fds_before = count_fds();
    test_null_everywhere();
    test_bad_enums_and_bools();
    test_linux();
    test_replay();
    test_last_error_lifetime();
    test_inverted_ranges();
    test_device_bounds();
    test_closed_pipe();
    test_peer_inside_a_peer();
    /* No failing call above leaked a descriptor (memfds of failed allocs,
     * replay files, sinks). */
    CHECK(count_fds() == fds_before);
    printf("test_hostile: %d checks passed\n", checks);
    return 0;
}
