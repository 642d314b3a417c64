/* SPDX-License-Identifier: MIT */
#ifndef QLITE_CLIENT_H
#define QLITE_CLIENT_H

struct client_options;
/* Run one client subcommand against a QMP socket; returns the exit status. */
int client_run(const struct client_options *o);

#endif
