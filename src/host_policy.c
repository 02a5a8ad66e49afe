/*
 * host_policy.c: where outbound requests may connect
 *
 * A provider's URL, a URL template's field or a webhook's URL could aim a
 * request at the server's own network: the cloud metadata service, a
 * database port on loopback, a private admin interface.  So every address
 * a request is about to connect to (each one libcurl tries, after DNS, so
 * a name that resolves inward passes no more than the address would) is
 * judged here: public addresses pass; loopback, private, link-local,
 * unspecified and other special-purpose addresses pass only when
 * tokenvault.allowed_internal_hosts names the host or a network holding
 * the address.
 */
#include "postgres.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/inet.h"
#include "utils/varlena.h"

#include "host_policy.h"

static char *allowed_internal_hosts = NULL;

typedef struct Network
{
	int			family;			/* AF_INET or AF_INET6 */
	unsigned char addr[16];
	int			bits;
} Network;

/* The parsed allow-list, as the check hook leaves it (guc_malloc'd). */
typedef struct AllowList
{
	int			nnames;
	int			nnetworks;
	char		names[64][256];
	Network		networks[64];
} AllowList;

static AllowList *allow = NULL;

/* An address as 16 bytes; an IPv4-mapped IPv6 address is its IPv4 one. */
static int
address_bytes(int family, const void *in, unsigned char *out)
{
	static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

	if (family == AF_INET6 && memcmp(in, mapped, 12) == 0)
	{
		memcpy(out, (const unsigned char *) in + 12, 4);
		return AF_INET;
	}
	memcpy(out, in, family == AF_INET ? 4 : 16);
	return family;
}

static bool
in_prefix(const unsigned char *a, const unsigned char *net, int bits)
{
	int			whole = bits / 8;
	int			rest = bits % 8;

	if (memcmp(a, net, whole) != 0)
		return false;
	return rest == 0 || ((a[whole] ^ net[whole]) & (0xff << (8 - rest))) == 0;
}

#define V4(a,b,c,d) ((const unsigned char[]){a, b, c, d})

/* What kind of address this is; "public" is the only kind allowed by default. */
const char *
tv_address_class(int family, const void *addr)
{
	unsigned char a[16];

	family = address_bytes(family, addr, a);
	if (family == AF_INET)
	{
		if (in_prefix(a, V4(0, 0, 0, 0), 8))
			return "unspecified";
		if (in_prefix(a, V4(127, 0, 0, 0), 8))
			return "loopback";
		if (in_prefix(a, V4(10, 0, 0, 0), 8) || in_prefix(a, V4(172, 16, 0, 0), 12) ||
			in_prefix(a, V4(192, 168, 0, 0), 16))
			return "private";
		if (in_prefix(a, V4(169, 254, 0, 0), 16))
			return "link-local";
		if (in_prefix(a, V4(100, 64, 0, 0), 10))
			return "shared address space";
		if (in_prefix(a, V4(224, 0, 0, 0), 4) || in_prefix(a, V4(240, 0, 0, 0), 4))
			return "multicast or reserved";
		return "public";
	}
	if (in_prefix(a, (const unsigned char[16]) {0}, 128))
		return "unspecified";
	if (in_prefix(a, (const unsigned char[16]) {[15] = 1}, 128))
		return "loopback";
	if (in_prefix(a, (const unsigned char[16]) {0xfc}, 7))
		return "private";
	if (in_prefix(a, (const unsigned char[16]) {0xfe, 0x80}, 10))
		return "link-local";
	if (in_prefix(a, (const unsigned char[16]) {0xff}, 8))
		return "multicast or reserved";
	if (in_prefix(a, (const unsigned char[16]) {0}, 96) ||
		in_prefix(a, (const unsigned char[16]) {0, 0x64, 0xff, 0x9b}, 96))
		return "multicast or reserved";	/* IPv4-compatible, NAT64: an IPv4 address in disguise */
	return "public";
}

static bool
name_allowed(const char *host)
{
	int			i;

	for (i = 0; allow && host && i < allow->nnames; i++)
		if (pg_strcasecmp(allow->names[i], host) == 0)
			return true;
	return false;
}

static bool
network_allowed(int family, const void *addr)
{
	unsigned char a[16];
	int			i;

	family = address_bytes(family, addr, a);
	for (i = 0; allow && i < allow->nnetworks; i++)
		if (allow->networks[i].family == family &&
			in_prefix(a, allow->networks[i].addr, allow->networks[i].bits))
			return true;
	return false;
}

/*
 * May a request for host connect to this address?  NULL if so; otherwise
 * why not, for a person.
 */
char *
tv_host_policy_refusal(const char *host, int family, const void *addr)
{
	const char *kind = tv_address_class(family, addr);
	char		text[INET6_ADDRSTRLEN];

	if (strcmp(kind, "public") == 0 || name_allowed(host) || network_allowed(family, addr))
		return NULL;
	inet_ntop(family, addr, text, sizeof(text));
	return psprintf("host \"%s\" is at %s, a %s address, and tokenvault.allowed_internal_hosts admits neither",
					host ? host : "", text, kind);
}

/* "name", "address" or "address/bits" into the list; false if malformed. */
static bool
parse_entry(const char *entry, AllowList *list)
{
	char		buf[256];
	unsigned char raw[16];
	char	   *slash;
	Network    *n;
	int			max;

	if (strlen(entry) >= sizeof(buf) || entry[0] == '\0')
		return false;
	strlcpy(buf, entry, sizeof(buf));
	slash = strchr(buf, '/');
	if (slash)
		*slash = '\0';
	n = &list->networks[list->nnetworks];
	if (inet_pton(AF_INET, buf, n->addr) == 1)
		n->family = AF_INET;
	else if (inet_pton(AF_INET6, buf, raw) == 1)
		n->family = address_bytes(AF_INET6, raw, n->addr);
	else if (slash == NULL && strspn(buf, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.") == strlen(buf))
	{
		if (list->nnames == lengthof(list->names))
			return false;
		strlcpy(list->names[list->nnames++], buf, sizeof(list->names[0]));
		return true;
	}
	else
		return false;
	max = n->family == AF_INET ? 32 : 128;
	n->bits = slash ? atoi(slash + 1) : max;
	if (slash && n->family == AF_INET && strchr(buf, ':'))
		n->bits -= 96;			/* an IPv4-mapped network, held as IPv4 */
	if (n->bits < 0 || n->bits > max || list->nnetworks == lengthof(list->networks) ||
		(slash && strspn(slash + 1, "0123456789") != strlen(slash + 1)))
		return false;
	list->nnetworks++;
	return true;
}

static bool
check_allowed_internal_hosts(char **newval, void **extra, GucSource source)
{
	AllowList  *list = malloc(sizeof(AllowList));
	char	   *copy;
	List	   *entries;
	ListCell   *lc;

	if (list == NULL)
		return false;
	memset(list, 0, sizeof(AllowList));
	copy = pstrdup(*newval);
	if (!SplitIdentifierString(copy, ',', &entries))
	{
		GUC_check_errdetail("The list is not a comma-separated list of names and networks.");
		free(list);
		return false;
	}
	foreach(lc, entries)
	{
		if (!parse_entry((const char *) lfirst(lc), list))
		{
			GUC_check_errdetail("\"%s\" is not a host name, an address or a network (address/bits).",
								(const char *) lfirst(lc));
			free(list);
			return false;
		}
	}
	*extra = list;
	return true;
}

static void
assign_allowed_internal_hosts(const char *newval, void *extra)
{
	allow = (AllowList *) extra;
}

void
tv_host_policy_define_settings(void)
{
	DefineCustomStringVariable("tokenvault.allowed_internal_hosts",
							   "Hosts and networks outbound requests may reach although they are internal.",
							   "Loopback, private, link-local and unspecified addresses are refused unless listed, "
							   "by name (as in the URL) or by network (address/bits).",
							   &allowed_internal_hosts,
							   "",
							   PGC_SIGHUP, GUC_LIST_INPUT,
							   check_allowed_internal_hosts, assign_allowed_internal_hosts, NULL);
}

/* ---- SQL-callable ---- */

PG_FUNCTION_INFO_V1(tv_address_class_sql);
PG_FUNCTION_INFO_V1(tv_host_policy_sql);

static int
inet_family(inet *ip, const void **addr)
{
	*addr = ip_addr(ip);
	return ip_family(ip) == PGSQL_AF_INET ? AF_INET : AF_INET6;
}

/* address_class(address inet) returns text */
Datum
tv_address_class_sql(PG_FUNCTION_ARGS)
{
	const void *addr;
	int			family = inet_family(PG_GETARG_INET_PP(0), &addr);

	PG_RETURN_TEXT_P(cstring_to_text(tv_address_class(family, addr)));
}

/*
 * host_policy(host text, address inet) returns text: NULL when a request
 * for host may connect to address, else why not.  What the connect-time
 * check decides, without connecting.
 */
Datum
tv_host_policy_sql(PG_FUNCTION_ARGS)
{
	const void *addr;
	int			family = inet_family(PG_GETARG_INET_PP(1), &addr);
	char	   *why = tv_host_policy_refusal(text_to_cstring(PG_GETARG_TEXT_PP(0)), family, addr);

	if (why == NULL)
		PG_RETURN_NULL();
	PG_RETURN_TEXT_P(cstring_to_text(why));
}
