/*
 * url_template.h: URL settings with {placeholders}, filled under the
 * client's allowed_hosts
 */
#ifndef TV_URL_TEMPLATE_H
#define TV_URL_TEMPLATE_H

#include "postgres.h"

#include "nodes/pg_list.h"
#include "utils/jsonb.h"

extern char *tv_url_fill(const char *setting, const char *tmpl, JsonbContainer *fields,
						 List *allowed_hosts, bool partial, char **problem);
extern const char *tv_host_pattern_problem(const char *pattern);

#endif
