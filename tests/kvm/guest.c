// SPDX-License-Identifier: MIT
/*
 * Freestanding guest code for the kvm tests; runs in 64-bit mode with the
 * loader's identity map. Entered at guest_entry(test, cpu) on every vCPU.
 */
#include <stdint.h>

#include "guest.h"

#define MAX(a, b) ((a) > (b) ? (a) : (b))

static inline void outb(uint16_t port, uint8_t v)
{
	__asm__ volatile("outb %0, %1" ::"a"(v), "Nd"(port));
}

static inline void outw(uint16_t port, uint16_t v)
{
	__asm__ volatile("outw %0, %1" ::"a"(v), "Nd"(port));
}

static inline void outl(uint16_t port, uint32_t v)
{
	__asm__ volatile("outl %0, %1" ::"a"(v), "Nd"(port));
}

static inline uint8_t inb(uint16_t port)
{
	uint8_t v;

	__asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
	return v;
}

static inline uint16_t inw(uint16_t port)
{
	uint16_t v;

	__asm__ volatile("inw %1, %0" : "=a"(v) : "Nd"(port));
	return v;
}

static inline uint32_t inl(uint16_t port)
{
	uint32_t v;

	__asm__ volatile("inl %1, %0" : "=a"(v) : "Nd"(port));
	return v;
}

static void ucall(uint32_t code, uint32_t arg)
{
	outl(GUEST_UCALL_ARG_PORT, arg);
	outl(GUEST_UCALL_PORT, code);
}

#define GUEST_ASSERT(c)                                  \
	do {                                             \
		if (!(c))                                \
			ucall(UC_FAIL, __LINE__);        \
	} while (0)

/* ACPI S5: what a Linux guest's poweroff does. */
static void __attribute__((noreturn)) poweroff(void)
{
	outw(0x604, (5 << 10) | (1 << 13));
	for (;;)
		__asm__ volatile("hlt");
}

static void test_pio_mmio(void)
{
	volatile uint8_t *m8 = (volatile uint8_t *)GUEST_TESTDEV_MMIO;
	volatile uint16_t *m16 = (volatile uint16_t *)(GUEST_TESTDEV_MMIO + 0x10);
	volatile uint32_t *m32 = (volatile uint32_t *)(GUEST_TESTDEV_MMIO + 0x20);
	volatile uint64_t *m64 = (volatile uint64_t *)(GUEST_TESTDEV_MMIO + 0x40);

	/* PIO: the device stores what is written and returns it. */
	outb(GUEST_TESTDEV_PORT, 0x5a);
	GUEST_ASSERT(inb(GUEST_TESTDEV_PORT) == 0x5a);
	outw(GUEST_TESTDEV_PORT + 2, 0xbeef);
	GUEST_ASSERT(inw(GUEST_TESTDEV_PORT + 2) == 0xbeef);
	outl(GUEST_TESTDEV_PORT + 4, 0xdeadbeef);
	GUEST_ASSERT(inl(GUEST_TESTDEV_PORT + 4) == 0xdeadbeef);
	/* Crossing the device's last byte: not dispatched, floating bus. */
	GUEST_ASSERT(inl(GUEST_TESTDEV_PORT + 14) == 0xffffffff);
	/* Nothing at this port at all. */
	GUEST_ASSERT(inl(0x5f0) == 0xffffffff);

	*m8 = 0x11;
	GUEST_ASSERT(*m8 == 0x11);
	*m16 = 0x2233;
	GUEST_ASSERT(*m16 == 0x2233);
	*m32 = 0x44556677;
	GUEST_ASSERT(*m32 == 0x44556677);
	*m64 = 0x8899aabbccddeeffULL;
	GUEST_ASSERT(*m64 == 0x8899aabbccddeeffULL);
	/* Unmapped MMIO reads all ones. */
	GUEST_ASSERT(*(volatile uint32_t *)(GUEST_TESTDEV_MMIO + 0x10000) == 0xffffffff);
	ucall(UC_VALUE, inl(GUEST_TESTDEV_PORT + 4));
}

#define COM1 0x3f8

static void serial_putc(char c)
{
	while (!(inb(COM1 + 5) & 0x20))
		;
	outb(COM1, (uint8_t)c);
}

static void test_serial(void)
{
	const char *msg = "hello from the guest\n";
	uint8_t iir;
	int n = 0;

	/* Program it the way a driver does: 115200 8N1, FIFO on. */
	outb(COM1 + 3, 0x80);
	outb(COM1 + 0, 0x01);
	outb(COM1 + 1, 0x00);
	outb(COM1 + 3, 0x03);
	GUEST_ASSERT(inb(COM1 + 3) == 0x03);
	outb(COM1 + 2, 0x07);
	GUEST_ASSERT((inb(COM1 + 2) & 0xc0) == 0xc0); /* 16550A FIFO */
	outb(COM1 + 7, 0xa5);
	GUEST_ASSERT(inb(COM1 + 7) == 0xa5); /* scratch */

	/* THRE interrupt: raised when enabled, acknowledged by reading IIR. */
	outb(COM1 + 1, 0x02);
	iir = inb(COM1 + 2);
	GUEST_ASSERT((iir & 0x0f) == 0x02);
	GUEST_ASSERT((inb(COM1 + 2) & 0x0f) == 0x01);
	outb(COM1 + 1, 0x00);

	/* Loopback, as Linux's 8250 probe checks it. */
	outb(COM1 + 4, 0x1a);
	GUEST_ASSERT((inb(COM1 + 6) & 0xf0) == 0x90);
	outb(COM1 + 4, 0x0b);

	while (*msg)
		serial_putc(*msg++);

	/* Echo host input upper-cased until a newline. */
	ucall(UC_VALUE, 1); /* ready for input */
	for (;;) {
		char c;

		while (!(inb(COM1 + 5) & 0x01))
			;
		c = (char)inb(COM1);
		if (c >= 'a' && c <= 'z')
			c = (char)(c - 'a' + 'A');
		serial_putc(c);
		if (c == '\n' || ++n > 200)
			break;
	}
}

static volatile uint64_t smp_total __attribute__((aligned(64)));
static volatile uint32_t smp_done;

static void test_smp(uint32_t cpu)
{
	uint64_t i, mine = 0;

	for (i = 0; i < 1000000; i++) {
		mine++;
		if ((i & 0xff) == 0)
			__atomic_fetch_add(&smp_total, 256, __ATOMIC_RELAXED);
	}
	ucall(UC_VALUE, (uint32_t)mine);
	if (__atomic_add_fetch(&smp_done, 1, __ATOMIC_SEQ_CST) == 1) {
		/* The first one done reports the total once everyone is done. */
		ucall(UC_DONE, cpu);
	}
}

static void test_triple_fault(void)
{
	static const struct {
		uint16_t limit;
		uint64_t base;
	} __attribute__((packed)) empty_idt = { 0, 0 };

	__asm__ volatile("lidt %0; int3" ::"m"(empty_idt));
}

/* ---- GT_PROFILE_SPLIT ------------------------------------------------ */

#define APIC_BASE 0xfee00000ULL
#define APIC_EOI 0xb0
#define APIC_SVR 0xf0
#define APIC_LVT_TIMER 0x320
#define APIC_TIMER_INIT 0x380
#define APIC_TIMER_DIV 0x3e0
#define TIMER_VECTOR 0x40
/*
 * KVM's APIC timer runs at 1 GHz: 10 ms. Only to end the halts; faster ticks
 * cost guest time in the handler (its EOI is an exit: expensive when nested
 * under TCG) that belongs to neither hot function.
 */
#define TIMER_COUNT 10000000

struct idt_gate {
	uint16_t off0, sel;
	uint8_t ist, type;
	uint16_t off1;
	uint32_t off2, zero;
} __attribute__((packed));

static struct idt_gate idt[256] __attribute__((aligned(16)));
volatile uint64_t guest_ticks;

/* The LAPIC timer wakes the idle HLTs; any other vector just returns. */
void guest_timer_isr(void);
void guest_default_isr(void);
__asm__(".text\n"
	".globl guest_timer_isr\n"
	"guest_timer_isr:\n"
	"	push %rax\n"
	"	movabs $0xfee000b0, %rax\n"
	"	movl $0, (%rax)\n"
	"	lock incq guest_ticks(%rip)\n"
	"	pop %rax\n"
	"	iretq\n"
	".globl guest_default_isr\n"
	"guest_default_isr:\n"
	"	iretq\n");

static inline uint64_t rdtsc(void)
{
	uint32_t lo, hi;

	__asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
	return ((uint64_t)hi << 32) | lo;
}

static void lapic_write(uint32_t reg, uint32_t v)
{
	*(volatile uint32_t *)(APIC_BASE + reg) = v;
}

static void idt_set(unsigned int vec, void (*fn)(void), uint16_t cs)
{
	uint64_t a = (uint64_t)fn;

	idt[vec] = (struct idt_gate){ .off0 = (uint16_t)a,
				      .sel = cs,
				      .type = 0x8e, /* present, 64-bit interrupt gate */
				      .off1 = (uint16_t)(a >> 16),
				      .off2 = (uint32_t)(a >> 32) };
}

static void timer_setup(void)
{
	struct {
		uint16_t limit;
		uint64_t base;
	} __attribute__((packed)) idtr = { sizeof(idt) - 1, (uint64_t)idt };
	uint16_t cs;
	unsigned int v;

	__asm__ volatile("mov %%cs, %0" : "=r"(cs));
	for (v = 32; v < 256; v++)
		idt_set(v, guest_default_isr, cs);
	idt_set(TIMER_VECTOR, guest_timer_isr, cs);
	__asm__ volatile("lidt %0" ::"m"(idtr));
	lapic_write(APIC_SVR, 0x1ff); /* software-enable, spurious vector 0xff */
	lapic_write(APIC_TIMER_DIV, 0xb); /* divide by 1 */
	lapic_write(APIC_LVT_TIMER, TIMER_VECTOR | (1u << 17)); /* periodic */
	lapic_write(APIC_TIMER_INIT, TIMER_COUNT);
	__asm__ volatile("sti");
}

/*
 * The two known hot functions: the same loop, so time is proportional to
 * iterations. noipa keeps GCC from folding them into one (identical code
 * folding would give both one address).
 */
void __attribute__((noinline, noipa)) prof_hot_a(uint64_t n)
{
	__asm__ volatile("1: dec %0; jnz 1b" : "+r"(n));
}

void __attribute__((noinline, noipa)) prof_hot_b(uint64_t n)
{
	__asm__ volatile("1: dec %0; jnz 1b" : "+r"(n));
}

/* Halted until the TSC passes @end (woken by the 10 ms LAPIC timer). */
void __attribute__((noinline, noipa)) prof_idle(uint64_t end)
{
	while (rdtsc() < end)
		__asm__ volatile("sti; hlt" ::: "memory");
}

static void test_profile_split(volatile uint64_t *shared)
{
	volatile uint8_t *mmio = (volatile uint8_t *)GUEST_TESTDEV_MMIO;
	uint64_t a = 0, b = 0, idle = 0, rounds = 0, t, per_iter, iters_a, iters_b;

	/*
	 * Size a round in TSC cycles, not iterations: the loop runs at very
	 * different speeds natively, on kvm-pvm and nested under TCG.
	 */
	prof_hot_a(PS_CALIBRATE / 10); /* warm up (TCG translates on first use) */
	prof_hot_b(PS_CALIBRATE / 10);
	t = rdtsc();
	prof_hot_a(PS_CALIBRATE);
	per_iter = (rdtsc() - t) / PS_CALIBRATE + 1;
	iters_a = MAX(PS_ROUND_CYCLES * 7 / 10 / per_iter, 70);
	iters_b = MAX(PS_ROUND_CYCLES * 3 / 10 / per_iter, 30);
	iters_a = iters_b * 7 / 3; /* exactly 70:30 up to rounding */
	shared[PS_ITERS_A] = iters_a;
	shared[PS_ITERS_B] = iters_b;
	timer_setup();
	while (!shared[PS_STOP]) {
		uint64_t t0 = rdtsc(), t1, t2, t3;

		prof_hot_a(iters_a);
		t1 = rdtsc();
		prof_hot_b(iters_b);
		t2 = rdtsc();
		/* Some device exits for the accounting to attribute. */
		outb(GUEST_TESTDEV_PORT, (uint8_t)rounds);
		*mmio = (uint8_t)rounds;
		/* Halted for 2/3 of the work time: about 40 % idle overall. */
		prof_idle(t2 + (t2 - t0) * 2 / 3);
		t3 = rdtsc();
		a += t1 - t0;
		b += t2 - t1;
		idle += t3 - t2;
		shared[PS_CYCLES_A] = a;
		shared[PS_CYCLES_B] = b;
		shared[PS_CYCLES_IDLE] = idle;
		shared[PS_ROUNDS] = ++rounds;
	}
	__asm__ volatile("cli");
	lapic_write(APIC_LVT_TIMER, 1u << 16); /* masked */
}

/*
 * Pure CPU work for the sampling-overhead benchmark: no exits, no
 * interrupts, until the host sets the stop flag; the host reads the rate
 * of progress. vCPU 0 powers off once the others have stopped.
 */
static volatile uint64_t cw_stopped;

static void test_cpu_work(volatile uint64_t *shared, uint64_t cpu)
{
	uint64_t x = 0x9e3779b97f4a7c15ULL + cpu, units = 0, i;

	while (!shared[CW_STOP]) {
		for (i = 0; i < CW_UNIT_ITERS; i++) {
			x ^= x << 13;
			x ^= x >> 7;
			x ^= x << 17;
		}
		shared[CW_PROGRESS(cpu)] = ++units;
	}
	shared[CW_SINK] ^= x; /* keep the work */
	__atomic_fetch_add(&cw_stopped, 1, __ATOMIC_SEQ_CST);
}

/* Back-to-back PIO exits, once the host says go: the cost of one exit. */
static void test_exit_loop(volatile uint64_t *shared)
{
	uint64_t i, n = shared[EXIT_LOOP_COUNT], t0;

	while (!shared[EXIT_LOOP_GO])
		__asm__ volatile("pause");
	t0 = rdtsc();
	for (i = 0; i < n; i++)
		outb(GUEST_TESTDEV_PORT, (uint8_t)i);
	shared[EXIT_LOOP_CYCLES] = rdtsc() - t0;
}

static void serial_puts(const char *s)
{
	while (*s)
		serial_putc(*s++);
}

static void serial_puthex(uint64_t v)
{
	char buf[17];
	int i;

	for (i = 15; i >= 0; i--, v >>= 4)
		buf[i] = "0123456789abcdef"[v & 15];
	buf[16] = 0;
	serial_puts(buf);
}

/*
 * Deterministic work over a buffer, @rounds rewrites and checksums of it,
 * each at least MG_ROUND_CYCLES long (the work alone is microseconds on
 * real KVM); the round count goes to shared[@slot]. A checkpoint or a
 * migration taken between rounds must end with the same RESULT.
 */
static void sum_rounds(volatile uint64_t *shared, unsigned int slot, unsigned int rounds,
		       unsigned int print_every)
{
	uint64_t *buf = (uint64_t *)CK_BUF, n = CK_BUF_SIZE / 8, i, x = 0x9e3779b97f4a7c15ULL;
	uint64_t sum = 0, t0 = rdtsc();
	unsigned int round;

	for (i = 0; i < n; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		buf[i] = (i / 512) % 8 == 3 ? 0 : x;
	}
	for (round = 0; round < rounds; round++) {
		for (i = 0; i < n; i++) {
			if ((i / 512) % 8 == 3)
				continue;
			buf[i] = buf[i] * 6364136223846793005ULL + round + 1;
			sum = (sum << 7 | sum >> 57) ^ buf[i];
		}
		while (rdtsc() - t0 < MG_ROUND_CYCLES)
			__asm__ volatile("pause");
		t0 = rdtsc();
		shared[slot] = round + 1;
		if ((round + 1) % print_every == 0) {
			serial_puts("round ");
			serial_puthex(round + 1);
			serial_puts("\n");
		}
	}
	serial_puts("RESULT ");
	serial_puthex(sum);
	serial_puts("\n");
}

/* ---- GT_STATE_WORK --------------------------------------------------- */

#define MSR_IA32_TSC 0x10
#define MSR_IA32_SYSENTER_ESP 0x175
#define MSR_PAT 0x277
#define MSR_STAR 0xc0000081
#define MSR_LSTAR 0xc0000082
#define MSR_CSTAR 0xc0000083
#define MSR_SFMASK 0xc0000084
#define MSR_KERNEL_GS_BASE 0xc0000102
#define MSR_TSC_AUX 0xc0000103
#define MSR_KVM_SYSTEM_TIME_NEW 0x4b564d01
#define MSR_KVM_STEAL_TIME 0x4b564d03
#define KVM_FEATURE_CLOCKSOURCE2 3
#define KVM_FEATURE_STEAL_TIME 5
#define SW_TIMER_VECTOR 0x41
#define SW_TIMER_COUNT 2000000 /* 2 ms */
#define SW_DR7 0x00110400ULL /* RW0 = RW1 = write, no breakpoint enabled */
#define SW_TSC_BASE (1ULL << 44) /* hours of TSC cycles */

struct pvclock {
	uint32_t version, pad0;
	uint64_t tsc_timestamp, system_time;
	uint32_t mul;
	int8_t shift;
	uint8_t flags, pad[2];
};

static struct pvclock sw_pvclock[64] __attribute__((aligned(64)));
static uint64_t sw_steal[64][8] __attribute__((aligned(64)));
volatile uint64_t sw_ticks[64];

/* Counts this vCPU's ticks (its APIC id is its index). */
void sw_timer_isr(void);
__asm__(".text\n"
	".globl sw_timer_isr\n"
	"sw_timer_isr:\n"
	"	push %rax\n"
	"	push %rcx\n"
	"	movabs $0xfee00020, %rax\n"
	"	movl (%rax), %ecx\n"
	"	shrl $24, %ecx\n"
	"	andl $63, %ecx\n"
	"	leaq sw_ticks(%rip), %rax\n"
	"	lock incq (%rax,%rcx,8)\n"
	"	movabs $0xfee000b0, %rax\n"
	"	movl $0, (%rax)\n"
	"	pop %rcx\n"
	"	pop %rax\n"
	"	iretq\n");

static inline uint64_t rdmsr(uint32_t msr)
{
	uint32_t lo, hi;

	__asm__ volatile("rdmsr" : "=a"(lo), "=d"(hi) : "c"(msr));
	return ((uint64_t)hi << 32) | lo;
}

static inline void wrmsr(uint32_t msr, uint64_t v)
{
	__asm__ volatile("wrmsr" ::"c"(msr), "a"((uint32_t)v), "d"((uint32_t)(v >> 32)));
}

static inline void cpuid(uint32_t leaf, uint32_t sub, uint32_t r[4])
{
	__asm__ volatile("cpuid"
			 : "=a"(r[0]), "=b"(r[1]), "=c"(r[2]), "=d"(r[3])
			 : "a"(leaf), "c"(sub));
}

static uint64_t rotl(uint64_t x, unsigned int n)
{
	return (x << n) | (x >> (64 - n));
}

/* What each vCPU writes, and checks at the end: distinct per vCPU. */
static uint64_t sw_msr_value(uint32_t msr, uint64_t cpu)
{
	switch (msr) {
	case MSR_IA32_SYSENTER_ESP:
		return 0x123000 + cpu * 0x100;
	case MSR_PAT: /* entry 5 (unused by the identity map): WC or WP */
		return (0x0007040600070406ULL & ~(0xffULL << 40)) | ((cpu & 1 ? 5ULL : 1ULL) << 40);
	case MSR_STAR:
		return (0x23ULL << 48) | (0x10ULL << 32) | cpu;
	case MSR_LSTAR:
		return 0xffffffff81000000ULL + cpu * 0x1000;
	case MSR_CSTAR:
		return 0xffffffff82000000ULL + cpu * 0x1000;
	case MSR_SFMASK:
		return 0x47700 | cpu;
	case MSR_KERNEL_GS_BASE:
		return 0xffff888000000000ULL + cpu * 0x100000;
	default: /* MSR_TSC_AUX */
		return 0x100 + cpu;
	}
}

static const uint32_t sw_msrs[] = { MSR_IA32_SYSENTER_ESP, MSR_PAT, MSR_STAR, MSR_LSTAR,
				    MSR_CSTAR, MSR_SFMASK, MSR_KERNEL_GS_BASE, MSR_TSC_AUX };

static uint64_t dr_value(unsigned int n, uint64_t cpu)
{
	return 0x200000 + cpu * 0x1000 + n * 0x40;
}

static unsigned int sw_nmsrs(void)
{
	uint32_t r[4];

	cpuid(0x80000001, 0, r);
	/* MSR_TSC_AUX (last) only with RDTSCP */
	return sizeof(sw_msrs) / sizeof(sw_msrs[0]) - !(r[3] & (1u << 27));
}

/*
 * x87 and SSE, and AVX where the CPU has it, if the host says so
 * (SW_FPU: kvm-pvm stops on them with an emulation failure). Returns 0
 * (general registers only), 1 (x87 and SSE) or 2 (and AVX).
 */
static int sw_setup(volatile uint64_t *shared, uint64_t cpu)
{
	struct {
		uint16_t limit;
		uint64_t base;
	} __attribute__((packed)) idtr = { sizeof(idt) - 1, (uint64_t)idt };
	uint64_t cr4, v;
	uint32_t r[4], d[4];
	unsigned int i;
	uint16_t cs;
	int vec = 0;

	if (shared[SW_FPU]) {
		vec = 1;
		__asm__ volatile("fninit");
		__asm__ volatile("mov %%cr4, %0" : "=r"(cr4));
		cr4 |= (1u << 9) | (1u << 10); /* OSFXSR, OSXMMEXCPT: SSE */
		cpuid(1, 0, r);
		cpuid(0xd, 0, d);
		if ((r[2] & (1u << 26)) && (r[2] & (1u << 28)) && (d[0] & 7) == 7) {
			cr4 |= 1u << 18; /* OSXSAVE */
			vec = 2;
		}
		__asm__ volatile("mov %0, %%cr4" ::"r"(cr4));
		if (vec == 2)
			__asm__ volatile("xsetbv" ::"c"(0), "a"(7), "d"(0)); /* x87, SSE, AVX */
	}
	shared[SW_FPU_USED(cpu)] = vec;

	for (i = 0; i < sw_nmsrs(); i++)
		wrmsr(sw_msrs[i], sw_msr_value(sw_msrs[i], cpu));
	/* A TSC far above a fresh vCPU's: a restore that loses it goes backwards. */
	wrmsr(MSR_IA32_TSC, SW_TSC_BASE + rdtsc());
	v = dr_value(0, cpu);
	__asm__ volatile("mov %0, %%db0" ::"r"(v));
	v = dr_value(1, cpu);
	__asm__ volatile("mov %0, %%db1" ::"r"(v));
	v = dr_value(2, cpu);
	__asm__ volatile("mov %0, %%db2" ::"r"(v));
	v = dr_value(3, cpu);
	__asm__ volatile("mov %0, %%db3" ::"r"(v));
	v = SW_DR7;
	__asm__ volatile("mov %0, %%db7" ::"r"(v));

	cpuid(0x40000000, 0, r);
	if (r[1] == 0x4b4d564b && r[2] == 0x564b4d56 && r[3] == 0x4d) { /* KVMKVMKVM */
		cpuid(0x40000001, 0, r);
		if (r[0] & (1u << KVM_FEATURE_CLOCKSOURCE2)) {
			v = (uint64_t)&sw_pvclock[cpu] | 1;
			wrmsr(MSR_KVM_SYSTEM_TIME_NEW, v);
			shared[SW_KVMCLOCK(cpu)] = v;
		}
		if (r[0] & (1u << KVM_FEATURE_STEAL_TIME)) {
			v = (uint64_t)&sw_steal[cpu] | 1;
			wrmsr(MSR_KVM_STEAL_TIME, v);
			shared[SW_STEAL(cpu)] = v;
		}
	}

	__asm__ volatile("mov %%cs, %0" : "=r"(cs));
	for (i = 32; i < 256; i++)
		idt_set(i, guest_default_isr, cs);
	idt_set(SW_TIMER_VECTOR, sw_timer_isr, cs);
	__asm__ volatile("lidt %0" ::"m"(idtr));
	lapic_write(APIC_SVR, 0x1ff);
	lapic_write(APIC_TIMER_DIV, 0xb);
	lapic_write(APIC_LVT_TIMER, SW_TIMER_VECTOR | (1u << 17)); /* periodic */
	lapic_write(APIC_TIMER_INIT, SW_TIMER_COUNT);
	__asm__ volatile("sti");
	return vec;
}

static uint64_t pvclock_ns(volatile struct pvclock *p)
{
	uint64_t ns, delta, tsc;
	uint32_t v;
	int8_t shift;

	do {
		v = p->version;
		__asm__ volatile("" ::: "memory");
		tsc = rdtsc();
		delta = tsc > p->tsc_timestamp ? tsc - p->tsc_timestamp : 0;
		shift = p->shift;
		delta = shift >= 0 ? delta << shift : delta >> -shift;
		ns = p->system_time + (uint64_t)(((unsigned __int128)delta * p->mul) >> 32);
		__asm__ volatile("" ::: "memory");
	} while ((v & 1) || v != p->version);
	return ns;
}

static void test_state_work(volatile uint64_t *shared, uint64_t cpu)
{
	uint64_t x = 0x9e3779b97f4a7c15ULL ^ (cpu << 32), y = cpu + 1, z = 0, i, u;
	uint64_t prev_ns = 0, prev_tsc = rdtsc(), now, tsc, a, b, c, d, f, h;
	int vec = sw_setup(shared, cpu), kvmclock = shared[SW_KVMCLOCK(cpu)] != 0;
	uint64_t fp[4] = { 0 }; /* two x87 accumulators, 80 bits each */
	int tsc_back = 0, clock_back = 0;

	/* The compiler uses no x87 or vector register (-mgeneral-regs-only): ours. */
	if (vec)
		__asm__ volatile("fldz\n\tfldz\n\tpxor %xmm0, %xmm0\n\tpxor %xmm1, %xmm1");
	if (vec == 2)
		__asm__ volatile("vxorps %ymm5, %ymm5, %ymm5");
	for (u = 0; u < SW_UNITS; u++) {
		if (u == SW_UNITS / 2) {
			while (!shared[SW_GO])
				__asm__ volatile("sti; hlt" ::: "memory");
		}
		for (i = 0; i < SW_UNIT_ITERS; i++) {
			x ^= x << 13;
			x ^= x >> 7;
			x ^= x << 17;
			y += x ^ (y >> 3);
			z = rotl(z, 1) ^ y;
		}
		/*
		 * x87: st0 += x >> 11, then swap the two accumulators. SSE:
		 * xmm0 += x and xmm1 ^= z, halves swapped. AVX: ymm5 ^= [x | y],
		 * halves and quadwords swapped: the upper halves matter.
		 */
		h = x >> 11;
		if (vec)
			__asm__ volatile("fildll %2\n\t"
					 "faddp %%st, %%st(1)\n\t"
					 "fxch %%st(1)\n\t"
					 "movq %0, %%xmm2\n\t"
					 "paddq %%xmm2, %%xmm0\n\t"
					 "pshufd $0x4e, %%xmm0, %%xmm0\n\t"
					 "movq %1, %%xmm3\n\t"
					 "pxor %%xmm3, %%xmm1\n\t"
					 "pshufd $0x4e, %%xmm1, %%xmm1" ::"r"(x),
					 "r"(z), "m"(h));
		if (vec == 2)
			__asm__ volatile("vmovq %0, %%xmm6\n\t"
					 "vmovq %1, %%xmm7\n\t"
					 "vinsertf128 $1, %%xmm7, %%ymm6, %%ymm6\n\t"
					 "vxorps %%ymm6, %%ymm5, %%ymm5\n\t"
					 "vperm2f128 $1, %%ymm5, %%ymm5, %%ymm5\n\t"
					 "vpermilps $0x4e, %%ymm5, %%ymm5" ::"r"(x),
					 "r"(y));
		tsc = rdtsc();
		if (tsc < prev_tsc)
			tsc_back++;
		prev_tsc = tsc;
		if (kvmclock) {
			now = pvclock_ns(&sw_pvclock[cpu]);
			if (now < prev_ns)
				clock_back++;
			SW_LOG(cpu)[u] = prev_ns = now;
		}
		shared[SW_PROGRESS(cpu)] = u + 1;
	}
	GUEST_ASSERT(!tsc_back);
	GUEST_ASSERT(!clock_back);
	a = b = c = d = f = 0;
	if (vec)
		__asm__ volatile("fstpt %3\n\t"
				 "fstpt %4\n\t"
				 "movq %%xmm0, %0\n\t"
				 "pshufd $0x4e, %%xmm0, %%xmm2\n\t"
				 "movq %%xmm2, %1\n\t"
				 "movq %%xmm1, %2"
				 : "=r"(a), "=r"(b), "=r"(c), "=m"(fp[0]), "=m"(fp[2])
				 : /* fstpt stores 10 bytes: into fp[1] and fp[3] too */
				 : "memory");
	if (vec == 2)
		__asm__ volatile("vextractf128 $1, %%ymm5, %%xmm6\n\t"
				 "vmovq %%xmm6, %0\n\t"
				 "vmovq %%xmm5, %1"
				 : "=r"(d), "=r"(f));
	shared[SW_RESULT(cpu)] = x ^ rotl(y, 7) ^ rotl(z, 13) ^ a * 3 ^ b * 5 ^ c * 7 ^ d * 11 ^
				 f * 13 ^ fp[0] * 17 ^ (fp[1] & 0xffff) * 19 ^ fp[2] * 23 ^
				 (fp[3] & 0xffff) * 29;

	for (i = 0; i < sw_nmsrs(); i++)
		GUEST_ASSERT(rdmsr(sw_msrs[i]) == sw_msr_value(sw_msrs[i], cpu));
	__asm__ volatile("mov %%db0, %0" : "=r"(a));
	GUEST_ASSERT(a == dr_value(0, cpu));
	__asm__ volatile("mov %%db3, %0" : "=r"(a));
	GUEST_ASSERT(a == dr_value(3, cpu));
	__asm__ volatile("mov %%db7, %0" : "=r"(a));
	GUEST_ASSERT(a == SW_DR7);
	/* The timer still ticks. */
	a = sw_ticks[cpu];
	while (sw_ticks[cpu] < a + 3)
		__asm__ volatile("sti; hlt" ::: "memory");
	__asm__ volatile("cli");
	lapic_write(APIC_LVT_TIMER, 1u << 16); /* masked */
	shared[SW_TICKS(cpu)] = sw_ticks[cpu];
	__atomic_fetch_add(&shared[SW_DONE_CPUS], 1, __ATOMIC_SEQ_CST);
}

void guest_entry(uint64_t test, uint64_t cpu);

void __attribute__((used, section(".text.entry"))) guest_entry(uint64_t test, uint64_t cpu)
{
	volatile uint64_t *shared = (volatile uint64_t *)GUEST_SHARED_ADDR;

	switch (test) {
	case GT_PIO_MMIO:
		test_pio_mmio();
		break;
	case GT_SERIAL:
		test_serial();
		break;
	case GT_SMP:
		test_smp((uint32_t)cpu);
		/* Only the BSP powers off, once every vCPU has reported. */
		if (cpu != 0)
			for (;;)
				__asm__ volatile("cli; hlt");
		while (smp_done < shared[1])
			__asm__ volatile("pause");
		shared[0] = smp_total;
		break;
	case GT_TRIPLE_FAULT:
		test_triple_fault();
		break;
	case GT_COUNT_FOREVER:
		for (;;)
			shared[cpu]++;
	case GT_HALT_DEAD:
		for (;;)
			__asm__ volatile("cli; hlt");
	case GT_HALT_IDLE:
		for (;;)
			__asm__ volatile("sti; hlt");
	case GT_PROFILE_SPLIT:
		test_profile_split(shared);
		break;
	case GT_EXIT_LOOP:
		test_exit_loop(shared);
		break;
	case GT_CPU_WORK:
		test_cpu_work(shared, cpu);
		if (cpu != 0)
			for (;;)
				__asm__ volatile("cli; hlt");
		while (cw_stopped < shared[CW_STOP])
			__asm__ volatile("pause");
		break;
	case GT_CKPT_SUM:
		sum_rounds(shared, CK_ROUND, CK_ROUNDS, 1);
		break;
	case GT_MIGRATE_SUM:
		sum_rounds(shared, MG_ROUND, MG_ROUNDS, MG_PRINT_EVERY);
		break;
	case GT_STATE_WORK:
		test_state_work(shared, cpu);
		if (cpu != 0)
			for (;;)
				__asm__ volatile("cli; hlt");
		while (shared[SW_DONE_CPUS] < shared[1])
			__asm__ volatile("pause");
		break;
	default:
		ucall(UC_FAIL, 0);
		break;
	}
	poweroff();
}
