/*
 * keyring.c: the keys that seal and open secrets
 *
 * Keys never live in the database.  They come from a key file (one key a
 * line, "<id> <64 hex digits>", the last line is the newest and seals) or
 * from the standard output of tokenvault.key_command, in the same format.
 * Key ids are random 32-bit numbers, so a key file recreated by mistake
 * never hands out an id that an older ciphertext names.
 *
 * The key file is never inside the data directory, which base backups,
 * replicas and pg_read_server_files carry, unless a setting says so; and it
 * is never created behind the administrator's back: a restore that forgot
 * it must fail loudly, not start a new ring.
 *
 * Each backend reads the ring once and keeps it in a locked page that core
 * dumps leave out; it is wiped when read again and when the backend exits.
 * The newest key id is published in shared memory, so a backend that read
 * the ring before a key was added learns of it before its next seal.
 */
#include "postgres.h"

#include <sys/mman.h>
#include <sys/stat.h>
#ifdef HAVE_SYS_PRCTL_H
#include <sys/prctl.h>
#endif

#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "port/atomics.h"
#include "storage/ipc.h"
#include "storage/lmgr.h"
#include "storage/proc.h"
#include "storage/procarray.h"
#include "storage/shmem.h"
#include "utils/guc.h"

#include "access.h"
#include "keyfile.h"
#include "keyring.h"

static char *tv_key_file = NULL;
static char *tv_key_command = NULL;
static bool tv_key_file_in_data_directory = false;

/* What every backend of the cluster must seal with from now on. */
typedef struct KeyRingShared
{
	pg_atomic_uint32 newest_key_id;
} KeyRingShared;

static KeyRingShared *shared = NULL;

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
static struct stat ring_file_stat;	/* the key file as it was when read */
static LocalTransactionId ring_lxid = InvalidLocalTransactionId;	/* read in */
static char *ring_path = NULL;	/* the key file's absolute path, when read */

void
tv_keyring_shmem_request(void)
{
	RequestAddinShmemSpace(MAXALIGN(sizeof(KeyRingShared)));
}

void
tv_keyring_shmem_startup(void)
{
	bool		found;

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	shared = ShmemInitStruct("tokenvault key ring", sizeof(KeyRingShared), &found);
	if (!found)
		pg_atomic_init_u32(&shared->newest_key_id, 0);
	LWLockRelease(AddinShmemInitLock);
}

static bool
using_key_command(void)
{
	return tv_key_command != NULL && tv_key_command[0] != '\0';
}

const char *
tv_keyring_source(void)
{
	return using_key_command() ? "tokenvault.key_command" : ring_path ? ring_path : tv_key_file;
}

static void
ring_wipe(int code, Datum arg)
{
	if (ring)
		explicit_bzero(ring, sizeof(KeyRing));
	ring_loaded = false;
}

static void
keyring_invalidate(void)
{
	ring_wipe(0, 0);
}

/*
 * From now on this process holds plaintext that PostgreSQL, PL/pgSQL and
 * libcurl copy into memory they free without wiping (a token request's body
 * and answer, an opened secret on its way through SQL): the kernel must not
 * write it to a core file, nor may a process of the same user read it.
 */
void
tv_forbid_core_dumps(void)
{
#if defined(HAVE_SYS_PRCTL_H) && defined(PR_SET_DUMPABLE)
	static bool done = false;

	if (done)
		return;
	if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_SYSTEM_ERROR),
				 errmsg("could not keep this process out of core dumps: %m")));
	done = true;
#endif
}

/* The ring's page: locked where the OS lets us, never in a core dump. */
static void
ring_allocate(void)
{
	void	   *p;

	if (ring)
		return;
	tv_forbid_core_dumps();
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

/* Is path (absolute, canonical) the data directory or under it, symlinks resolved? */
static bool
in_data_directory(const char *path)
{
	char		dir[MAXPGPATH];
	char	   *real_data = realpath(DataDir, NULL);
	char	   *real_file = realpath(path, NULL);
	char	   *real_dir;
	bool		inside;

	strlcpy(dir, path, sizeof(dir));
	get_parent_directory(dir);
	real_dir = realpath(dir, NULL);
	inside = path_is_prefix_of_path(DataDir, path) ||
		(real_data && real_dir && path_is_prefix_of_path(real_data, real_dir)) ||
		(real_data && real_file && path_is_prefix_of_path(real_data, real_file));
	free(real_data);
	free(real_file);
	free(real_dir);
	return inside;
}

/* Before 0.7.0 the key file defaulted to the data directory: say where it is. */
static void
no_key_source(void)
{
	struct stat st;

	if (stat("tokenvault.keys", &st) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_CONFIG_FILE_ERROR),
				 errmsg("tokenvault has no key ring: neither tokenvault.key_file nor tokenvault.key_command is set"),
				 errdetail("The key file of tokenvault 0.6.0 and earlier is \"%s/tokenvault.keys\", in the data directory.", DataDir),
				 errhint("Move it out of the data directory and point tokenvault.key_file at it.")));
	ereport(ERROR,
			(errcode(ERRCODE_CONFIG_FILE_ERROR),
			 errmsg("tokenvault has no key ring: neither tokenvault.key_file nor tokenvault.key_command is set"),
			 errhint("Set tokenvault.key_file to a file outside the data directory and create it once with SELECT tokenvault.create_key_file(); see the README, \"Encryption and key management\".")));
}

/*
 * The key file's absolute path.  Inside the data directory it would travel
 * with every base backup and replica, so it is refused there unless
 * tokenvault.key_file_in_data_directory says otherwise.
 */
static const char *
key_file_path(void)
{
	char	   *path;

	if (tv_key_file == NULL || tv_key_file[0] == '\0')
		no_key_source();
	path = make_absolute_path(tv_key_file);
	canonicalize_path(path);
	if (!tv_key_file_in_data_directory && in_data_directory(path))
		ereport(ERROR,
				(errcode(ERRCODE_CONFIG_FILE_ERROR),
				 errmsg("key file \"%s\" is inside the data directory", path),
				 errdetail("Every base backup and replica of the cluster would carry the keys beside the secrets they open."),
				 errhint("Move the key file out of the data directory and point tokenvault.key_file at it, or set tokenvault.key_file_in_data_directory if this is meant.")));
	if (ring_path == NULL || strcmp(ring_path, path) != 0)
	{
		if (ring_path)
			pfree(ring_path);
		ring_path = MemoryContextStrdup(TopMemoryContext, path);
	}
	free(path);
	return ring_path;
}

static void
missing_key_file(const char *path)
{
	ereport(ERROR,
			(errcode(ERRCODE_UNDEFINED_FILE),
			 errmsg("key file \"%s\" does not exist", path),
			 errhint("Restore the key file from its backup, or point tokenvault.key_file at it. Only if no secret was ever sealed in this cluster, create it with SELECT tokenvault.create_key_file().")));
}

/* Publish the ring's newest key: every backend seals with it from now on. */
static void
publish_newest(void)
{
	if (shared)
		pg_atomic_write_u32(&shared->newest_key_id, ring->keys[ring->nkeys - 1].id);
}

/* Read the ring from its source.  A missing key file is an error, never created here. */
static void
ring_load(void)
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
		const char *path = key_file_path();

		text = tv_keyfile_read(path, &len, &ring_file_stat);
		if (text == NULL)
			missing_key_file(path);
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
				 errhint("Add a line \"<key id> <64 hex digits>\" from the key file's backup.")));
	ring_loaded = true;
	ring_lxid = MyProc ? MyProc->lxid : InvalidLocalTransactionId;
	publish_newest();
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

/*
 * The key file's text with one line appended, in a buffer allocated once:
 * one grown by repalloc would leave copies of the keys behind, unwiped.
 */
static char *
key_file_appended(const char *text, size_t len, const char *line, size_t *outlen)
{
	size_t		linelen = strlen(line);
	bool		newline = len > 0 && text[len - 1] != '\n';
	char	   *out = palloc(len + newline + linelen + 1);

	memcpy(out, text, len);
	if (newline)
		out[len] = '\n';
	memcpy(out + len + newline, line, linelen + 1);
	*outlen = len + newline + linelen;
	return out;
}

/*
 * Write key file text and wipe it, also when the write fails: an error
 * would leave it in freed memory.
 */
static bool
write_and_wipe(const char *path, char *content, size_t len, bool exclusive)
{
	volatile bool written = false;

	PG_TRY();
	{
		written = tv_keyfile_write(path, content, len, exclusive);
	}
	PG_FINALLY();
	{
		explicit_bzero(content, len);
	}
	PG_END_TRY();
	return written;
}

/*
 * Create the first key file, with one new key.  An existing file wins: it is
 * never overwritten.
 */
static uint32
create_key_file(void)
{
	const char *path;
	TvKey		key;
	char		line[128];
	char	   *content;
	size_t		len;
	uint32		id;

	require_key_file("create a key file");
	path = key_file_path();
	new_key(NULL, &key);
	tv_keyfile_format_line(&key, line);
	content = key_file_appended(KEY_FILE_HEADER, strlen(KEY_FILE_HEADER), line, &len);
	if (!write_and_wipe(path, content, len, true))
	{
		explicit_bzero(line, sizeof(line));
		explicit_bzero(&key, sizeof(key));
		ereport(ERROR,
				(errcode(ERRCODE_DUPLICATE_OBJECT),
				 errmsg("key file \"%s\" already exists", path),
				 errhint("Add a key to it with tokenvault.add_key().")));
	}
	explicit_bzero(line, sizeof(line));
	id = key.id;
	explicit_bzero(&key, sizeof(key));
	keyring_invalidate();
	/* the statement that got here may carry a secret: keep it out of the log */
	ereport(LOG,
			(errhidestmt(true),
			 errhidecontext(true),
			 errmsg("tokenvault created key file \"%s\" with a new key", path),
			 errhint("Back this file up apart from the database: secrets sealed with it cannot be opened without it.")));
	return id;
}

/* Has the key file changed since we read it (a key added or dropped)? */
static bool
key_file_changed(void)
{
	struct stat st;

	if (using_key_command())
		return false;
	if (ring_path == NULL || stat(ring_path, &st) < 0)
		return true;
	return st.st_ino != ring_file_stat.st_ino ||
		st.st_size != ring_file_stat.st_size ||
		st.st_mtim.tv_sec != ring_file_stat.st_mtim.tv_sec ||
		st.st_mtim.tv_nsec != ring_file_stat.st_mtim.tv_nsec;
}

/*
 * Has a newer key been published since we read the ring?  Without shared
 * memory (the library not preloaded) a key command is run again once a
 * transaction instead.
 */
static bool
newer_key_published(void)
{
	uint32		published;

	if (shared == NULL)
		return using_key_command() && MyProc && MyProc->lxid != ring_lxid;
	published = pg_atomic_read_u32(&shared->newest_key_id);
	return published != 0 && published != ring->keys[ring->nkeys - 1].id;
}

/*
 * The key that seals.  The source is checked each time, so a key added by
 * any backend seals at once: a seal with an older key could land after
 * rotate_key() passed its row, and be lost when that key is dropped.
 */
const TvKey *
tv_keyring_newest(void)
{
	if (!ring_loaded || key_file_changed() || newer_key_published())
		ring_load();
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
		ring_load();
		key = ring_lookup(id);
	}
	return key;
}

static int
key_ids(uint32 **ids)
{
	int			i;

	ring_load();
	*ids = palloc(sizeof(uint32) * ring->nkeys);
	for (i = 0; i < ring->nkeys; i++)
		(*ids)[i] = ring->keys[i].id;
	return ring->nkeys;
}


/* Append a new random key to the key file; it seals from now on. */
static uint32
add_key(void)
{
	char	   *text;
	size_t		len;
	TvKey		key;
	char		line[128];
	char	   *content;
	size_t		content_len;
	uint32		id;

	require_key_file("add a key");
	tv_keyring_newest();
	text = tv_keyfile_read(ring_path, &len, &ring_file_stat);
	if (text == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_FILE),
				 errmsg("key file \"%s\" vanished", ring_path)));
	new_key(ring, &key);
	tv_keyfile_format_line(&key, line);
	content = key_file_appended(text, len, line, &content_len);
	explicit_bzero(text, len);
	write_and_wipe(ring_path, content, content_len, false);
	explicit_bzero(line, sizeof(line));
	id = key.id;
	explicit_bzero(&key, sizeof(key));
	ring_load();				/* publishes the new key to every backend */
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
	if (using_key_command())
	{
		ereport(NOTICE,
				(errmsg("key %u seals no secret in this database", id),
				 errhint("Remove it from what tokenvault.key_command prints once every database that uses tokenvault says so.")));
		return;
	}

	text = tv_keyfile_read(ring_path, &len, &ring_file_stat);
	if (text == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_FILE),
				 errmsg("key file \"%s\" vanished", ring_path)));
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
	explicit_bzero(text, len);
	write_and_wipe(ring_path, out, outlen, false);
	keyring_invalidate();
}

/* A changed key source must be read again before the next seal or open. */
static void
key_source_changed(const char *newval, void *extra)
{
	keyring_invalidate();
}

static void
key_place_changed(bool newval, void *extra)
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
							   "Key ring file, outside the data directory.",
							   "Created once with tokenvault.create_key_file(); mode 0600.",
							   &tv_key_file,
							   "",
							   PGC_SUSET, GUC_SUPERUSER_ONLY,
							   NULL, key_source_changed, NULL);

	DefineCustomBoolVariable("tokenvault.key_file_in_data_directory",
							 "Allows a key file inside the data directory, where backups and replicas carry it.",
							 NULL,
							 &tv_key_file_in_data_directory,
							 false,
							 PGC_SUSET, GUC_SUPERUSER_ONLY,
							 NULL, key_place_changed, NULL);

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
PG_FUNCTION_INFO_V1(tv_create_key_file_sql);
PG_FUNCTION_INFO_V1(tv_wait_for_older_transactions);

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

/* _create_key_file() returns bigint: the first key's id */
Datum
tv_create_key_file_sql(PG_FUNCTION_ARGS)
{
	PG_RETURN_INT64(create_key_file());
}

/*
 * _wait_for_older_transactions(): wait until every transaction of the
 * cluster that began before this call has ended.  One of them may have
 * sealed with a key that is about to be dropped; once they are over, a new
 * snapshot sees all such rows.  (Autovacuum and VACUUM never seal.)
 */
Datum
tv_wait_for_older_transactions(PG_FUNCTION_ARGS)
{
	VirtualTransactionId *vxids;
	int			n;
	int			i;

	vxids = GetCurrentVirtualXIDs(InvalidTransactionId, false, true,
								   PROC_IS_AUTOVACUUM | PROC_IN_VACUUM, &n);
	for (i = 0; i < n; i++)
	{
		CHECK_FOR_INTERRUPTS();
		(void) VirtualXactLock(vxids[i], true);
	}
	PG_RETURN_VOID();
}
