// SPDX-License-Identifier: MIT
/*
 * Freestanding guest code for the kvm tests; runs in 64-bit mode with the
 * loader's identity map. Entered at guest_entry(test, cpu) on every vCPU.
 */
#include <stdint.h>

#include "guest.h"

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
	default:
		ucall(UC_FAIL, 0);
		break;
	}
	poweroff();
}
