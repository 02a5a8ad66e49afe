/*
 * keyfile.c: key ring text, and the key file on disk
 *
 * The format is one key a line, "<id> <64 hex digits>".  A line that does
 * not parse is never quoted back: it holds key material.  The file is
 * written durably and readable by the server's user alone.
 */
#include "postgres.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "miscadmin.h"
#include "storage/fd.h"

#include "hex.h"
#include "keyfile.h"

#define KEY_SOURCE_MAX (1024 * 1024)

/*
 * The key's check value, the start of HMAC-SHA256 of a fixed label under it:
 * a sealed value carries it, so another key under the same id is told apart
 * from a value that was altered.  Computed once, as the ring is read.
 */
static bool
key_check(TvKey *key)
{
	static const char label[] = "tokenvault key check";
	unsigned char mac[EVP_MAX_MD_SIZE];
	unsigned int maclen = 0;

	if (HMAC(EVP_sha256(), key->material, TV_KEY_LEN, (const unsigned char *) label,
			 sizeof(label) - 1, mac, &maclen) == NULL)
		return false;
	memcpy(key->check, mac, TV_KEY_CHECK_LEN);
	explicit_bzero(mac, sizeof(mac));
	return true;
}

/*
 * Parse one "<id> <hex>" line into *key.  Returns NULL, or what is wrong with
 * the line; the line itself is never quoted back, as it holds key material.
 */
const char *
tv_keyfile_parse_line(const char *line, size_t len, TvKey *key)
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
		int			hi = tv_hex_value(p[2 * i]);
		int			lo = tv_hex_value(p[2 * i + 1]);

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
	return key_check(key) ? NULL : "could not be checked with OpenSSL";
}

/*
 * Read the key file into palloc'd memory the caller wipes.  Returns NULL when
 * the file does not exist.
 */
char *
tv_keyfile_read(const char *path, size_t *len, struct stat *st)
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

/* Run the key command and collect its output. */
char *
tv_keyfile_run_command(const char *command, size_t *len)
{
	FILE	   *fh;
	char	   *buf = palloc(KEY_SOURCE_MAX + 1);
	size_t		n = 0;
	int			rc;

	fh = OpenPipeStream(command, "r");
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

/* "<id> <hex>\n" into buf, which must hold 11 + 1 + 64 + 2 bytes. */
size_t
tv_keyfile_format_line(const TvKey *key, char *buf)
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
 * With exclusive, an existing file wins and false is returned.
 */
bool
tv_keyfile_write(const char *path, const char *content, size_t len, bool exclusive)
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
		bool		created = link(tmp, path) == 0;
		int			save_errno = errno;

		unlink(tmp);
		if (!created && save_errno != EEXIST)
		{
			errno = save_errno;
			ereport(ERROR,
					(errcode_for_file_access(),
					 errmsg("could not create key file \"%s\": %m", path)));
		}
		if (created)
		{
			char		dir[MAXPGPATH];

			strlcpy(dir, path, sizeof(dir));
			get_parent_directory(dir);
			fsync_fname(dir, true);
		}
		pfree(tmp);
		return created;
	}
	if (durable_rename(tmp, path, ERROR) != 0)
		unlink(tmp);
	pfree(tmp);
	return true;
}
