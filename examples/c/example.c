/*
 * example.c: a tour of libsvmap from C.
 *
 *   1. a simulated address space: map, search for a gap, mmap;
 *   2. an SVM space with a 40-bit device: an SVM buffer at the same address
 *      on the CPU and the device, a device access, a free, and the fault
 *      that the device's next access gets;
 *   3. real memory of this process below 2^40, written through its pointer.
 *
 * Build (after installing, see README.md):
 *   cc example.c -o example $(pkg-config --cflags --libs svmap)
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <svmap.h>

/* Prints the failure and exits when a call does not return SVMAP_OK. */
static void check(svmap_status_t st, const char *what) {
    if (st != SVMAP_OK) {
        fprintf(stderr, "%s: %s: %s\n", what, svmap_status_name((int)st),
                svmap_last_error_message());
        exit(1);
    }
}

static void address_space(void) {
    printf("== 1. an address space\n");
    svmap_space_t *space = svmap_space_new(NULL); /* x86-64 defaults */
    if (!space) {
        fprintf(stderr, "svmap_space_new: %s\n", svmap_last_error_message());
        exit(1);
    }
    /* Two VMAs with a 1 MiB hole between them. */
    check(svmap_space_map(space, 0x400000, 0x500000, 0), "map");
    check(svmap_space_map(space, 0x600000, 0x700000, 0), "map");

    /* The kernel's vm_unmapped_area(): lowest 64 KiB gap above 4 MiB. */
    svmap_unmapped_area_info_t info = {0};
    info.length = 0x10000;
    info.low_limit = 0x400000;
    info.high_limit = 0x800000;
    uint64_t addr;
    check(svmap_space_unmapped_area(space, &info, &addr), "unmapped_area");
    printf("unmapped_area(64 KiB in [4 MiB, 8 MiB)) = 0x%" PRIx64 "\n", addr);

    /* An exact fit, 1 MiB aligned, highest first. */
    svmap_fit_request_t fit = {0};
    fit.length = 0x1000;
    fit.low = 0x400000;
    fit.high = 0x800000;
    fit.align = 0x100000;
    fit.topdown = true;
    check(svmap_space_find_fit(space, &fit, &addr), "find_fit");
    printf("find_fit(4 KiB, 1 MiB aligned, top-down) = 0x%" PRIx64 "\n", addr);

    /* What mmap(NULL, 2 MiB, ...) returns under the x86-64 policy. */
    svmap_mmap_request_t req = {0};
    req.length = 0x200000;
    check(svmap_space_mmap(space, &req, &addr), "mmap");
    printf("mmap(2 MiB) = 0x%" PRIx64 " (THP aligned), %zu VMAs\n", addr,
           svmap_space_vma_count(space));

    /* Errors come back as a status and a message. */
    svmap_status_t st = svmap_space_map(space, 0x4ff000, 0x501000, 0);
    printf("map over a VMA: %s (%s)\n", svmap_status_name((int)st), svmap_last_error_message());
    svmap_space_delete(space);
}

static void svm_space(void) {
    printf("== 2. SVM with a 40-bit device\n");
    svmap_svm_t *svm = svmap_svm_new(NULL);
    if (!svm) {
        fprintf(stderr, "svmap_svm_new: %s\n", svmap_last_error_message());
        exit(1);
    }
    svmap_device_config_t gpu;
    check(svmap_device_config_init(&gpu, "gpu", 40), "device_config_init");
    check(svmap_svm_add_device(svm, &gpu), "add_device");
    /* The device's ring buffer: a device-only region, fenced off on the CPU. */
    check(svmap_svm_device_map(svm, "gpu", 0x10000000, 0x10010000, SVMAP_CPU_FAULT),
          "device_map");

    const char *devices[] = {"gpu"};
    uint64_t buf;
    check(svmap_svm_alloc(svm, 4 << 20, 0, devices, 1, true, &buf), "svm_alloc");
    printf("svm_alloc(4 MiB) = 0x%" PRIx64 ": the same address on the CPU and the device, "
           "below 2^40\n", buf);
    check(svmap_svm_device_access(svm, "gpu", buf + 100, true), "device_access");
    printf("device write at 0x%" PRIx64 ": ok\n", buf + 100);

    check(svmap_svm_dealloc(svm, buf), "svm_dealloc");
    svmap_status_t st = svmap_svm_device_access(svm, "gpu", buf + 100, false);
    printf("after svm_dealloc, device read: %s (%s)\n", svmap_status_name((int)st),
           svmap_last_error_message());
    st = svmap_svm_device_access(svm, "gpu", 1ull << 40, false);
    printf("device read at 2^40: %s\n", svmap_status_name((int)st));
    svmap_svm_delete(svm);
}

struct node {
    struct node *next;
    int value;
};

static void real_memory(void) {
    printf("== 3. real memory below 2^40\n");
    svmap_heap_t *heap = svmap_heap_new(40, 64 << 20); /* reserve 64 MiB below 2^40 */
    if (!heap) {
        fprintf(stderr, "svmap_heap_new: %s\n", svmap_last_error_message());
        exit(1);
    }
    printf("heap window [0x%" PRIx64 ", 0x%" PRIx64 ")\n", svmap_heap_addr(heap),
           svmap_heap_addr(heap) + svmap_heap_len(heap));
    void *p;
    check(svmap_heap_alloc(heap, 1 << 20, 0, &p), "heap_alloc");
    /* A pointer-linked list inside the buffer: the pointers mean the same
     * thing to a device that maps the buffer at the same address. */
    struct node *nodes = p;
    for (int i = 0; i < 4; i++) {
        nodes[i].value = i * 10;
        nodes[i].next = i < 3 ? &nodes[i + 1] : NULL;
    }
    int sum = 0;
    for (struct node *n = nodes; n; n = n->next) sum += n->value;
    int fd;
    check(svmap_heap_memfd(heap, p, &fd), "heap_memfd");
    printf("buffer at %p (below 2^40: %s), list sum %d, memfd %d for a peer\n", p,
           (uint64_t)(uintptr_t)p + (1 << 20) <= (1ull << 40) ? "yes" : "no", sum, fd);
    check(svmap_heap_dealloc(heap, p), "heap_dealloc");
    svmap_heap_delete(heap);
}

int main(void) {
    printf("libsvmap %s\n", svmap_version());
    address_space();
    svm_space();
    real_memory();
    return 0;
}
