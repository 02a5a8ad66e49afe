/*
 * durable.h: committing what a provider answered so that a failover keeps it
 */
#ifndef TV_DURABLE_H
#define TV_DURABLE_H

extern void tv_durable_begin(void);
extern bool tv_durable_confirmed(void);

#endif
