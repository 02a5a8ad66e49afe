/*
 * keyring.c: the keys that seal and open secrets
 *
 * Keys never live in the database.  They come from a key file (one key a
 * line, "<id> <64 hex digits>", the last line is the newest and seals) or
 * from the standard output of tokenvault.key_command, in the same format.
 * Key ids are random 32-bit numbers, so a key file recreated by mistake
 * never hands out an id that an older ciphertext names.
 *
 * Each backend reads the ring once and keeps it in a locked page that core
 * dumps leave out; it is wiped when read again and when the backend exits.
 */
#include "postgres.h"

#include <sys/mman.h>
#include <sys/stat.h>

#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/guc.h"
#include "storage/ipc.h"

#include "access.h"
#include "keyfile.h"
#include "keyring.h"

static char *tv_key_file = NULL;
static char *tv_key_command = NULL;

#define KEY_FILE_HEADER \
	"# tokenvault key ring: one key a line, \"<key id> <64 hex digits>\".\n" \
	"# The last key seals new secrets; every key listed opens old ones.\n" \
	"# Back this file up apart from the database: without it no secret opens.\n"

typedef struct KeyRing
{
	int			nkeys;
	TvKey		keys[TV_MAX_KEYS];
} KeyRing;

static KeyRing *ring = NULL;
static bool ring_loaded = false;
static uint64 ring_generation = 0;	/* bumped whenever the ring is wiped */
static struct stat ring_file_stat;	/* the key file as it was when read */

static bool
using_key_command(void)
{
	return tv_key_command != NULL && tv_key_command[0] != '\0';
}

const char *
tv_keyring_source(void)
{
	return using_key_command() ? "tokenvault.key_command" : tv_key_file;
}

static void
ring_wipe(int code, Datum arg)
{
	if (ring)
		explicit_bzero(ring, sizeof(KeyRing));
	ring_loaded = false;
	ring_generation++;
}

/* Anything derived from a key (a cipher context) is stale once this changes. */
uint64
tv_keyring_generation(void)
{
	return ring_generation;
}

static void
keyring_invalidate(void)
{
	ring_wipe(0, 0);
}

/* The ring's page: locked where the OS lets us, never in a core dump. */
static void
ring_allocate(void)
{
	void	   *p;

	if (ring)
		return;
	p = mmap(NULL, sizeof(KeyRing), PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("could not allocate memory for the tokenvault key ring: %m")));
	(void) mlock(p, sizeof(KeyRing));
#ifdef MADV_DONTDUMP
	(void) madvise(p, sizeof(KeyRing), MADV_DONTDUMP);
#endif
	ring = p;
	on_proc_exit(ring_wipe, 0);
}

/*
 * Fill the ring from key ring text; comments and blank lines are skipped.
 * Returns NULL, or what is wrong, with *lineno saying where.
 */
static const char *
ring_parse(const char *text, size_t len, int *lineno)
{
	const char *p = text;
	const char *end = text + len;

	*lineno = 0;
	ring->nkeys = 0;
	while (p < end)
	{
		const char *eol = memchr(p, '\n', end - p);
		const char *next = eol ? eol + 1 : end;
		const char *s = p;
		size_t		n;

		(*lineno)++;
		while (s < next && (*s == ' ' || *s == '\t'))
			s++;
		n = (eol ? eol : end) - s;
		if (n > 0 && *s != '#' && !(n == 1 && *s == '\r'))
		{
			const char *why;
			int			i;

			if (ring->nkeys == TV_MAX_KEYS)
				return "is past the limit of 256 keys";
			why = tv_keyfile_parse_line(s, n, &ring->keys[ring->nkeys]);
			if (why)
				return why;
			for (i = 0; i < ring->nkeys; i++)
				if (ring->keys[i].id == ring->keys[ring->nkeys].id)
					return "repeats a key id";
			ring->nkeys++;
		}
		p = next;
	}
	return NULL;
}

static void
new_key(const KeyRing *existing, TvKey *key)
{
	int			i;

	do
	{
		if (!pg_strong_random(&key->id, sizeof(key->id)) ||
			!pg_strong_random(key->material, TV_KEY_LEN))
			ereport(ERROR,
					(errcode(ERRCODE_INTERNAL_ERROR),
					 errmsg("could not generate a random key")));
		for (i = 0; existing && i < existing->nkeys; i++)
			if (existing->keys[i].id == key->id)
				key->id = 0;
	} while (key->id == 0);
}

static void
create_key_file(const char *path)
{
	TvKey		key;
	char		line[128];
	char	   *content;
	size_t		len;

	new_key(NULL, &key);
	tv_keyfile_format_line(&key, line);
	content = psprintf("%s%s", KEY_FILE_HEADER, line);
	len = strlen(content);
	tv_keyfile_write(path, content, len, true);
	explicit_bzero(content, len);
	explicit_bzero(line, sizeof(line));
	explicit_bzero(&key, sizeof(key));
	/* the statement that got here may carry a secret: keep it out of the log */
	ereport(LOG,
			(errhidestmt(true),
			 errhidecontext(true),
			 errmsg("tokenvault created key file \"%s\" with a new key", path),
			 errhint("Back this file up apart from the database: secrets sealed with it cannot be opened without it.")));
}

/*
 * Read the ring from its source.  The key file is created on first use when
 * creating is allowed (sealing needs a key; opening cannot use a new one).
 */
static void
ring_load(bool create)
{
	char	   *text;
	size_t		len;
	const char *why;
	int			lineno;

	ring_allocate();
	keyring_invalidate();
	if (using_key_command())
		text = tv_keyfile_run_command(tv_key_command, &len);
	else
	{
		text = tv_keyfile_read(tv_key_file, &len, &ring_file_stat);
		if (text == NULL && create)
		{
			create_key_file(tv_key_file);
			text = tv_keyfile_read(tv_key_file, &len, &ring_file_stat);
		}
		if (text == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_FILE),
					 errmsg("key file \"%s\" does not exist", tv_key_file),
					 errhint("Restore the key file from its backup, or point tokenvault.key_file at it.")));
	}
	why = ring_parse(text, len, &lineno);
	explicit_bzero(text, len);
	pfree(text);
	if (why)
	{
		keyring_invalidate();
		ereport(ERROR,
				(errcode(ERRCODE_CONFIG_FILE_ERROR),
				 errmsg("invalid key ring from %s: line %d %s",
						tv_keyring_source(), lineno, why),
				 errhint("Each line holds a key id (1 to 4294967295) and 64 hex digits, separated by a space.")));
	}
	if (ring->nkeys == 0)
		ereport(ERROR,
				(errcode(ERRCODE_CONFIG_FILE_ERROR),
				 errmsg("key ring from %s holds no key", tv_keyring_source()),
				 errhint("Add a line \"<key id> <64 hex digits>\", or remove the key file to have a new one created.")));
	ring_loaded = true;
}

/* Has the key file changed since we read it (a key added or dropped)? */
static bool
key_file_changed(void)
{
	struct stat st;

	if (using_key_command())
		return false;
	if (stat(tv_key_file, &st) < 0)
		return true;
	return st.st_ino != ring_file_stat.st_ino ||
		st.st_size != ring_file_stat.st_size ||
		st.st_mtim.tv_sec != ring_file_stat.st_mtim.tv_sec ||
		st.st_mtim.tv_nsec != ring_file_stat.st_mtim.tv_nsec;
}

/* The key that seals; the file is checked each time so a new key is used at once. */
const TvKey *
tv_keyring_newest(void)
{
	if (!ring_loaded || key_file_changed())
		ring_load(true);
	return &ring->keys[ring->nkeys - 1];
}

static const TvKey *
ring_lookup(uint32 id)
{
	int			i;

	for (i = ring->nkeys - 1; i >= 0; i--)
		if (ring->keys[i].id == id)
			return &ring->keys[i];
	return NULL;
}

/* The key with this id, or NULL; the source is read again before giving up. */
const TvKey *
tv_keyring_find(uint32 id)
{
	const TvKey *key = NULL;

	if (ring_loaded)
		key = ring_lookup(id);
	if (key == NULL)
	{
		ring_load(false);
		key = ring_lookup(id);
	}
	return key;
}

static int
key_ids(uint32 **ids)
{
	int			i;

	tv_keyring_newest();
	*ids = palloc(sizeof(uint32) * ring->nkeys);
	for (i = 0; i < ring->nkeys; i++)
		(*ids)[i] = ring->keys[i].id;
	return ring->nkeys;
}

static void
require_key_file(const char *what)
{
	if (using_key_command())
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("cannot %s while tokenvault.key_command supplies the keys", what),
				 errhint("Change the key command's output instead, then reconnect.")));
}

/* Append a new random key to the key file; it seals from now on. */
static uint32
add_key(void)
{
	char	   *text;
	size_t		len;
	TvKey		key;
	char		line[128];
	StringInfoData buf;
	uint32		id;

	require_key_file("add a key");
	tv_keyring_newest();		/* creates the file if needed */
	text = tv_keyfile_read(tv_key_file, &len, &ring_file_stat);
	if (text == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_FILE),
				 errmsg("key file \"%s\" vanished", tv_key_file)));
	new_key(ring, &key);
	tv_keyfile_format_line(&key, line);
	initStringInfo(&buf);
	appendBinaryStringInfo(&buf, text, len);
	if (len > 0 && text[len - 1] != '\n')
		appendStringInfoChar(&buf, '\n');
	appendStringInfoString(&buf, line);
	tv_keyfile_write(tv_key_file, buf.data, buf.len, false);
	explicit_bzero(text, len);
	explicit_bzero(buf.data, buf.len);
	explicit_bzero(line, sizeof(line));
	id = key.id;
	explicit_bzero(&key, sizeof(key));
	keyring_invalidate();
	return id;
}

/* Remove a key's line from the key file.  The caller checks nothing uses it. */
static void
drop_key(uint32 id)
{
	char	   *text;
	size_t		len;
	char	   *out;
	size_t		outlen = 0;
	const char *p;
	char		prefix[16];
	size_t		plen;

	require_key_file("drop a key");
	tv_keyring_newest();
	if (ring_lookup(id) == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("key %u is not in the key ring", id)));
	if (ring->nkeys == 1)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("cannot drop the only key in the key ring"),
				 errhint("Add a key with tokenvault.add_key() and run tokenvault.rotate_key() first.")));

	text = tv_keyfile_read(tv_key_file, &len, &ring_file_stat);
	if (text == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_FILE),
				 errmsg("key file \"%s\" vanished", tv_key_file)));
	plen = snprintf(prefix, sizeof(prefix), "%u", id);
	out = palloc(len + 1);
	for (p = text; p < text + len;)
	{
		const char *eol = memchr(p, '\n', text + len - p);
		const char *next = eol ? eol + 1 : text + len;
		const char *s = p;

		while (s < next && (*s == ' ' || *s == '\t'))
			s++;
		if (!((size_t) (next - s) > plen && strncmp(s, prefix, plen) == 0 &&
			  (s[plen] == ' ' || s[plen] == '\t')))
		{
			memcpy(out + outlen, p, next - p);
			outlen += next - p;
		}
		p = next;
	}
	tv_keyfile_write(tv_key_file, out, outlen, false);
	explicit_bzero(text, len);
	explicit_bzero(out, outlen);
	keyring_invalidate();
}

/* A changed key source must be read again before the next seal or open. */
static void
key_source_changed(const char *newval, void *extra)
{
	keyring_invalidate();
}

void
tv_keyring_define_settings(void)
{
	/*
	 * The key settings are superuser-only, to set and to read: the key
	 * command runs as the server's operating-system user, the key file is
	 * read with its rights, and a command line may carry what a secrets
	 * manager needs (it should not: see the README).
	 */
	DefineCustomStringVariable("tokenvault.key_file",
							   "Key ring file; a relative path is relative to the data directory.",
							   "Created with one new key, mode 0600, on first use.",
							   &tv_key_file,
							   "tokenvault.keys",
							   PGC_SUSET, GUC_SUPERUSER_ONLY,
							   NULL, key_source_changed, NULL);

	DefineCustomStringVariable("tokenvault.key_command",
							   "Shell command that prints the key ring; overrides tokenvault.key_file.",
							   NULL,
							   &tv_key_command,
							   "",
							   PGC_SUSET, GUC_SUPERUSER_ONLY,
							   NULL, key_source_changed, NULL);
}

/* ---- SQL-callable ---- */

PG_FUNCTION_INFO_V1(tv_key_ring);
PG_FUNCTION_INFO_V1(tv_add_key_sql);
PG_FUNCTION_INFO_V1(tv_drop_key_sql);

/* key_ring() returns table (key_id bigint, newest boolean); never key material */
Datum
tv_key_ring(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	uint32	   *ids;
	int			n;
	int			i;

	tv_require_admission(TV_LEVEL_ADMIN);
	InitMaterializedSRF(fcinfo, 0);
	n = key_ids(&ids);
	for (i = 0; i < n; i++)
	{
		Datum		values[2] = {Int64GetDatum(ids[i]), BoolGetDatum(i == n - 1)};
		bool		nulls[2] = {false, false};

		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}

Datum
tv_add_key_sql(PG_FUNCTION_ARGS)
{
	PG_RETURN_INT64(add_key());
}

/* _drop_key(key_id bigint): the SQL wrapper has checked that no secret uses it */
Datum
tv_drop_key_sql(PG_FUNCTION_ARGS)
{
	int64		id = PG_GETARG_INT64(0);

	if (id <= 0 || id > PG_UINT32_MAX)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("key id %lld is out of range", (long long) id)));
	drop_key((uint32) id);
	PG_RETURN_VOID();
}
