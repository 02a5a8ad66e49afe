/*
 * host_policy.h: where outbound requests may connect
 */
#ifndef TV_HOST_POLICY_H
#define TV_HOST_POLICY_H

#include "postgres.h"

extern void tv_host_policy_define_settings(void);
extern const char *tv_address_class(int family, const void *addr);
extern char *tv_host_policy_refusal(const char *host, int family, const void *addr);

#endif
