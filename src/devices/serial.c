// SPDX-License-Identifier: MIT
/*
 * 16550A UART. Transmit is instantaneous (THR empties at once, so the THRE
 * interrupt fires as soon as it is enabled); receive buffers host input in a
 * FIFO larger than the chip's, which the guest cannot tell apart.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "qlite/devices.h"
#include "qlite/vm.h"

#define UART_RBR 0
#define UART_IER 1
#define UART_IIR 2
#define UART_LCR 3
#define UART_MCR 4
#define UART_LSR 5
#define UART_MSR 6
#define UART_SCR 7

#define IER_RDI 0x01
#define IER_THRI 0x02
#define IER_RLSI 0x04
#define IER_MSI 0x08
#define IIR_NO_INT 0x01
#define IIR_MSI 0x00
#define IIR_THRI 0x02
#define IIR_RDI 0x04
#define IIR_FIFO 0xc0
#define FCR_ENABLE 0x01
#define FCR_CLEAR_RCVR 0x02
#define LCR_DLAB 0x80
#define MCR_DTR 0x01
#define MCR_RTS 0x02
#define MCR_OUT1 0x04
#define MCR_OUT2 0x08
#define MCR_LOOP 0x10
#define LSR_DR 0x01
#define LSR_THRE 0x20
#define LSR_TEMT 0x40
#define MSR_DCTS 0x01
#define MSR_DDSR 0x02
#define MSR_TERI 0x04
#define MSR_DDCD 0x08
#define MSR_CTS 0x10
#define MSR_DSR 0x20
#define MSR_RI 0x40
#define MSR_DCD 0x80
#define MSR_DELTAS 0x0f

#define SERIAL_RX_SIZE 1024

struct serial {
	/* Guest-visible state (saved/restored; see serial_state). */
	uint8_t ier, iir_thri, lcr, mcr, msr, scr, dll, dlm, fcr;
	uint8_t irq_level;
	uint16_t rx_head, rx_count;
	uint8_t rx[SERIAL_RX_SIZE];

	struct vm *vm;
	pthread_mutex_t lock;
	unsigned int irq;
	int in_fd, out_fd;
};

static const struct state_field serial_fields[] = {
	STATE_FIELD(struct serial, ier),  STATE_FIELD(struct serial, iir_thri),
	STATE_FIELD(struct serial, lcr),  STATE_FIELD(struct serial, mcr),
	STATE_FIELD(struct serial, msr),  STATE_FIELD(struct serial, scr),
	STATE_FIELD(struct serial, dll),  STATE_FIELD(struct serial, dlm),
	STATE_FIELD(struct serial, fcr),  STATE_FIELD(struct serial, irq_level),
	STATE_FIELD(struct serial, rx_head), STATE_FIELD(struct serial, rx_count),
	STATE_FIELD(struct serial, rx),
};

static int serial_post_load(void *opaque)
{
	struct serial *s = opaque;

	if (s->rx_head >= SERIAL_RX_SIZE || s->rx_count > SERIAL_RX_SIZE || s->irq_level > 1 ||
	    s->iir_thri > 1)
		return -EINVAL;
	vm_set_irq(s->vm, s->irq, s->irq_level);
	return 0;
}

static const struct state_desc serial_state = {
	.name = "serial16550",
	.version = 1,
	.fields = serial_fields,
	.nr_fields = ARRAY_SIZE(serial_fields),
	.post_load = serial_post_load,
};

static uint8_t serial_iir(const struct serial *s)
{
	uint8_t fifo = (s->fcr & FCR_ENABLE) ? IIR_FIFO : 0;

	if ((s->ier & IER_RDI) && s->rx_count)
		return IIR_RDI | fifo;
	if ((s->ier & IER_THRI) && s->iir_thri)
		return IIR_THRI | fifo;
	if ((s->ier & IER_MSI) && (s->msr & MSR_DELTAS))
		return IIR_MSI | fifo;
	return IIR_NO_INT | fifo;
}

/* Caller holds the lock. The line is level: high while anything is pending. */
static void serial_update_irq(struct serial *s)
{
	uint8_t level = !(serial_iir(s) & IIR_NO_INT);

	if (level != s->irq_level) {
		s->irq_level = level;
		vm_set_irq(s->vm, s->irq, level);
	}
}

static void serial_rx_push_locked(struct serial *s, uint8_t c)
{
	if (s->rx_count == SERIAL_RX_SIZE)
		return; /* overrun: the chip drops it too */
	s->rx[(s->rx_head + s->rx_count) % SERIAL_RX_SIZE] = c;
	s->rx_count++;
}

static uint8_t serial_modem_status(const struct serial *s)
{
	uint8_t st = s->msr & MSR_DELTAS;

	if (s->mcr & MCR_LOOP) {
		/* Loopback wiring, which Linux's 8250 probe checks for. */
		st |= (s->mcr & MCR_RTS) ? MSR_CTS : 0;
		st |= (s->mcr & MCR_DTR) ? MSR_DSR : 0;
		st |= (s->mcr & MCR_OUT1) ? MSR_RI : 0;
		st |= (s->mcr & MCR_OUT2) ? MSR_DCD : 0;
		return st;
	}
	return st | MSR_DCD | MSR_DSR | MSR_CTS;
}

static void serial_write_out(struct serial *s, uint8_t c)
{
	if (s->mcr & MCR_LOOP) {
		serial_rx_push_locked(s, c);
		return;
	}
	if (s->out_fd < 0)
		return;
	while (write(s->out_fd, &c, 1) < 0 && errno == EINTR)
		;
}

static void serial_read(void *opaque, uint64_t off, uint8_t *data, unsigned int len)
{
	struct serial *s = opaque;
	uint8_t v = 0;

	pthread_mutex_lock(&s->lock);
	switch (off) {
	case UART_RBR:
		if (s->lcr & LCR_DLAB) {
			v = s->dll;
		} else if (s->rx_count) {
			v = s->rx[s->rx_head];
			s->rx_head = (s->rx_head + 1) % SERIAL_RX_SIZE;
			s->rx_count--;
		}
		break;
	case UART_IER:
		v = (s->lcr & LCR_DLAB) ? s->dlm : s->ier;
		break;
	case UART_IIR:
		v = serial_iir(s);
		/* Reading IIR acknowledges a THRE interrupt. */
		if ((v & 0x0f) == IIR_THRI)
			s->iir_thri = 0;
		break;
	case UART_LCR:
		v = s->lcr;
		break;
	case UART_MCR:
		v = s->mcr;
		break;
	case UART_LSR:
		v = LSR_THRE | LSR_TEMT | (s->rx_count ? LSR_DR : 0);
		break;
	case UART_MSR:
		v = serial_modem_status(s);
		s->msr &= ~MSR_DELTAS;
		break;
	case UART_SCR:
		v = s->scr;
		break;
	}
	serial_update_irq(s);
	pthread_mutex_unlock(&s->lock);
	memset(data, 0, len);
	data[0] = v;
}

static void serial_write(void *opaque, uint64_t off, const uint8_t *data, unsigned int len)
{
	struct serial *s = opaque;
	uint8_t v = data[0];

	(void)len;
	pthread_mutex_lock(&s->lock);
	switch (off) {
	case UART_RBR:
		if (s->lcr & LCR_DLAB) {
			s->dll = v;
		} else {
			serial_write_out(s, v);
			s->iir_thri = 1; /* transmitted at once: THR empty again */
		}
		break;
	case UART_IER:
		if (s->lcr & LCR_DLAB) {
			s->dlm = v;
		} else {
			/* Enabling THRI with THR empty raises it right away. */
			if (!(s->ier & IER_THRI) && (v & IER_THRI))
				s->iir_thri = 1;
			s->ier = v & 0x0f;
		}
		break;
	case UART_IIR: /* FCR */
		s->fcr = v & 0xc9;
		if (v & FCR_CLEAR_RCVR)
			s->rx_head = s->rx_count = 0;
		break;
	case UART_LCR:
		s->lcr = v;
		break;
	case UART_MCR:
		s->mcr = v & 0x1f;
		break;
	case UART_SCR:
		s->scr = v;
		break;
	default:
		break; /* LSR/MSR are read-only */
	}
	serial_update_irq(s);
	pthread_mutex_unlock(&s->lock);
}

static const struct bus_ops serial_ops = {
	.read = serial_read,
	.write = serial_write,
};

static void serial_reset(void *opaque)
{
	struct serial *s = opaque;

	pthread_mutex_lock(&s->lock);
	s->ier = s->iir_thri = s->lcr = s->scr = s->fcr = 0;
	s->mcr = MCR_OUT2;
	s->msr = 0;
	s->dll = 0x0c; /* 9600 baud */
	s->dlm = 0;
	s->rx_head = s->rx_count = 0;
	serial_update_irq(s);
	pthread_mutex_unlock(&s->lock);
}

static void serial_unrealize(void *opaque)
{
	struct serial *s = opaque;

	pthread_mutex_destroy(&s->lock);
	free(s);
}

static const struct device_class serial_class = {
	.name = "serial16550",
	.state = &serial_state,
	.reset = serial_reset,
	.unrealize = serial_unrealize,
};

size_t serial_rx_space(struct serial *s)
{
	size_t n;

	pthread_mutex_lock(&s->lock);
	n = SERIAL_RX_SIZE - s->rx_count;
	pthread_mutex_unlock(&s->lock);
	return n;
}

size_t serial_push_input(struct serial *s, const uint8_t *buf, size_t len)
{
	size_t i;

	pthread_mutex_lock(&s->lock);
	for (i = 0; i < len && s->rx_count < SERIAL_RX_SIZE; i++)
		serial_rx_push_locked(s, buf[i]);
	serial_update_irq(s);
	pthread_mutex_unlock(&s->lock);
	return i;
}

int serial_create(struct vm *vm, uint16_t base, unsigned int irq, int in_fd, int out_fd,
		  struct serial **out)
{
	struct serial *s = calloc(1, sizeof(*s));
	int ret;

	if (!s)
		return -ENOMEM;
	s->vm = vm;
	s->irq = irq;
	s->in_fd = in_fd;
	s->out_fd = out_fd;
	pthread_mutex_init(&s->lock, NULL);
	serial_reset(s);
	ret = vm_add_device(vm, &serial_class, s);
	if (ret) {
		serial_unrealize(s);
		return ret;
	}
	ret = bus_register(&vm->pio, base, 8, &serial_ops, s, "serial0");
	if (ret)
		return ret; /* freed with the VM's device list */
	*out = s;
	return 0;
}
