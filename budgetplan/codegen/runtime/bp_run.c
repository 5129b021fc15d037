/* budgetplan: run training steps from a file and write the parameters after them.
 * bp_batches.bin: int32 steps, float32 lr, then per step BP_BATCH samples of
 * BP_INPUT_ELEMENTS float32 and BP_BATCH int32 labels. Writes bp_params.bin (every
 * parameter's real values, float32, in bp_param_at order) and prints the loss of each step and the
 * arena's high-water mark; built with BP_BOARD, for a Cortex-M through semihosting, also
 * the stack's. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "bp_model.h"

#ifdef BP_BOARD
#define STACK_PAINT 0xC5C5C5C5u
extern uint32_t __StackLimit[], __StackTop[];

void SystemInit(void) { /* the FPU on (CP10, CP11 full access) before any float instruction */
#ifdef __ARM_FP
    *(volatile uint32_t *)0xE000ED88 |= 0xFu << 20;
    __asm volatile("dsb\n\tisb" ::: "memory");
#endif
}

extern void initialise_monitor_handles(void);
int main(void);

void bp_board_start(void) { /* from the startup file, after .data and .bss are set up */
    initialise_monitor_handles();
    exit(main());
}

static void paint_stack(void) { /* every word below this frame, less a margin, to the stack's limit */
    volatile uint32_t here = 0;
    for (volatile uint32_t *p = __StackLimit; p < (uint32_t *)&here - 16; p++) *p = STACK_PAINT;
}

static unsigned long stack_high_water(void) {
    uint32_t *p = __StackLimit;
    while (p < __StackTop && *p == STACK_PAINT) p++;
    return (unsigned long)((char *)__StackTop - (char *)p);
}
#endif

static int read_all(FILE *f, void *to, size_t bytes) { return fread(to, 1, bytes, f) == bytes; }

#define CHUNK 256
static float chunk[CHUNK]; /* the input passes through this, stored as the model stores it */

static int read_input(FILE *f) {
    size_t total = (size_t)BP_BATCH * BP_INPUT_ELEMENTS;
    for (size_t at = 0; at < total; at += CHUNK) {
        size_t n = total - at < CHUNK ? total - at : CHUNK;
        if (!read_all(f, chunk, sizeof(float) * n)) return 0;
        bp_load_input(at, chunk, n);
    }
    return 1;
}

int main(void) {
#ifdef BP_BOARD
    paint_stack();
#endif
    FILE *in = fopen("bp_batches.bin", "rb");
    int steps = 0, labels[BP_BATCH];
    float lr = 0.0f;
    if (!in || !read_all(in, &steps, sizeof steps) || !read_all(in, &lr, sizeof lr)) {
        printf("bp_run: cannot read bp_batches.bin\n");
        return 1;
    }
    bp_paint_arena();
    for (int s = 0; s < steps; s++) {
        if (!read_input(in) || !read_all(in, labels, sizeof labels)) {
            printf("bp_run: bp_batches.bin ends before step %d\n", s);
            return 1;
        }
        printf("step %d loss %.6f\n", s, (double)bp_train_step(labels, lr));
    }
    fclose(in);
#ifdef BP_BOARD
    printf("stack %lu\n", stack_high_water());
#endif
    printf("arena %lu of %lu bytes\n", (unsigned long)bp_arena_high_water(), (unsigned long)BP_ARENA_BYTES);
    FILE *out = fopen("bp_params.bin", "wb");
    if (!out) return 1;
    for (int i = 0; i < BP_PARAMS; i++)
        for (int j = 0; j < bp_param_size(i); j += CHUNK) {
            int n = bp_param_size(i) - j < CHUNK ? bp_param_size(i) - j : CHUNK;
            for (int e = 0; e < n; e++) chunk[e] = bp_param_at(i, j + e);
            fwrite(chunk, sizeof(float), (size_t)n, out);
        }
    fclose(out);
    return 0;
}
