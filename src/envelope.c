/*
 * envelope.c: where a sealed value belongs
 *
 * A sealed value opens only with the associated data it was sealed with,
 * which names its place: the kind of row and who the row is.  This file is
 * the one place that spells those names.  SQL seals and opens through the
 * _seal_<place> and _open_<place> functions defined here and never forms
 * one, so the two languages cannot drift apart and leave secrets that no
 * longer open.
 *
 *   auth     "auth:<auth id>"                                 jsonb
 *   client   "client:<client id>"                             jsonb
 *   webhook  "webhook:<webhook id>"                           text
 *   state    "state:<state>"                                  text
 *   private  "private:<n>:<owner name>:<n>:<related id>:<key>" text
 *   user     "user:<n>:<user id>:<n>:<related id>:<key>"       text
 *
 * In the token places <n> is the byte length of the part after it, so that
 * one (owner, related id, key) never reads as another.  The owner of a
 * private token is its role's name when the value was sealed.
 */
#include "postgres.h"

#include "catalog/pg_type_d.h"
#include "fmgr.h"
#include "lib/stringinfo.h"
#include "utils/builtins.h"
#include "utils/memutils.h"

#include "crypto.h"
#include "envelope.h"

#define MAX_PARTS 3

typedef enum Place
{
	PLACE_AUTH,
	PLACE_CLIENT,
	PLACE_WEBHOOK,
	PLACE_STATE,
	PLACE_PRIVATE,
	PLACE_USER
} Place;

typedef struct Envelope
{
	const char *name;
	char		kind;			/* TV_SEAL_JSONB or TV_SEAL_TEXT */
	int			nparts;
	Oid			types[MAX_PARTS];	/* of the parts, as SQL passes them */
} Envelope;

static const Envelope envelopes[] = {
	[PLACE_AUTH] = {"auth", TV_SEAL_JSONB, 1, {UUIDOID}},
	[PLACE_CLIENT] = {"client", TV_SEAL_JSONB, 1, {UUIDOID}},
	[PLACE_WEBHOOK] = {"webhook", TV_SEAL_TEXT, 1, {UUIDOID}},
	[PLACE_STATE] = {"state", TV_SEAL_TEXT, 1, {TEXTOID}},
	[PLACE_PRIVATE] = {"private", TV_SEAL_TEXT, 3, {NAMEOID, TEXTOID, TEXTOID}},
	[PLACE_USER] = {"user", TV_SEAL_TEXT, 3, {UUIDOID, TEXTOID, TEXTOID}},
};

typedef struct Part
{
	const char *data;
	Size		len;
} Part;

static Part
part_of(Oid type, Datum d)
{
	Part		p;

	if (type == UUIDOID)
		p.data = DatumGetCString(DirectFunctionCall1(uuid_out, d));
	else if (type == NAMEOID)
		p.data = NameStr(*DatumGetName(d));
	else
	{
		text	   *t = DatumGetTextPP(d);

		p.data = VARDATA_ANY(t);
		p.len = VARSIZE_ANY_EXHDR(t);
		return p;
	}
	p.len = strlen(p.data);
	return p;
}

/*
 * The associated data of a place.  One buffer serves every call: listing a
 * role's tokens opens thousands of values in one query.
 */
static StringInfo
aad_of(Place place, const Part *parts)
{
	static StringInfo aad = NULL;
	const Envelope *e = &envelopes[place];
	int			i;

	if (aad == NULL)
	{
		MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);

		aad = makeStringInfo();
		MemoryContextSwitchTo(old);
	}
	resetStringInfo(aad);
	appendStringInfoString(aad, e->name);
	for (i = 0; i < e->nparts; i++)
	{
		appendStringInfoChar(aad, ':');
		if (i < e->nparts - 1)
			appendStringInfo(aad, "%zu:", parts[i].len);
		appendBinaryStringInfo(aad, parts[i].data, parts[i].len);
	}
	return aad;
}

/* value is a jsonb (sealed as its binary form, whole) or a text, detoasted */
static bytea *
seal_at(Place place, struct varlena *value, const Part *parts)
{
	StringInfo	aad = aad_of(place, parts);

	return tv_seal(envelopes[place].kind, VARDATA(value), VARSIZE(value) - VARHDRSZ,
				   aad->data, aad->len);
}

/* The value as it was sealed: a jsonb or a text. */
static struct varlena *
open_at(Place place, bytea *sealed, const Part *parts)
{
	StringInfo	aad = aad_of(place, parts);

	return tv_open(envelopes[place].kind, sealed, aad->data, aad->len);
}

Jsonb *
tv_open_auth_secret(bytea *sealed, pg_uuid_t *auth_id)
{
	Part		part = part_of(UUIDOID, UUIDPGetDatum(auth_id));

	return (Jsonb *) open_at(PLACE_AUTH, sealed, &part);
}

text *
tv_open_private_value(bytea *sealed, const char *owner_name, text *related_id, text *key)
{
	Part		parts[MAX_PARTS];

	parts[0].data = owner_name;
	parts[0].len = strlen(owner_name);
	parts[1] = part_of(TEXTOID, PointerGetDatum(related_id));
	parts[2] = part_of(TEXTOID, PointerGetDatum(key));
	return (text *) open_at(PLACE_PRIVATE, sealed, parts);
}

/* ---- SQL: _seal_<place>(value, place...) and _open_<place>(sealed, place...), all STRICT ---- */

static void
parts_of_args(FunctionCallInfo fcinfo, Place place, Part *parts)
{
	int			i;

	for (i = 0; i < envelopes[place].nparts; i++)
		parts[i] = part_of(envelopes[place].types[i], PG_GETARG_DATUM(i + 1));
}

static Datum
seal_datum(FunctionCallInfo fcinfo, Place place)
{
	Part		parts[MAX_PARTS];

	parts_of_args(fcinfo, place, parts);
	PG_RETURN_BYTEA_P(seal_at(place, PG_DETOAST_DATUM(PG_GETARG_DATUM(0)), parts));
}

static Datum
open_datum(FunctionCallInfo fcinfo, Place place)
{
	Part		parts[MAX_PARTS];

	parts_of_args(fcinfo, place, parts);
	PG_RETURN_POINTER(open_at(place, PG_GETARG_BYTEA_PP(0), parts));
}

#define ENVELOPE_FUNCTIONS(name, place) \
	PG_FUNCTION_INFO_V1(tv_seal_##name); \
	Datum tv_seal_##name(PG_FUNCTION_ARGS) { return seal_datum(fcinfo, place); } \
	PG_FUNCTION_INFO_V1(tv_open_##name); \
	Datum tv_open_##name(PG_FUNCTION_ARGS) { return open_datum(fcinfo, place); }

ENVELOPE_FUNCTIONS(auth, PLACE_AUTH)
ENVELOPE_FUNCTIONS(client, PLACE_CLIENT)
ENVELOPE_FUNCTIONS(webhook, PLACE_WEBHOOK)
ENVELOPE_FUNCTIONS(state, PLACE_STATE)
ENVELOPE_FUNCTIONS(private, PLACE_PRIVATE)
ENVELOPE_FUNCTIONS(user_token, PLACE_USER)
