/*
 * tokenvault.c: module entry point and settings
 */
#include "postgres.h"

#include "fmgr.h"
#include "utils/guc.h"

#include "keyring.h"
#include "tokenvault.h"

PG_MODULE_MAGIC;

void		_PG_init(void);

char	   *tv_key_file = NULL;
char	   *tv_key_command = NULL;
int			tv_min_validity = 30;

/* A changed key source must be read again before the next seal or open. */
static void
assign_key_source(const char *newval, void *extra)
{
	tv_keyring_invalidate();
}

void
_PG_init(void)
{
	/*
	 * The key settings are superuser-only: the key command runs as the
	 * server's operating-system user, and the key file is read with its
	 * rights.
	 */
	DefineCustomStringVariable("tokenvault.key_file",
							   "Key ring file; a relative path is relative to the data directory.",
							   "Created with one new key, mode 0600, on first use.",
							   &tv_key_file,
							   "tokenvault.keys",
							   PGC_SUSET, 0,
							   NULL, assign_key_source, NULL);

	DefineCustomStringVariable("tokenvault.key_command",
							   "Shell command that prints the key ring; overrides tokenvault.key_file.",
							   NULL,
							   &tv_key_command,
							   "",
							   PGC_SUSET, 0,
							   NULL, assign_key_source, NULL);

	DefineCustomIntVariable("tokenvault.min_validity",
							"How long a token returned by access_token() must stay valid.",
							NULL,
							&tv_min_validity,
							30, 0, 24 * 3600,
							PGC_USERSET, GUC_UNIT_S,
							NULL, NULL, NULL);

	MarkGUCPrefixReserved("tokenvault");
}
