/* SPDX-License-Identifier: MIT */
/*
 * KVM's binary statistics (KVM_GET_STATS_FD, Linux 5.14+): a file per VM or
 * vCPU with a header, descriptors and 64-bit values. Reading it is a pread,
 * not a vCPU ioctl, so any thread may sample a running vCPU's counters.
 * Only scalar stats are kept (histograms are skipped).
 */
#ifndef QLITE_KVM_STATS_H
#define QLITE_KVM_STATS_H

#include <stdint.h>

#include "qlite/profile.h"

#define KVM_STATS_MAX_DESC 4096 /* refuse headers claiming more */

struct kvm_stats;

/* Parse the stats file @fd (takes ownership) and record baselines. */
int kvm_stats_open_fd(int fd, struct kvm_stats **out);
/*
 * KVM_GET_STATS_FD on a VM or vCPU fd. A vCPU fd must be asked on the vCPU's
 * own thread (the ioctl waits for KVM_RUN to return). -ENOTSUP without the
 * capability.
 */
int kvm_stats_open(int kvm_obj_fd, struct kvm_stats **out);
/*
 * Current values: cumulative counters as the change since open, instant
 * and peak values as they are. malloc()ed array in *@out.
 */
int kvm_stats_read(struct kvm_stats *s, struct prof_stat **out, unsigned int *n);
void kvm_stats_close(struct kvm_stats *s);

#endif
