/*
 * test_capi.c: exercises every function of include/svmap.h, with checks.
 * Compiled with the system C compiler and run by tests/c_api.rs (linked
 * statically, dynamically, and under valgrind when it is installed).
 * Exits 0 when every check passes, 1 at the first failure.
 *
 * -DSVMAP_TEST_DEBUG_HOOK: the library is a debug build, which exports the
 * test hook svmap_debug_panic (not in the header).
 * -DSVMAP_TEST_DATA_DIR="...": tests/data of the workspace, for replay.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "svmap.h"
#include "check.h"


/* A call that must return `want`; a failure must leave a message, a success
 * an empty one. */
#define EXPECT(call, want)                                                             \
    do {                                                                               \
        svmap_status_t got_ = (call);                                                  \
        checks++;                                                                      \
        if (got_ != (want)) {                                                          \
            fprintf(stderr, "%s:%d: %s\n  returned %s, wanted %s\n  last error: \"%s\"\n", \
                    __FILE__, __LINE__, #call, svmap_status_name((int)got_),           \
                    svmap_status_name((int)(want)), svmap_last_error_message());       \
            exit(1);                                                                   \
        }                                                                              \
        CHECK((got_ == SVMAP_OK) == (svmap_last_error_message()[0] == '\0'));          \
    } while (0)

#define OK(call) EXPECT(call, SVMAP_OK)

static int contains(const char *s, const char *needle) { return strstr(s, needle) != NULL; }

#ifdef SVMAP_TEST_DEBUG_HOOK
svmap_status_t svmap_debug_panic(const char *msg);
#endif

static void test_basics(void) {
    CHECK(strcmp(svmap_status_name(SVMAP_OK), "SVMAP_OK") == 0);
    CHECK(strcmp(svmap_status_name(SVMAP_FAULT_UNMAPPED), "SVMAP_FAULT_UNMAPPED") == 0);
    CHECK(strcmp(svmap_status_name(SVMAP_INTERNAL), "SVMAP_INTERNAL") == 0);
    CHECK(strcmp(svmap_status_name(12345), "SVMAP_UNKNOWN") == 0);
    CHECK(strlen(svmap_version()) > 0);
    CHECK(svmap_last_error_message() != NULL);
#ifdef SVMAP_TEST_DEBUG_HOOK
    /* A panic inside the library comes back as SVMAP_INTERNAL. */
    EXPECT(svmap_debug_panic("forced by test_capi.c"), SVMAP_INTERNAL);
    CHECK(contains(svmap_last_error_message(), "forced by test_capi.c"));
    EXPECT(svmap_debug_panic(NULL), SVMAP_INTERNAL);
    printf("panic hook: SVMAP_INTERNAL, \"%s\"\n", svmap_last_error_message());
#endif
}

static void test_space(void) {
    svmap_space_config_t cfg;
    OK(svmap_space_config_default(&cfg));
    CHECK(cfg.task_size == (1ull << 47) - 4096);
    CHECK(cfg.mmap_min_addr == 0x10000);
    CHECK(cfg.layout == SVMAP_LAYOUT_TOPDOWN);
    EXPECT(svmap_space_config_default(NULL), SVMAP_EINVAL);

    svmap_space_config_t bad = cfg;
    bad.layout = 7;
    CHECK(svmap_space_new(&bad) == NULL);
    CHECK(contains(svmap_last_error_message(), "layout"));

    svmap_space_t *s = svmap_space_new(&cfg);
    CHECK(s != NULL);
    CHECK(svmap_last_error_message()[0] == '\0');
    CHECK(svmap_space_vma_count(s) == 0);

    /* map / unmap */
    OK(svmap_space_map(s, 0x100000, 0x200000, 0));
    EXPECT(svmap_space_map(s, 0x1ff000, 0x201000, 0), SVMAP_EEXIST);
    CHECK(contains(svmap_last_error_message(), "overlaps"));
    EXPECT(svmap_space_map(s, 0x300000, 0x300000, 0), SVMAP_EINVAL);
    EXPECT(svmap_space_map(s, 0x300000, 0x301000, 0x80), SVMAP_EINVAL);
    EXPECT(svmap_space_map(NULL, 0x300000, 0x301000, 0), SVMAP_EINVAL);
    OK(svmap_space_map(s, 0x7ff000000000, 0x7ff000100000, SVMAP_VMA_GROWSDOWN));
    CHECK(svmap_space_vma_count(s) == 2);
    OK(svmap_space_unmap(s, 0x7ff000000000, 0x7ff000100000));
    EXPECT(svmap_space_unmap(s, 0x2000, 0x1000), SVMAP_EINVAL);
    CHECK(svmap_space_vma_count(s) == 1);
    CHECK(svmap_space_vma_count(NULL) == 0);

    svmap_vma_t v;
    OK(svmap_space_find_vma(s, 0, &v));
    CHECK(v.start == 0x100000 && v.end == 0x200000 && v.flags == 0);
    EXPECT(svmap_space_find_vma(s, 0x200000, &v), SVMAP_ENOENT);
    EXPECT(svmap_space_find_vma(s, 0, NULL), SVMAP_EINVAL);

    /* the kernel's vm_unmapped_area() */
    uint64_t addr = 0;
    svmap_unmapped_area_info_t info = {0};
    info.length = 0x1000;
    info.low_limit = 0;
    info.high_limit = 0x300000;
    OK(svmap_space_unmapped_area(s, &info, &addr));
    CHECK(addr == 0x10000); /* raised to mmap_min_addr */
    info.flags = SVMAP_VM_UNMAPPED_AREA_TOPDOWN;
    OK(svmap_space_unmapped_area(s, &info, &addr));
    CHECK(addr == 0x2ff000);
    info.flags = 0;
    info.low_limit = 0x100000;
    OK(svmap_space_unmapped_area(s, &info, &addr));
    CHECK(addr == 0x200000);
    info.length = 0x200000; /* only 1 MiB is free in [1 MiB, 3 MiB) */
    addr = 42;
    EXPECT(svmap_space_unmapped_area(s, &info, &addr), SVMAP_ENOMEM);
    CHECK(addr == 42); /* untouched on failure */
    info.flags = 0x10;
    EXPECT(svmap_space_unmapped_area(s, &info, &addr), SVMAP_EINVAL);
    EXPECT(svmap_space_unmapped_area(s, NULL, &addr), SVMAP_EINVAL);
    info.flags = 0;
    EXPECT(svmap_space_unmapped_area(s, &info, NULL), SVMAP_EINVAL);

    /* the exact aligned fit */
    svmap_fit_request_t fit = {0};
    fit.length = 0x1000;
    fit.low = 0x10000;
    fit.high = 0x300000;
    fit.align = 0x100000;
    OK(svmap_space_find_fit(s, &fit, &addr));
    CHECK(addr == 0x200000);
    fit.topdown = true;
    OK(svmap_space_find_fit(s, &fit, &addr));
    CHECK(addr == 0x200000);
    fit.align = 3;
    EXPECT(svmap_space_find_fit(s, &fit, &addr), SVMAP_EINVAL);
    fit.align = 0x1000;
    fit.length = 0;
    EXPECT(svmap_space_find_fit(s, &fit, &addr), SVMAP_EINVAL);
    fit.length = 0x400000;
    EXPECT(svmap_space_find_fit(s, &fit, &addr), SVMAP_ENOMEM);
    EXPECT(svmap_space_find_fit(s, NULL, &addr), SVMAP_EINVAL);

    /* find_fit and map in one call */
    fit.length = 0x1000;
    fit.align = 0x100000;
    fit.topdown = false;
    size_t before = svmap_space_vma_count(s);
    OK(svmap_space_allocate(s, &fit, &addr));
    CHECK(addr == 0x200000);
    CHECK(svmap_space_vma_count(s) == before + 1);
    OK(svmap_space_find_vma(s, 0x200000, &v));
    CHECK(v.start == 0x200000 && v.end == 0x201000);
    addr = 42;
    /* the only aligned slot in the window is taken now */
    EXPECT(svmap_space_allocate(s, &fit, &addr), SVMAP_ENOMEM);
    CHECK(addr == 42 && svmap_space_vma_count(s) == before + 1);
    fit.align = 3;
    EXPECT(svmap_space_allocate(s, &fit, &addr), SVMAP_EINVAL);
    fit.align = 0x1000;
    fit.length = 0;
    EXPECT(svmap_space_allocate(s, &fit, &addr), SVMAP_EINVAL);
    fit.length = 0x1000;
    EXPECT(svmap_space_allocate(NULL, &fit, &addr), SVMAP_EINVAL);
    EXPECT(svmap_space_allocate(s, NULL, &addr), SVMAP_EINVAL);
    fit.align = 0x100000;
    EXPECT(svmap_space_allocate(s, &fit, NULL), SVMAP_EINVAL);
    CHECK(svmap_space_vma_count(s) == before + 1);
    OK(svmap_space_unmap(s, 0x200000, 0x201000));
    CHECK(svmap_space_vma_count(s) == before);
    fit.low = 0;
    fit.align = 0x1000;
    OK(svmap_space_allocate(s, &fit, &addr));
    CHECK(addr == 0x10000); /* raised to mmap_min_addr */
    OK(svmap_space_unmap(s, addr, addr + 0x1000));
    CHECK(svmap_space_vma_count(s) == before);

    /* the fit with a boundary: no range crosses a multiple of it. Above the
     * VMA [1 MiB, 2 MiB) everything is free; a 12 KiB range from 0x20f000
     * would cross 0x210000, so with 64 KiB blocks the lowest one starts at
     * that multiple, and the highest below 0x212000 ends at it. */
    fit.length = 0x3000;
    fit.low = 0x20f000;
    fit.high = 0x300000;
    fit.align = 0x1000;
    fit.align_offset = 0;
    fit.topdown = false;
    OK(svmap_space_find_fit(s, &fit, &addr));
    CHECK(addr == 0x20f000);
    OK(svmap_space_find_fit_nocross(s, &fit, 0, &addr)); /* 0: no boundary */
    CHECK(addr == 0x20f000);
    OK(svmap_space_find_fit_nocross(s, &fit, 0x10000, &addr));
    CHECK(addr == 0x210000);
    fit.low = 0x200000;
    fit.high = 0x212000;
    fit.topdown = true;
    OK(svmap_space_find_fit(s, &fit, &addr));
    CHECK(addr == 0x20f000);
    OK(svmap_space_find_fit_nocross(s, &fit, 0x10000, &addr));
    CHECK(addr == 0x210000 - 0x3000);
    /* [0x20f000, 0x212000) is two pieces of 4 and 8 KiB: no room */
    fit.low = 0x20f000;
    addr = 42;
    EXPECT(svmap_space_find_fit_nocross(s, &fit, 0x10000, &addr), SVMAP_ENOMEM);
    CHECK(addr == 42);
    EXPECT(svmap_space_allocate_nocross(s, &fit, 0x10000, &addr), SVMAP_ENOMEM);
    /* typed refusals: not a power of two, shorter than the length */
    EXPECT(svmap_space_find_fit_nocross(s, &fit, 0x3000, &addr), SVMAP_EINVAL);
    CHECK(contains(svmap_last_error_message(), "power of two"));
    EXPECT(svmap_space_allocate_nocross(s, &fit, 0x3000, &addr), SVMAP_EINVAL);
    EXPECT(svmap_space_find_fit_nocross(s, &fit, 0x2000, &addr), SVMAP_EINVAL);
    CHECK(contains(svmap_last_error_message(), "crosses every multiple"));
    EXPECT(svmap_space_allocate_nocross(s, &fit, 0x2000, &addr), SVMAP_EINVAL);
    EXPECT(svmap_space_find_fit_nocross(NULL, &fit, 0x10000, &addr), SVMAP_EINVAL);
    EXPECT(svmap_space_allocate_nocross(s, NULL, 0x10000, &addr), SVMAP_EINVAL);
    EXPECT(svmap_space_allocate_nocross(s, &fit, 0x10000, NULL), SVMAP_EINVAL);
    CHECK(svmap_space_vma_count(s) == before);
    /* an allocator with 64 KiB blocks: every range is the one the search
     * predicted, is mapped, and stays inside its block; five 12 KiB ranges
     * fill a block to 60 KiB, so the sixth starts the next block */
    fit.low = 0x200000;
    fit.high = 0x300000;
    fit.topdown = false;
    uint64_t got[16];
    for (int i = 0; i < 16; i++) {
        uint64_t predicted = 0;
        OK(svmap_space_find_fit_nocross(s, &fit, 0x10000, &predicted));
        OK(svmap_space_allocate_nocross(s, &fit, 0x10000, &got[i]));
        CHECK(got[i] == predicted);
        CHECK(got[i] >> 16 == (got[i] + fit.length - 1) >> 16);
        OK(svmap_space_find_vma(s, got[i], &v));
        CHECK(v.start == got[i] && v.end == got[i] + fit.length);
        CHECK(i == 0 || got[i] > got[i - 1]);
    }
    CHECK(got[0] == 0x200000 && got[4] == 0x20c000 && got[5] == 0x210000);
    CHECK(svmap_space_vma_count(s) == before + 16);
    for (int i = 0; i < 16; i++) OK(svmap_space_unmap(s, got[i], got[i] + fit.length));
    CHECK(svmap_space_vma_count(s) == before);

    /* the x86-64 mmap policy */
    svmap_mmap_request_t req = {0};
    req.length = 0x1000;
    uint64_t a1 = 0, a2 = 0;
    OK(svmap_space_mmap(s, &req, &a1));
    OK(svmap_space_mmap(s, &req, &a2));
    CHECK(a1 == cfg.mmap_base - 0x1000); /* top-down from mmap_base */
    CHECK(a2 == a1 - 0x1000);
    req.hint = a1;
    req.fixed = SVMAP_MAP_FIXED_NOREPLACE;
    EXPECT(svmap_space_mmap(s, &req, &addr), SVMAP_EEXIST);
    req.fixed = SVMAP_MAP_FIXED;
    OK(svmap_space_mmap(s, &req, &addr));
    CHECK(addr == a1);
    req.fixed = 9;
    EXPECT(svmap_space_mmap(s, &req, &addr), SVMAP_EINVAL);
    req.fixed = SVMAP_MAP_HINT;
    req.length = 0;
    EXPECT(svmap_space_mmap(s, &req, &addr), SVMAP_EINVAL);
    EXPECT(svmap_space_munmap(s, a1 + 1, 0x1000), SVMAP_EINVAL);
    OK(svmap_space_munmap(s, a2, 0x2000));
    CHECK(svmap_space_vma_count(s) == 1);

    svmap_space_delete(s);
    svmap_space_delete(NULL);

    /* the legacy layout searches upwards */
    cfg.layout = SVMAP_LAYOUT_LEGACY;
    s = svmap_space_new(&cfg);
    CHECK(s != NULL);
    memset(&req, 0, sizeof req);
    req.length = 0x1000;
    OK(svmap_space_mmap(s, &req, &a1));
    OK(svmap_space_mmap(s, &req, &a2));
    CHECK(a2 == a1 + 0x1000);
    svmap_space_delete(s);
    s = svmap_space_new(NULL);
    CHECK(s != NULL);
    svmap_space_delete(s);
}

static void test_svm(void) {
    svmap_svm_t *svm = svmap_svm_new(NULL);
    CHECK(svm != NULL);
    svmap_space_config_t bad;
    OK(svmap_space_config_default(&bad));
    bad.layout = 3;
    CHECK(svmap_svm_new(&bad) == NULL);

    svmap_device_config_t dev;
    OK(svmap_device_config_init(&dev, "gpu40", 40));
    CHECK(dev.page_size == 4096 && dev.base == 0 && dev.tlb_entries == 64);
    CHECK(dev.mirror == SVMAP_MIRROR_BUFFERS && dev.populate == SVMAP_POPULATE_ON_FAULT);
    EXPECT(svmap_device_config_init(NULL, "x", 40), SVMAP_EINVAL);
    OK(svmap_svm_add_device(svm, &dev));
    EXPECT(svmap_svm_add_device(svm, &dev), SVMAP_EEXIST);

    svmap_device_config_t d2 = dev;
    d2.name = "wide";
    d2.va_bits = 70;
    EXPECT(svmap_svm_add_device(svm, &d2), SVMAP_EINVAL);
    d2.va_bits = 48;
    d2.mirror = 7;
    EXPECT(svmap_svm_add_device(svm, &d2), SVMAP_EINVAL);
    d2.mirror = SVMAP_MIRROR_SYSTEM;
    d2.populate = 7;
    EXPECT(svmap_svm_add_device(svm, &d2), SVMAP_EINVAL);
    d2.populate = SVMAP_POPULATE_AT_ALLOC;
    d2.tlb_entries = 0;
    EXPECT(svmap_svm_add_device(svm, &d2), SVMAP_EINVAL);
    d2.tlb_entries = 16;
    d2.name = NULL;
    EXPECT(svmap_svm_add_device(svm, &d2), SVMAP_EINVAL);
    d2.name = "hmm48";
    OK(svmap_svm_add_device(svm, &d2));
    EXPECT(svmap_svm_add_device(svm, NULL), SVMAP_EINVAL);
    CHECK(svmap_svm_device_count(svm) == 2);
    CHECK(svmap_svm_device_count(NULL) == 0);

    /* An SVM range on the 40-bit device: below 2^40 on both sides. */
    const char *gpu[] = {"gpu40"};
    uint64_t buf = 0;
    OK(svmap_svm_alloc(svm, 1 << 20, 0, gpu, 1, true, &buf));
    CHECK(buf != 0 && buf % 4096 == 0 && buf + (1 << 20) <= (1ull << 40));
    CHECK(svmap_svm_range_count(svm) == 1);
    CHECK(svmap_svm_range_count(NULL) == 0);
    uint64_t aligned = 0;
    OK(svmap_svm_alloc(svm, 4096, 1 << 21, gpu, 1, false, &aligned));
    CHECK(aligned % (1 << 21) == 0);
    uint64_t cpu_only = 0;
    OK(svmap_svm_alloc(svm, 4096, 0, NULL, 0, false, &cpu_only)); /* lowest: below 2^40 */
    const char *both[] = {"gpu40", "hmm48"};
    uint64_t shared = 0;
    OK(svmap_svm_alloc(svm, 8192, 0, both, 2, true, &shared));
    CHECK(svmap_svm_range_count(svm) == 4);

    EXPECT(svmap_svm_alloc(svm, 0, 0, gpu, 1, true, &buf), SVMAP_EINVAL);
    EXPECT(svmap_svm_alloc(svm, 4096, 3, gpu, 1, true, &buf), SVMAP_EINVAL);
    EXPECT(svmap_svm_alloc(svm, 1ull << 41, 0, gpu, 1, true, &buf), SVMAP_ENOMEM);
    EXPECT(svmap_svm_alloc(svm, 4096, 0, NULL, 1, true, &buf), SVMAP_EINVAL);
    const char *nope[] = {"nope"};
    EXPECT(svmap_svm_alloc(svm, 4096, 0, nope, 1, true, &buf), SVMAP_ENOENT);
    const char *null_name[] = {NULL};
    EXPECT(svmap_svm_alloc(svm, 4096, 0, null_name, 1, true, &buf), SVMAP_EINVAL);
    EXPECT(svmap_svm_alloc(svm, 4096, 0, gpu, 1, true, NULL), SVMAP_EINVAL);
    CHECK(svmap_svm_range_count(svm) == 4); /* nothing leaked by the failures */

    /* Device accesses: ok, or the fault kind. */
    OK(svmap_svm_device_access(svm, "gpu40", buf, true));
    OK(svmap_svm_device_access(svm, "gpu40", buf + 4096, false));
    EXPECT(svmap_svm_device_access(svm, "gpu40", 1ull << 40, false), SVMAP_FAULT_OUT_OF_RANGE);
    EXPECT(svmap_svm_device_access(svm, "gpu40", cpu_only, false), SVMAP_FAULT_UNMAPPED);
    CHECK(contains(svmap_last_error_message(), "unmapped"));
    OK(svmap_svm_device_access(svm, "hmm48", shared, true));
    EXPECT(svmap_svm_device_access(svm, "nope", buf, false), SVMAP_ENOENT);
    EXPECT(svmap_svm_device_access(svm, NULL, buf, false), SVMAP_EINVAL);
    EXPECT(svmap_svm_device_access(NULL, "gpu40", buf, false), SVMAP_EINVAL);

    /* Protection changes reach the device. */
    OK(svmap_svm_protect(svm, buf, 4096, SVMAP_PROT_READ));
    EXPECT(svmap_svm_device_access(svm, "gpu40", buf, true), SVMAP_FAULT_PROTECTION);
    OK(svmap_svm_device_access(svm, "gpu40", buf, false));
    OK(svmap_svm_protect(svm, buf, 4096, SVMAP_PROT_NONE));
    EXPECT(svmap_svm_device_access(svm, "gpu40", buf, false), SVMAP_FAULT_PROTECTION);
    OK(svmap_svm_protect(svm, buf, 4096, SVMAP_PROT_READ_WRITE));
    OK(svmap_svm_device_access(svm, "gpu40", buf, true));
    EXPECT(svmap_svm_protect(svm, buf, 4096, 5), SVMAP_EINVAL);
    EXPECT(svmap_svm_protect(svm, buf + 1, 4096, SVMAP_PROT_READ), SVMAP_EINVAL);
    EXPECT(svmap_svm_protect(svm, 0x10000000, 4096, SVMAP_PROT_READ), SVMAP_ENOMEM);

    /* Freeing invalidates the device: its next access faults. */
    OK(svmap_svm_dealloc(svm, buf));
    EXPECT(svmap_svm_device_access(svm, "gpu40", buf, false), SVMAP_FAULT_UNMAPPED);
    EXPECT(svmap_svm_dealloc(svm, buf), SVMAP_EINVAL);
    EXPECT(svmap_svm_dealloc(NULL, buf), SVMAP_EINVAL);
    CHECK(svmap_svm_range_count(svm) == 3);

    /* Device-only regions. */
    uint64_t ring = 0x1000000000ull; /* 64 GiB, below 2^40 */
    OK(svmap_svm_device_map(svm, "gpu40", ring, ring + 0x10000, SVMAP_CPU_FAULT));
    EXPECT(svmap_svm_device_map(svm, "gpu40", ring, ring + 0x1000, SVMAP_CPU_FAULT),
           SVMAP_EEXIST);
    EXPECT(svmap_svm_device_map(svm, "gpu40", ring + 0x20000, ring + 0x20001, SVMAP_CPU_FAULT),
           SVMAP_EINVAL);
    EXPECT(svmap_svm_device_map(svm, "gpu40", 1ull << 40, (1ull << 40) + 0x1000,
                                SVMAP_CPU_DUMMY_PAGE),
           SVMAP_EINVAL);
    EXPECT(svmap_svm_device_map(svm, "gpu40", ring + 0x20000, ring + 0x21000, 4), SVMAP_EINVAL);
    EXPECT(svmap_svm_device_map(svm, "nope", ring + 0x20000, ring + 0x21000, 0), SVMAP_ENOENT);
    OK(svmap_svm_device_map(svm, "hmm48", ring + 0x20000, ring + 0x21000, SVMAP_CPU_DUMMY_PAGE));
    OK(svmap_svm_device_access(svm, "gpu40", ring + 0x100, true));
    EXPECT(svmap_svm_cpu_map(svm, ring, ring + 0x1000, false), SVMAP_EEXIST);

    /* The CPU side: map, unmap, mmap, find. */
    OK(svmap_svm_cpu_map(svm, 0x40200000, 0x40300000, false));
    EXPECT(svmap_svm_cpu_map(svm, 0x40200000, 0x40201000, false), SVMAP_EEXIST);
    EXPECT(svmap_svm_cpu_map(svm, 0x40400000, 0x40400000, false), SVMAP_EINVAL);
    OK(svmap_svm_cpu_map(svm, 0x40500000, 0x40600000, true));
    svmap_unmapped_area_info_t info = {0};
    info.length = 0x1000;
    info.low_limit = 0x40200000;
    info.high_limit = 0x40400000;
    uint64_t addr = 0;
    OK(svmap_svm_find(svm, &info, &addr));
    CHECK(addr == 0x40300000);
    info.high_limit = 0x40300000;
    EXPECT(svmap_svm_find(svm, &info, &addr), SVMAP_ENOMEM);
    EXPECT(svmap_svm_find(svm, NULL, &addr), SVMAP_EINVAL);
    EXPECT(svmap_svm_find(svm, &info, NULL), SVMAP_EINVAL);
    svmap_mmap_request_t req = {0};
    req.length = 0x2000;
    OK(svmap_svm_cpu_mmap(svm, &req, &addr));
    CHECK(addr % 4096 == 0);
    req.hint = 0x40200000;
    req.fixed = SVMAP_MAP_FIXED_NOREPLACE;
    EXPECT(svmap_svm_cpu_mmap(svm, &req, &addr), SVMAP_EEXIST);
    req.fixed = 17;
    EXPECT(svmap_svm_cpu_mmap(svm, &req, &addr), SVMAP_EINVAL);
    EXPECT(svmap_svm_cpu_mmap(svm, NULL, &addr), SVMAP_EINVAL);
    OK(svmap_svm_cpu_unmap(svm, 0x40200000, 0x100000));
    EXPECT(svmap_svm_cpu_unmap(svm, 0x40200001, 0x1000), SVMAP_EINVAL);
    EXPECT(svmap_svm_cpu_unmap(svm, 0x40200000, 0), SVMAP_EINVAL);
    /* A CPU unmap of an SVM range reaches the devices too. */
    OK(svmap_svm_cpu_unmap(svm, shared, 0x2000));
    EXPECT(svmap_svm_device_access(svm, "hmm48", shared, false), SVMAP_FAULT_UNMAPPED);

    /* Memory above a device's limit is a clear, early error. */
    EXPECT(svmap_svm_check_addressable(svm, "gpu40", 1ull << 41, (1ull << 41) + 0x1000),
           SVMAP_ABOVE_DEVICE_LIMIT);
    CHECK(contains(svmap_last_error_message(), "gpu40"));
    OK(svmap_svm_check_addressable(svm, "gpu40", 0x40200000, 0x40201000));
    EXPECT(svmap_svm_check_addressable(svm, "nope", 0x200000, 0x201000), SVMAP_ENOENT);

    OK(svmap_svm_dealloc(svm, aligned));
    OK(svmap_svm_dealloc(svm, cpu_only));
    svmap_svm_delete(svm);
    svmap_svm_delete(NULL);
}

static void test_linux(void) {
    /* A window below 2^40. */
    svmap_reservation_t *res = svmap_reservation_new(40, 16 << 20);
    CHECK(res != NULL);
    uint64_t raddr = svmap_reservation_addr(res), rlen = svmap_reservation_len(res);
    CHECK(raddr != 0 && rlen == (16 << 20) && raddr + rlen <= (1ull << 40));
    CHECK(svmap_reservation_addr(NULL) == 0 && svmap_reservation_len(NULL) == 0);
    /* Something is mapped there now: an exact reservation over it fails. */
    CHECK(svmap_reservation_new_at(raddr, 4096) == NULL);
    CHECK(svmap_last_error_message()[0] != '\0');
    CHECK(svmap_reservation_new(70, 4096) == NULL);
    CHECK(contains(svmap_last_error_message(), "va_bits"));
    CHECK(svmap_reservation_new(40, 0) == NULL);
    svmap_reservation_delete(res);
    /* Freed: the exact range can be had again. */
    res = svmap_reservation_new_at(raddr, 1 << 20);
    CHECK(res != NULL && svmap_reservation_addr(res) == raddr);

    /* A heap in it: real memory below 2^40. */
    svmap_heap_t *heap = svmap_heap_new_in(res); /* takes `res` */
    CHECK(heap != NULL);
    CHECK(svmap_heap_addr(heap) == raddr && svmap_heap_len(heap) == (1 << 20));
    CHECK(svmap_heap_new_in(NULL) == NULL);
    void *p = NULL, *q = NULL;
    OK(svmap_heap_alloc(heap, 10000, 0, &p));
    CHECK(p != NULL && (uint64_t)p >= raddr && (uint64_t)p + 10000 <= raddr + (1 << 20));
    memset(p, 0xab, 10000);
    CHECK(((unsigned char *)p)[9999] == 0xab);
    OK(svmap_heap_alloc(heap, 4096, 1 << 16, &q));
    CHECK((uint64_t)q % (1 << 16) == 0);
    strcpy((char *)q, "shared virtual memory");
    CHECK(svmap_heap_live_count(heap) == 2);
    CHECK(svmap_heap_live_bytes(heap) == 12288 + 4096);
    EXPECT(svmap_heap_alloc(heap, 0, 0, &p), SVMAP_EINVAL);
    EXPECT(svmap_heap_alloc(heap, 4096, 3, &p), SVMAP_EINVAL);
    EXPECT(svmap_heap_alloc(heap, 2 << 20, 0, &p), SVMAP_ENOMEM);
    EXPECT(svmap_heap_alloc(heap, 4096, 0, NULL), SVMAP_EINVAL);

    /* The memfd behind a buffer: what a peer process maps. */
    int fd = -1;
    OK(svmap_heap_memfd(heap, q, &fd));
    CHECK(fd >= 0);
    struct stat st;
    CHECK(fstat(fd, &st) == 0 && st.st_size == 4096);
    char back[32] = {0};
    CHECK(pread(fd, back, 21, 0) == 21 && strcmp(back, "shared virtual memory") == 0);
    EXPECT(svmap_heap_memfd(heap, (char *)q + 4096, &fd), SVMAP_EINVAL);
    EXPECT(svmap_heap_memfd(heap, q, NULL), SVMAP_EINVAL);

    OK(svmap_heap_dealloc(heap, q));
    EXPECT(svmap_heap_dealloc(heap, q), SVMAP_EINVAL);
    EXPECT(svmap_heap_dealloc(heap, NULL), SVMAP_EINVAL);
    CHECK(svmap_heap_live_count(heap) == 1);
    svmap_heap_delete(heap); /* also frees the buffer at p */
    svmap_heap_delete(NULL);
    svmap_reservation_delete(NULL);

    heap = svmap_heap_new(40, 64 << 20);
    CHECK(heap != NULL);
    OK(svmap_heap_alloc(heap, 1 << 20, 0, &p));
    CHECK((uint64_t)p + (1 << 20) <= (1ull << 40));
    ((volatile char *)p)[(1 << 20) - 1] = 1;
    CHECK(svmap_heap_new(12, 4096) == NULL);
    svmap_heap_delete(heap);
    CHECK(svmap_heap_live_count(NULL) == 0 && svmap_heap_live_bytes(NULL) == 0);
    CHECK(svmap_heap_addr(NULL) == 0 && svmap_heap_len(NULL) == 0);
}

static void test_replay(void) {
    svmap_replay_summary_t sum;
    /* A recorded trace from a file, checked against its expect fields. */
    OK(svmap_replay_file(SVMAP_TEST_DATA_DIR "/svm-scenarios.jsonl", true, -1, -1, &sum));
    CHECK(sum.ops == 66 && sum.results == 51 && sum.checked == 51);
    CHECK(sum.mismatches == 0 && sum.exit_status == 0);
    EXPECT(svmap_replay_file(SVMAP_TEST_DATA_DIR "/no-such-trace.jsonl", false, -1, -1, &sum),
           SVMAP_ENOENT);
    EXPECT(svmap_replay_file(NULL, false, -1, -1, &sum), SVMAP_EINVAL);
    EXPECT(svmap_replay_file(SVMAP_TEST_DATA_DIR "/svm-scenarios.jsonl", false, -1, -1, NULL),
           SVMAP_EINVAL);

    /* From a buffer, with the result lines written to a pipe. */
    const char *trace =
        "# two mmaps, the second expecting the wrong address\n"
        "{\"op\": \"mmap\", \"length\": \"0x1000\", \"expect\": {\"addr\": \"0x7ffff7ffe000\"}}\n"
        "{\"op\": \"mmap\", \"length\": \"0x1000\", \"expect\": {\"addr\": \"0x1000\"}}\n";
    int fds[2];
    CHECK(pipe(fds) == 0);
    OK(svmap_replay_buffer(trace, strlen(trace), true, fds[1], -1, &sum));
    CHECK(sum.ops == 2 && sum.results == 2 && sum.checked == 2 && sum.mismatches == 1);
    CHECK(sum.exit_status == 1);
    close(fds[1]);
    char text[512] = {0};
    ssize_t n = read(fds[0], text, sizeof text - 1);
    close(fds[0]);
    CHECK(n > 0);
    CHECK(contains(text, "{\"line\": 2, \"op\": \"mmap\", \"addr\": \"0x7ffff7ffe000\"}"));
    CHECK(contains(text, "\"expected\""));
    CHECK(contains(text, "{\"summary\": {\"ops\": 2, \"results\": 2, \"checked\": 2, "
                         "\"mismatches\": 1}}"));
    OK(svmap_replay_buffer(trace, strlen(trace), false, -1, -1, &sum));
    CHECK(sum.checked == 0 && sum.exit_status == 0);

    /* A bad line stops the replay. */
    const char *bad = "{\"op\": \"mmap\", \"length\": \"0x1000\"}\n{\"op\": \"fly\"}\n";
    EXPECT(svmap_replay_buffer(bad, strlen(bad), false, -1, -1, &sum), SVMAP_EBADTRACE);
    CHECK(contains(svmap_last_error_message(), "line 2"));
    OK(svmap_replay_buffer(NULL, 0, false, -1, -1, &sum));
    CHECK(sum.ops == 0);
    EXPECT(svmap_replay_buffer(NULL, 5, false, -1, -1, &sum), SVMAP_EINVAL);
    EXPECT(svmap_replay_buffer(trace, strlen(trace), false, -7, -1, &sum), SVMAP_EINVAL);
}

struct node {
    uint64_t next;
    uint64_t value;
};

static void test_peer(void) {
    /* No peer: an ordinary process. */
    CHECK(svmap_peer_serve_from_env() == -1);
    CHECK(svmap_peer_spawn(NULL, NULL, 70, 1 << 20) == NULL);
    CHECK(contains(svmap_last_error_message(), "va_bits"));
    CHECK(svmap_peer_spawn("/nonexistent/svmap-peer", NULL, 40, 1 << 20) == NULL);

    /* This executable again, as the device peer (see main). */
    svmap_peer_t *peer = svmap_peer_spawn(NULL, NULL, 40, 16 << 20);
    CHECK(peer != NULL);
    CHECK(svmap_peer_pid(peer) != 0 && svmap_peer_pid(peer) != (uint32_t)getpid());
    uint64_t lo = 0, hi = 0;
    OK(svmap_peer_window(peer, &lo, &hi));
    CHECK(lo < hi && hi <= (1ull << 40));
    EXPECT(svmap_peer_window(peer, NULL, &hi), SVMAP_EINVAL);

    void *p = NULL;
    OK(svmap_peer_alloc(peer, 4 * sizeof(struct node), false, &p));
    CHECK((uint64_t)p >= lo && (uint64_t)p < hi);
    struct node *n = p;
    uint64_t h = 0xcbf29ce484222325ull;
    for (int i = 0; i < 4; i++) {
        n[i].value = 1000 + i;
        n[i].next = i < 3 ? (uint64_t)&n[i + 1] : 0;
        h = (h ^ n[i].value) * 0x100000001b3ull;
    }
    uint64_t count = 0, sum = 0, checksum = 0;
    OK(svmap_peer_walk_list(peer, p, 100, &count, &checksum));
    CHECK(count == 4 && checksum == h);
    OK(svmap_peer_sum_u64(peer, &n[0].value, 8, &sum));
    CHECK(sum == 1000);
    EXPECT(svmap_peer_walk_list(peer, p, 2, &count, &checksum), SVMAP_EINVAL); /* limit */
    EXPECT(svmap_peer_walk_list(peer, p, 100, NULL, &checksum), SVMAP_EINVAL);
    EXPECT(svmap_peer_sum_u64(peer, p, 8, NULL), SVMAP_EINVAL);

    void *ro = NULL;
    OK(svmap_peer_alloc(peer, 4096, true, &ro));
    EXPECT(svmap_peer_alloc(peer, 0, false, &ro), SVMAP_EINVAL);
    EXPECT(svmap_peer_alloc(peer, 4096, false, NULL), SVMAP_EINVAL);

    /* Freed: the device's next access faults. */
    OK(svmap_peer_dealloc(peer, p));
    EXPECT(svmap_peer_walk_list(peer, p, 100, &count, &checksum), SVMAP_FAULT_UNMAPPED);
    EXPECT(svmap_peer_dealloc(peer, p), SVMAP_EINVAL);
    EXPECT(svmap_peer_dealloc(NULL, p), SVMAP_EINVAL);
    CHECK(svmap_peer_pid(NULL) == 0);
    svmap_peer_delete(peer); /* also frees `ro` */
    svmap_peer_delete(NULL);
}

int main(void) {
    /* When svmap_peer_spawn(NULL, ...) re-runs this program as the device
     * peer, serve and exit. */
    int peer_status = svmap_peer_serve_from_env();
    if (peer_status >= 0) return peer_status;

    test_basics();
    test_space();
    test_svm();
    test_linux();
    test_replay();
    test_peer();
    printf("test_capi: %d checks passed\n", checks);
    return 0;
}
