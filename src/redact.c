/*
 * redact.c: whether a provider's text may be quoted
 *
 * A hostile provider can quote the request back in any encoding: raw,
 * percent-encoded (either hex case, '+' for a space or not, any set of
 * characters escaped), JSON-escaped, or base64 at any alignment (as in the
 * Basic header, itself base64 of the percent-encoded secret).  Listing every
 * encoder's output would miss the next one, so the text is read back
 * instead: decoded each of those ways, in layers, and a text in any of whose
 * readings a secret shows through (a fragment of FRAGMENT bytes of it, or
 * the whole of a shorter one) is not quoted at all.  Cutting secrets out
 * and quoting the rest would leave their encoded neighbours behind.
 *
 * The work is bounded whatever the provider sends: the text is cut to what
 * would be quoted before it is read, each reading is one forward pass over
 * it, the secrets' fragments are looked up in a sorted array, and all of it
 * happens in a memory context that is gone when the answer is known.
 */
#include "postgres.h"

#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "nodes/pg_list.h"
#include "utils/memutils.h"

#include "hex.h"
#include "redact.h"

#define FRAGMENT 8				/* bytes of a secret that may not show */
#define SHORTEST 4				/* shorter secrets are not looked for */

/* ---- readings of a text ---- */

/* %XX in either case decoded; '+' a space too when plus_space (form encoding) */
static StringInfo
percent_decoded(StringInfo in, bool plus_space)
{
	StringInfo	out = makeStringInfo();
	int			i;

	for (i = 0; i < in->len; i++)
	{
		char		c = in->data[i];

		if (c == '%' && i + 2 < in->len && tv_hex_value(in->data[i + 1]) >= 0 && tv_hex_value(in->data[i + 2]) >= 0)
		{
			appendStringInfoChar(out, (char) (tv_hex_value(in->data[i + 1]) * 16 + tv_hex_value(in->data[i + 2])));
			i += 2;
		}
		else
			appendStringInfoChar(out, plus_space && c == '+' ? ' ' : c);
	}
	return out;
}

static int
hex4(const char *p)
{
	int			v = 0;
	int			i;

	for (i = 0; i < 4; i++)
	{
		if (tv_hex_value(p[i]) < 0)
			return -1;
		v = v * 16 + tv_hex_value(p[i]);
	}
	return v;
}

static void
append_utf8(StringInfo out, pg_wchar cp)
{
	unsigned char buf[8];
	int			n;

	unicode_to_utf8(cp, buf);
	n = pg_utf_mblen(buf);
	appendBinaryStringInfo(out, (char *) buf, n);
}

/* JSON string escapes undone: \" \\ \/ \b \f \n \r \t and \uXXXX (pairs too) */
static StringInfo
json_unescaped(StringInfo in)
{
	static const char from[] = "\"\\/bfnrt";
	static const char to[] = "\"\\/\b\f\n\r\t";
	StringInfo	out = makeStringInfo();
	int			i;

	for (i = 0; i < in->len; i++)
	{
		const char *e;
		int			cp;
		int			lo;

		if (in->data[i] != '\\' || i + 1 >= in->len)
			appendStringInfoChar(out, in->data[i]);
		else if (in->data[i + 1] != 'u' && (e = strchr(from, in->data[i + 1])) != NULL && *e)
		{
			appendStringInfoChar(out, to[e - from]);
			i++;
		}
		else if (in->data[i + 1] == 'u' && i + 5 < in->len && (cp = hex4(in->data + i + 2)) >= 0)
		{
			i += 5;
			if (cp >= 0xD800 && cp < 0xDC00 && i + 6 < in->len && in->data[i + 1] == '\\' &&
				in->data[i + 2] == 'u' && (lo = hex4(in->data + i + 3)) >= 0xDC00 && lo < 0xE000)
			{
				cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
				i += 6;
			}
			append_utf8(out, cp);
		}
		else
			appendStringInfoChar(out, in->data[i]);
	}
	return out;
}

/* a base64 digit's value, either alphabet (standard, URL-safe), '=' as 0; -1 if none */
static int
b64_value(char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+' || c == '-')
		return 62;
	if (c == '/' || c == '_')
		return 63;
	if (c == '=')
		return 0;
	return -1;
}

/*
 * The text read as base64 in groups of four from offset phase: the four
 * phases between them decode base64 that starts anywhere.  A group that is
 * not base64 becomes a NUL, so that no fragment is made across it.
 */
static StringInfo
base64_decoded(StringInfo in, int phase)
{
	StringInfo	out = makeStringInfo();
	int			i;

	for (i = phase; i + 4 <= in->len; i += 4)
	{
		int			a = b64_value(in->data[i]);
		int			b = b64_value(in->data[i + 1]);
		int			c = b64_value(in->data[i + 2]);
		int			d = b64_value(in->data[i + 3]);

		if (a < 0 || b < 0 || c < 0 || d < 0)
		{
			appendStringInfoChar(out, '\0');
			continue;
		}
		appendStringInfoChar(out, (char) ((a << 2) | (b >> 4)));
		appendStringInfoChar(out, (char) (((b & 15) << 4) | (c >> 2)));
		appendStringInfoChar(out, (char) (((c & 3) << 6) | d));
	}
	return out;
}

/*
 * Every reading of the text: as it is and JSON-unescaped; each of those as
 * it is and base64-decoded at the four phases; each of those as it is,
 * percent-decoded and form-decoded.  So base64 of percent-encoded (Basic)
 * and percent-encoded inside JSON are read too.
 */
static List *
readings(const char *text, int len)
{
	StringInfo	raw = makeStringInfo();
	List	   *plain;
	List	   *decoded = NIL;
	List	   *all = NIL;
	ListCell   *lc;
	int			phase;

	appendBinaryStringInfo(raw, text, len);
	plain = list_make2(raw, json_unescaped(raw));
	foreach(lc, plain)
	{
		decoded = lappend(decoded, lfirst(lc));
		for (phase = 0; phase < 4; phase++)
			decoded = lappend(decoded, base64_decoded(lfirst(lc), phase));
	}
	foreach(lc, decoded)
	{
		CHECK_FOR_INTERRUPTS();
		all = lappend(all, lfirst(lc));
		all = lappend(all, percent_decoded(lfirst(lc), false));
		all = lappend(all, percent_decoded(lfirst(lc), true));
	}
	return all;
}

/* ---- the secrets' fragments ---- */

typedef struct Fragments
{
	uint64	   *windows;		/* every FRAGMENT bytes of every long secret, sorted */
	int			count;
	List	   *short_ones;		/* secrets of SHORTEST to FRAGMENT - 1 bytes */
} Fragments;

static int
cmp_window(const void *a, const void *b)
{
	uint64		x = *(const uint64 *) a;
	uint64		y = *(const uint64 *) b;

	return x < y ? -1 : x > y;
}

static uint64
window_at(const char *p)
{
	uint64		w;

	StaticAssertStmt(sizeof(w) == FRAGMENT, "a fragment is one uint64");
	memcpy(&w, p, FRAGMENT);
	return w;
}

static Fragments *
fragments(List *secrets)
{
	Fragments  *f = palloc0(sizeof(Fragments));
	ListCell   *lc;
	int			room = 0;

	foreach(lc, secrets)
	{
		int			n = strlen(lfirst(lc));

		if (n >= FRAGMENT)
			room += n - FRAGMENT + 1;
		else if (n >= SHORTEST)
			f->short_ones = lappend(f->short_ones, lfirst(lc));
	}
	f->windows = palloc(sizeof(uint64) * Max(room, 1));
	foreach(lc, secrets)
	{
		const char *s = lfirst(lc);
		int			n = strlen(s);
		int			i;

		CHECK_FOR_INTERRUPTS();
		for (i = 0; i + FRAGMENT <= n; i++)
			f->windows[f->count++] = window_at(s + i);
	}
	qsort(f->windows, f->count, sizeof(uint64), cmp_window);
	return f;
}

/* Whether a secret shows through this reading. */
static bool
shows_through(StringInfo reading, Fragments *f)
{
	ListCell   *lc;
	int			i;

	for (i = 0; f->count > 0 && i + FRAGMENT <= reading->len; i++)
	{
		uint64		w = window_at(reading->data + i);

		if (bsearch(&w, f->windows, f->count, sizeof(uint64), cmp_window))
			return true;
	}
	foreach(lc, f->short_ones)
		if (memmem(reading->data, reading->len, lfirst(lc), strlen(lfirst(lc))))
			return true;
	return false;
}

/* ---- the answer ---- */

static char *
quotable(const char *text, List *secrets, int max)
{
	int			len = pg_mbcliplen(text, strnlen(text, max + MAX_MULTIBYTE_CHAR_LEN), max);
	Fragments  *f = fragments(secrets);
	ListCell   *lc;
	char	   *out;
	char	   *c;

	foreach(lc, readings(text, len))
	{
		CHECK_FOR_INTERRUPTS();
		if (shows_through(lfirst(lc), f))
			return NULL;
	}
	out = pnstrdup(text, len);
	/* keep the message on one line */
	for (c = out; *c; c++)
		if (*c == '\n' || *c == '\r' || *c == '\t')
			*c = ' ';
	return out;
}

/*
 * The provider's text, cut to max bytes and on one line, when no secret of
 * the request shows through any reading of it; NULL when one does.
 */
char *
tv_redact_quote(const char *text, List *secrets, int max)
{
	MemoryContext work = AllocSetContextCreate(CurrentMemoryContext, "tokenvault redaction",
											   ALLOCSET_SMALL_SIZES);
	MemoryContext caller = MemoryContextSwitchTo(work);
	char	   *q = quotable(text, secrets, max);

	MemoryContextSwitchTo(caller);
	if (q)
		q = pstrdup(q);
	MemoryContextDelete(work);
	return q;
}
