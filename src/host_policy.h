/*
 * host_policy.h: where outbound requests may connect
 */
#ifndef TV_HOST_POLICY_H
#define TV_HOST_POLICY_H

#include "postgres.h"

extern void tv_host_policy_define_settings(void);
extern const char *tv_address_class(int family, const void *addr);
extern char *tv_host_policy_refusal(const char *host, int family, const void *addr);
extern uint64 tv_host_policy_generation(void);

/* How a refused request's error begins, for whoever explains it. */
#define TV_HOST_POLICY_REFUSED "refused by the host policy"
#define TV_HOST_POLICY_HINT "A loopback, private or link-local host is reached only when tokenvault.allowed_internal_hosts " \
	"(postgresql.conf, a superuser's) lists its name or a network holding its address."

#endif
