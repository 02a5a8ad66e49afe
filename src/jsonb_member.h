/*
 * jsonb_member.h: reading the members of a jsonb object
 */
#ifndef TV_JSONB_MEMBER_H
#define TV_JSONB_MEMBER_H

#include "postgres.h"

#include "lib/stringinfo.h"
#include "nodes/pg_list.h"
#include "utils/jsonb.h"

extern bool tv_jsonb_member(JsonbContainer *obj, const char *key, JsonbValue *v);
extern char *tv_jsonb_string(JsonbContainer *obj, const char *key);
extern char *tv_jsonb_scalar(JsonbContainer *obj, const char *key);
extern JsonbContainer *tv_jsonb_object(JsonbContainer *obj, const char *key);
extern List *tv_jsonb_strings(JsonbContainer *obj, const char *key);
extern Jsonb *tv_jsonb_parse(StringInfo body);

#endif
