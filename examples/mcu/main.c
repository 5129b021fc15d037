/* Train a budgetplan C library on an emulated Cortex-M7 (or on this machine): four
 * samples made here, two classes (horizontal and vertical stripes), a few epochs of
 * one-sample steps; prints the mean loss of each epoch. See README.md beside this file. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "bp_model.h"

#ifndef SAMPLES /* make SAMPLES=2 sets it: one of each class */
#define SAMPLES 4
#endif
#ifndef EPOCHS /* make EPOCHS=3 sets it */
#define EPOCHS 6
#endif
#define SIDE 128 /* the default plan's input: 3 x 128 x 128 */

#ifdef __arm__
extern void initialise_monitor_handles(void);
int main(void);

void SystemInit(void) { /* the FPU on before the first float instruction */
    *(volatile uint32_t *)0xE000ED88 |= 0xFu << 20;
    __asm volatile("dsb\n\tisb" ::: "memory");
}

void board_start(void) { /* the startup file calls this once .data and .bss are set up */
    initialise_monitor_handles(); /* printf through semihosting */
    exit(main());
}
#endif

static void load_sample(int index) { /* stripes: class = index % 2, phase = index / 2 */
    int vertical = index % 2, phase = index / 2;
    float row[SIDE]; /* one row at a time: the library stores it as its profile says (int8 or float32) */
    for (int c = 0; c < 3; c++)
        for (int h = 0; h < SIDE; h++) {
            for (int w = 0; w < SIDE; w++) {
                int along = vertical ? w : h;
                row[w] = ((along / 8 + phase) % 2) ? 1.0f : -1.0f;
            }
            bp_load_input((size_t)(c * SIDE + h) * SIDE, row, SIDE);
        }
}

int main(void) {
    if (BP_INPUT_ELEMENTS != 3 * SIDE * SIDE || BP_BATCH != 1) {
        printf("this example trains a 3x%dx%d input with batch 1\n", SIDE, SIDE);
        return 1;
    }
    bp_paint_arena();
    for (int epoch = 0; epoch < EPOCHS; epoch++) {
        float total = 0.0f;
        for (int i = 0; i < SAMPLES; i++) {
            int label = i % 2;
            load_sample(i);
            total += bp_train_step(&label, 0.05f);
        }
        printf("epoch %d: mean loss %.4f\n", epoch, (double)(total / SAMPLES));
    }
    printf("arena used: %lu of %lu bytes\n", (unsigned long)bp_arena_high_water(), (unsigned long)BP_ARENA_BYTES);
    return 0;
}
