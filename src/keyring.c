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

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "storage/fd.h"
#include "storage/ipc.h"

#include "keyring.h"
#include "tokenvault.h"

#define KEY_SOURCE_MAX (1024 * 1024)
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

void
tv_keyring_invalidate(void)
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

static int
hex_value(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/*
 * Parse one "<id> <hex>" line into *key.  Returns NULL, or what is wrong with
 * the line; the line itself is never quoted back, as it holds key material.
 */
static const char *
parse_key_line(const char *line, size_t len, TvKey *key)
{
	const char *p = line;
	const char *end = line + len;
	uint64		id = 0;
	int			i;

	while (p < end && *p >= '0' && *p <= '9' && id <= PG_UINT32_MAX)
		id = id * 10 + (*p++ - '0');
	if (p == line || id == 0 || id > PG_UINT32_MAX)
		return "does not start with a valid key id";
	while (p < end && (*p == ' ' || *p == '\t'))
		p++;
	if (end - p < TV_KEY_LEN * 2)
		return "has a key shorter than 64 hex digits";
	for (i = 0; i < TV_KEY_LEN; i++)
	{
		int			hi = hex_value(p[2 * i]);
		int			lo = hex_value(p[2 * i + 1]);

		if (hi < 0 || lo < 0)
			return "has a key that is not 64 hex digits";
		key->material[i] = (unsigned char) (hi << 4 | lo);
	}
	p += TV_KEY_LEN * 2;
	while (p < end && (*p == ' ' || *p == '\t' || *p == '\r'))
		p++;
	if (p != end)
		return "has something after the key";
	key->id = (uint32) id;
	return NULL;
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
			why = parse_key_line(s, n, &ring->keys[ring->nkeys]);
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

/*
 * Read the key file into palloc'd memory the caller wipes.  Returns NULL when
 * the file does not exist.
 */
static char *
read_key_file(const char *path, size_t *len, struct stat *st)
{
	int			fd;
	char	   *buf;
	ssize_t		n;
	int			save_errno;

	fd = OpenTransientFile(path, O_RDONLY | PG_BINARY);
	if (fd < 0)
	{
		if (errno == ENOENT)
			return NULL;
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not open key file \"%s\": %m", path)));
	}
	if (fstat(fd, st) < 0)
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not stat key file \"%s\": %m", path)));
	if (st->st_mode & (S_IRWXG | S_IRWXO))
		ereport(ERROR,
				(errcode(ERRCODE_CONFIG_FILE_ERROR),
				 errmsg("key file \"%s\" has group or world access", path),
				 errhint("Run chmod 0600 on the file; it must be readable by the server's user alone.")));
	if (st->st_size > KEY_SOURCE_MAX)
		ereport(ERROR,
				(errcode(ERRCODE_CONFIG_FILE_ERROR),
				 errmsg("key file \"%s\" is larger than 1 MB", path)));

	buf = palloc(st->st_size + 1);
	n = read(fd, buf, st->st_size);
	save_errno = errno;
	CloseTransientFile(fd);
	if (n != st->st_size)
	{
		explicit_bzero(buf, st->st_size);
		errno = save_errno;
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not read key file \"%s\": %m", path)));
	}
	*len = n;
	return buf;
}

/* Run tokenvault.key_command and collect its output. */
static char *
read_key_command(size_t *len)
{
	FILE	   *fh;
	char	   *buf = palloc(KEY_SOURCE_MAX + 1);
	size_t		n = 0;
	int			rc;

	fh = OpenPipeStream(tv_key_command, "r");
	if (fh == NULL)
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not run tokenvault.key_command: %m")));
	/* no stdio buffer, so no stray copy of the keys outlives the read */
	setvbuf(fh, NULL, _IONBF, 0);
	while (n < KEY_SOURCE_MAX)
	{
		size_t		got = fread(buf + n, 1, KEY_SOURCE_MAX - n, fh);

		if (got == 0)
			break;
		n += got;
	}
	rc = ClosePipeStream(fh);
	if (rc != 0)
	{
		explicit_bzero(buf, n);
		ereport(ERROR,
				(errcode(ERRCODE_CONFIG_FILE_ERROR),
				 errmsg("tokenvault.key_command failed: %s", wait_result_to_str(rc)),
				 errhint("The command must exit with status 0 and print the key ring.")));
	}
	*len = n;
	return buf;
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

/* "<id> <hex>\n" into buf, which must hold 11 + 1 + 64 + 2 bytes. */
static size_t
format_key_line(const TvKey *key, char *buf)
{
	static const char hex[] = "0123456789abcdef";
	size_t		n = sprintf(buf, "%u ", key->id);
	int			i;

	for (i = 0; i < TV_KEY_LEN; i++)
	{
		buf[n++] = hex[key->material[i] >> 4];
		buf[n++] = hex[key->material[i] & 15];
	}
	buf[n++] = '\n';
	buf[n] = '\0';
	return n;
}

/*
 * Write a key file durably: a temporary file, fsynced, then moved into place.
 * With exclusive, an existing file wins (another backend created it first).
 */
static void
write_key_file(const char *path, const char *content, size_t len, bool exclusive)
{
	char	   *tmp = psprintf("%s.tmp.%d", path, MyProcPid);
	int			fd;
	bool		ok;

	fd = OpenTransientFilePerm(tmp, O_WRONLY | O_CREAT | O_EXCL | PG_BINARY, S_IRUSR | S_IWUSR);
	if (fd < 0)
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not create key file \"%s\": %m", tmp)));
	ok = write(fd, content, len) == (ssize_t) len && pg_fsync(fd) == 0;
	CloseTransientFile(fd);
	if (!ok)
	{
		unlink(tmp);
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not write key file \"%s\": %m", tmp)));
	}
	if (exclusive)
	{
		if (link(tmp, path) < 0 && errno != EEXIST)
			ereport(ERROR,
					(errcode_for_file_access(),
					 errmsg("could not create key file \"%s\": %m", path)));
		unlink(tmp);
		fsync_fname(".", true);
	}
	else if (durable_rename(tmp, path, ERROR) != 0)
		unlink(tmp);
	pfree(tmp);
}

static void
create_key_file(const char *path)
{
	TvKey		key;
	char		line[128];
	char	   *content;
	size_t		len;

	new_key(NULL, &key);
	format_key_line(&key, line);
	content = psprintf("%s%s", KEY_FILE_HEADER, line);
	len = strlen(content);
	write_key_file(path, content, len, true);
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
	tv_keyring_invalidate();
	if (using_key_command())
		text = read_key_command(&len);
	else
	{
		text = read_key_file(tv_key_file, &len, &ring_file_stat);
		if (text == NULL && create)
		{
			create_key_file(tv_key_file);
			text = read_key_file(tv_key_file, &len, &ring_file_stat);
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
		tv_keyring_invalidate();
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

int
tv_key_ids(uint32 **ids)
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
uint32
tv_add_key(void)
{
	char	   *text;
	size_t		len;
	TvKey		key;
	char		line[128];
	StringInfoData buf;
	uint32		id;

	require_key_file("add a key");
	tv_keyring_newest();		/* creates the file if needed */
	text = read_key_file(tv_key_file, &len, &ring_file_stat);
	if (text == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_FILE),
				 errmsg("key file \"%s\" vanished", tv_key_file)));
	new_key(ring, &key);
	format_key_line(&key, line);
	initStringInfo(&buf);
	appendBinaryStringInfo(&buf, text, len);
	if (len > 0 && text[len - 1] != '\n')
		appendStringInfoChar(&buf, '\n');
	appendStringInfoString(&buf, line);
	write_key_file(tv_key_file, buf.data, buf.len, false);
	explicit_bzero(text, len);
	explicit_bzero(buf.data, buf.len);
	explicit_bzero(line, sizeof(line));
	id = key.id;
	explicit_bzero(&key, sizeof(key));
	tv_keyring_invalidate();
	return id;
}

/* Remove a key's line from the key file.  The caller checks nothing uses it. */
void
tv_drop_key(uint32 id)
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

	text = read_key_file(tv_key_file, &len, &ring_file_stat);
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
	write_key_file(tv_key_file, out, outlen, false);
	explicit_bzero(text, len);
	explicit_bzero(out, outlen);
	tv_keyring_invalidate();
}
