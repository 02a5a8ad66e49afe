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

/*
 * The parsed allow-list, as the check hook leaves it: one malloc'd block
 * (GUC frees extra with free()), the arrays and the names' text after the
 * header, sized for the list given.
 */
typedef struct AllowList
{
	int			nnames;
	int			nnetworks;
	Network    *networks;
	const char **names;
} AllowList;

/* Bumped whenever the list changes, so that connections opened under the old one are not reused. */
static uint64 generation = 0;

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
		/* IETF protocol assignments, benchmarking, multicast, reserved and broadcast */
		if (in_prefix(a, V4(192, 0, 0, 0), 24) || in_prefix(a, V4(198, 18, 0, 0), 15) ||
			in_prefix(a, V4(224, 0, 0, 0), 4) || in_prefix(a, V4(240, 0, 0, 0), 4))
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
	/* site-local: deprecated, but still routed inside some networks */
	if (in_prefix(a, (const unsigned char[16]) {0xfe, 0xc0}, 10))
		return "private";
	if (in_prefix(a, (const unsigned char[16]) {0xff}, 8))
		return "multicast or reserved";
	/* IPv4-compatible and NAT64 (RFC 6052, RFC 8215): an IPv4 address in disguise */
	if (in_prefix(a, (const unsigned char[16]) {0}, 96) ||
		in_prefix(a, (const unsigned char[16]) {0, 0x64, 0xff, 0x9b}, 96) ||
		in_prefix(a, (const unsigned char[16]) {0, 0x64, 0xff, 0x9b, 0, 1}, 48))
		return "multicast or reserved";
	/* 6to4 carries an IPv4 address in its second to fifth bytes, which a relay would reach */
	if (in_prefix(a, (const unsigned char[16]) {0x20, 0x02}, 16) &&
		strcmp(tv_address_class(AF_INET, a + 2), "public") != 0)
		return tv_address_class(AF_INET, a + 2);
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

/*
 * A prefix length: decimal digits only, and within the family's width.  An
 * empty one ("10.0.0.0/") would otherwise read as /0, the whole family.
 */
static bool
parse_bits(const char *text, int max, int *bits)
{
	size_t		n = strlen(text);

	if (n == 0 || n > 3 || strspn(text, "0123456789") != n)
		return false;
	*bits = atoi(text);
	return *bits <= max;
}

/*
 * "name", "address" or "address/bits" into the list; false if malformed.
 * A name is kept in *text, which moves past it.
 */
static bool
parse_entry(const char *entry, AllowList *list, char **text)
{
	char	   *buf = pstrdup(entry);
	char	   *slash = strchr(buf, '/');
	unsigned char raw[16];
	Network    *n = &list->networks[list->nnetworks];
	int			bits;

	if (slash)
		*slash = '\0';
	if (inet_pton(AF_INET, buf, raw) == 1)
	{
		n->family = AF_INET;
		memcpy(n->addr, raw, 4);
		if (!parse_bits(slash ? slash + 1 : "32", 32, &n->bits))
			return false;
	}
	else if (inet_pton(AF_INET6, buf, raw) == 1)
	{
		if (!parse_bits(slash ? slash + 1 : "128", 128, &bits))
			return false;
		n->family = address_bytes(AF_INET6, raw, n->addr);
		/* an IPv4-mapped network is held as the IPv4 one it covers */
		n->bits = n->family == AF_INET ? bits - 96 : bits;
		if (n->bits < 0)
			return false;
	}
	else if (slash == NULL && buf[0] != '\0' &&
			 strspn(buf, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.") == strlen(buf))
	{
		strcpy(*text, buf);
		list->names[list->nnames++] = *text;
		*text += strlen(buf) + 1;
		return true;
	}
	else
		return false;
	list->nnetworks++;
	return true;
}

/*
 * Names are kept as written (no case folding, no truncation at
 * NAMEDATALEN: a host name may be longer than an identifier).
 */
static bool
check_allowed_internal_hosts(char **newval, void **extra, GucSource source)
{
	char	   *copy = pstrdup(*newval);
	List	   *entries;
	ListCell   *lc;
	AllowList  *list;
	char	   *text;
	int			n;

	if (!SplitGUCList(copy, ',', &entries))
	{
		GUC_check_errdetail("The list is not a comma-separated list of names and networks.");
		return false;
	}
	n = list_length(entries);
	list = malloc(sizeof(AllowList) + n * (sizeof(Network) + sizeof(char *)) + strlen(*newval) + 1);
	if (list == NULL)
		return false;
	list->nnames = list->nnetworks = 0;
	list->networks = (Network *) (list + 1);
	list->names = (const char **) (list->networks + n);
	text = (char *) (list->names + n);
	foreach(lc, entries)
	{
		if (!parse_entry((const char *) lfirst(lc), list, &text))
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
	/* the variable still holds the old value here; a reload that changes nothing keeps connections */
	if (allowed_internal_hosts == NULL || strcmp(allowed_internal_hosts, newval) != 0)
		generation++;
	allow = (AllowList *) extra;
}

/* Which allow-list is in force: changes when the list does. */
uint64
tv_host_policy_generation(void)
{
	return generation;
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
