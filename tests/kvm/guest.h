/* SPDX-License-Identifier: MIT */
/* Shared between the freestanding guest and the host-side tests. */
#ifndef QLITE_TEST_GUEST_H
#define QLITE_TEST_GUEST_H

#define GUEST_UCALL_PORT 0xf0 /* outl: ucall code */
#define GUEST_UCALL_ARG_PORT 0xf4 /* outl: argument, latched before the code */
#define GUEST_TESTDEV_PORT 0x500 /* 16-byte PIO test device */
#define GUEST_TESTDEV_MMIO 0xd0000000ULL /* 4 KiB MMIO test device */
#define GUEST_SHARED_ADDR 0x300000ULL /* page the host can inspect */
#define GUEST_STACK_TOP 0x400000ULL /* per vCPU: top - id * 64 KiB */
#define GUEST_STACK_SIZE 0x10000ULL

enum guest_test {
	GT_PIO_MMIO = 1,
	GT_SERIAL,
	GT_SMP,
	GT_TRIPLE_FAULT,
	GT_COUNT_FOREVER,
	GT_HALT_DEAD, /* cli; hlt: nothing can wake it */
	GT_HALT_IDLE, /* sti; hlt on vCPU 0: idle, not dead */
	GT_PROFILE_SPLIT, /* known 70/30 split between two functions, plus halted time */
	GT_EXIT_LOOP, /* shared[EXIT_LOOP_COUNT] PIO exits to the test device */
	GT_CPU_WORK, /* pure CPU work, no exits: progress in shared[CW_PROGRESS(cpu)] */
	GT_CKPT_SUM, /* rounds of rewriting and checksumming 24 MiB; "RESULT x" on COM1 */
	GT_STATE_WORK, /* checkpoint/restore: deterministic work, timer, kvmclock (SW_*) */
	GT_MIGRATE_SUM, /* GT_CKPT_SUM for more rounds (MG_*); "RESULT x" on COM1 */
};

/*
 * GT_CKPT_SUM: the buffer, its size, the shared[] slot counting finished
 * rounds and the number of rounds. One page in eight stays zero, so a
 * checkpoint has zero pages to skip.
 */
#define CK_BUF 0x800000ULL
#define CK_BUF_SIZE (256ULL << 10)
#define CK_ROUND 40
#define CK_ROUNDS 12

/*
 * GT_MIGRATE_SUM: GT_CKPT_SUM's buffer and pattern, rewritten for more
 * rounds, each lasting at least MG_ROUND_CYCLES, so that pages keep
 * getting dirtied while migrations run;
 * a "round N" line every MG_PRINT_EVERY rounds, the round count in
 * shared[MG_ROUND]. The RESULT depends on no timing.
 */
#define MG_ROUND 42
#define MG_ROUNDS 32
#define MG_PRINT_EVERY 1
/*
 * The least TSC cycles a round takes (~0.2 s at 2.7 GHz): on real KVM the
 * work itself is microseconds, on kvm-pvm ~0.45 s (a first write to a page
 * exits there).
 */
#define MG_ROUND_CYCLES (1ULL << 29)

/*
 * GT_PROFILE_SPLIT's shared page: the host sets [PS_STOP]; the guest keeps
 * its own account (TSC cycles) after every round, the truth the profile is
 * checked against.
 */
enum profile_split_shared {
	PS_STOP = 2,
	PS_CYCLES_A, /* in prof_hot_a */
	PS_CYCLES_B, /* in prof_hot_b */
	PS_CYCLES_IDLE, /* in prof_idle (mostly halted) */
	PS_ROUNDS,
	PS_ITERS_A, /* loop iterations per round: the known split, 70:30 */
	PS_ITERS_B,
};

/* GT_EXIT_LOOP's shared[] slots: the count, a go flag from the host, TSC cycles taken. */
#define EXIT_LOOP_COUNT 10
#define EXIT_LOOP_GO 11
#define EXIT_LOOP_CYCLES 12

/*
 * GT_CPU_WORK's shared[] slots: units of work done per vCPU (each on its
 * own cache line), a stop flag from the host. A unit is CW_UNIT_ITERS
 * rounds of a register-only hash, then one store of the count.
 */
#define CW_STOP 20
#define CW_SINK 21
#define CW_PROGRESS(cpu) (32 + 8 * (cpu))
#define CW_UNIT_ITERS 50

/*
 * GT_STATE_WORK's shared[] slots. Each vCPU sets distinct MSRs and debug
 * registers, moves its TSC hours ahead, enables kvmclock and steal time where KVM offers them and
 * runs its LAPIC timer, then does SW_UNITS units of a hash kept in
 * general registers, and if the host sets SW_FPU in x87, SSE and (where
 * the CPU has AVX) YMM registers too; halfway it waits,
 * halted, until the host sets SW_GO. The result depends on no timing: a
 * checkpointed run must end with the same SW_RESULT as an uninterrupted
 * one. The guest checks that its TSC and kvmclock never go backwards and
 * logs its kvmclock after each unit (SW_LOG: a restore that lets the
 * checkpoint's age show makes a big step); at the end it checks its MSRs
 * and debug registers and waits for three more timer ticks.
 */
#define SW_GO 20
#define SW_DONE_CPUS 21
#define SW_FPU 22
#define SW_SLOT(cpu, n) (32 + 8 * (cpu) + (n))
#define SW_PROGRESS(cpu) SW_SLOT(cpu, 0) /* units done */
#define SW_RESULT(cpu) SW_SLOT(cpu, 1)
#define SW_KVMCLOCK(cpu) SW_SLOT(cpu, 3) /* MSR_KVM_SYSTEM_TIME_NEW written, 0: none */
#define SW_STEAL(cpu) SW_SLOT(cpu, 4) /* MSR_KVM_STEAL_TIME written, 0: none */
#define SW_TICKS(cpu) SW_SLOT(cpu, 5) /* timer interrupts taken */
#define SW_FPU_USED(cpu) SW_SLOT(cpu, 6) /* 0: none, 1: x87 and SSE, 2: and AVX */
#define SW_UNITS 400
#define SW_UNIT_ITERS 1000
/* kvmclock ns after each unit, a page per vCPU (below the stacks) */
#define SW_LOG_ADDR 0x301000ULL
#define SW_LOG(cpu) ((volatile uint64_t *)(SW_LOG_ADDR + 0x1000ULL * (cpu)))

/* A round: 70 % of this many TSC cycles in prof_hot_a, 30 % in prof_hot_b. */
#define PS_ROUND_CYCLES 50000000ULL
#define PS_CALIBRATE 20000 /* iterations timed to size the rounds */

enum guest_ucall {
	UC_VALUE = 1, /* report a value (argument) */
	UC_DONE, /* a vCPU finished its part */
	UC_FAIL, /* guest-side check failed: argument = line */
};

#endif
