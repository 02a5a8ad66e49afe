/*
 * crypto.c: AES-256-GCM sealing of secrets
 *
 * A sealed value is
 *
 *     version 2 (1 byte) | key id (4, big-endian) | key check (4) | nonce (12) | ciphertext | tag (16)
 *
 * (version 1, written before 0.7.0, has no key check).  The header, the kind
 * of value and the caller's associated data (the row it belongs to) are all
 * authenticated, so a sealed value opens only where and as what it was
 * sealed.  The key check (keyfile.c) tells a ring holding another key under
 * the right id apart from a value that was altered or moved.
 *
 * No key schedule outlives one seal or open: OpenSSL keeps it on the heap,
 * which core dumps include, and wipes it when the context is freed.
 */
#include "postgres.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "fmgr.h"
#include "lib/stringinfo.h"
#include "utils/memutils.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"

#include "crypto.h"
#include "keyring.h"

#define SEAL_VERSION 2
#define NONCE_LEN 12
#define TAG_LEN 16
#define CHECK_LEN TV_KEY_CHECK_LEN
#define HEADER_LEN_V1 (1 + 4 + NONCE_LEN)
#define HEADER_LEN (1 + 4 + CHECK_LEN + NONCE_LEN)

PG_FUNCTION_INFO_V1(tv_key_id);
PG_FUNCTION_INFO_V1(tv_random_token);

static void
put_uint32(unsigned char *p, uint32 v)
{
	p[0] = v >> 24;
	p[1] = v >> 16;
	p[2] = v >> 8;
	p[3] = v;
}

static uint32
get_uint32(const unsigned char *p)
{
	return (uint32) p[0] << 24 | (uint32) p[1] << 16 | (uint32) p[2] << 8 | p[3];
}

/* The header length of a sealed value, by its format version. */
static int
check_sealed(bytea *sealed)
{
	const unsigned char *p = (const unsigned char *) VARDATA_ANY(sealed);
	Size		len = VARSIZE_ANY_EXHDR(sealed);
	int			header_len;

	if (len < 1)
		header_len = HEADER_LEN;
	else if (p[0] == 1)
		header_len = HEADER_LEN_V1;
	else if (p[0] == SEAL_VERSION)
		header_len = HEADER_LEN;
	else
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("sealed secret has unknown format version %d", p[0]),
				 errhint("It was written by a newer tokenvault, or it is not a tokenvault secret.")));
	if (len < header_len + TAG_LEN)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("sealed secret is too short to be valid")));
	return header_len;
}

static uint32
sealed_key_id(bytea *sealed)
{
	check_sealed(sealed);
	return get_uint32((const unsigned char *) VARDATA_ANY(sealed) + 1);
}

static const EVP_CIPHER *
aes_256_gcm(void)
{
	static EVP_CIPHER *cipher = NULL;

	if (cipher == NULL)
		cipher = EVP_CIPHER_fetch(NULL, "AES-256-GCM", NULL);
	if (cipher == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not find AES-256-GCM in OpenSSL")));
	return cipher;
}

/*
 * A context keyed for one seal or open, with the nonce set and header, kind
 * and associated data fed as AAD; NULL on any OpenSSL failure.  The caller
 * frees it at once (EVP_CIPHER_CTX_free wipes the key schedule).
 */
static EVP_CIPHER_CTX *
start(const TvKey *key, bool encrypt, const unsigned char *header, int header_len,
	  char kind, const char *aad, Size aadlen)
{
	EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
	int			n;

	if (ctx &&
		EVP_CipherInit_ex(ctx, aes_256_gcm(), NULL, key->material,
						  header + header_len - NONCE_LEN, encrypt) == 1 &&
		EVP_CipherUpdate(ctx, NULL, &n, header, header_len) == 1 &&
		EVP_CipherUpdate(ctx, NULL, &n, (const unsigned char *) &kind, 1) == 1 &&
		EVP_CipherUpdate(ctx, NULL, &n, (const unsigned char *) aad, aadlen) == 1)
		return ctx;
	EVP_CIPHER_CTX_free(ctx);
	return NULL;
}

bytea *
tv_seal(char kind, const char *plain, Size len, const char *aad, Size aadlen)
{
	const TvKey *key = tv_keyring_newest();
	bytea	   *out = palloc(VARHDRSZ + HEADER_LEN + len + TAG_LEN);
	unsigned char *header = (unsigned char *) VARDATA(out);
	unsigned char *body = header + HEADER_LEN;
	EVP_CIPHER_CTX *ctx;
	int			n;
	bool		ok;

	SET_VARSIZE(out, VARHDRSZ + HEADER_LEN + len + TAG_LEN);
	header[0] = SEAL_VERSION;
	put_uint32(header + 1, key->id);
	memcpy(header + 5, key->check, CHECK_LEN);
	if (!pg_strong_random(header + 5 + CHECK_LEN, NONCE_LEN))
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not generate a random nonce")));

	ctx = start(key, true, header, HEADER_LEN, kind, aad, aadlen);
	ok = ctx &&
		EVP_EncryptUpdate(ctx, body, &n, (const unsigned char *) plain, len) == 1 &&
		EVP_EncryptFinal_ex(ctx, body + len, &n) == 1 &&
		EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, TAG_LEN, body + len) == 1;
	EVP_CIPHER_CTX_free(ctx);
	if (!ok)
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not encrypt a secret with OpenSSL")));
	return out;
}

static void
wipe_callback(void *arg)
{
	struct varlena *v = (struct varlena *) arg;

	explicit_bzero(VARDATA(v), VARSIZE(v) - VARHDRSZ);
}

/*
 * Wipe an opened value when the memory context it lives in is reset or
 * deleted, so no plaintext lingers in freed memory the code owned.
 */
void
tv_wipe_on_reset(struct varlena *value)
{
	MemoryContextCallback *cb = palloc(sizeof(MemoryContextCallback));

	cb->func = wipe_callback;
	cb->arg = value;
	MemoryContextRegisterResetCallback(GetMemoryChunkContext(value), cb);
}

static void
key_mismatch(uint32 key_id)
{
	ereport(ERROR,
			(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
			 errmsg("key %u in the key ring is not the key that sealed this secret", key_id),
			 errdetail("The key check value differs: the key ring from %s holds another key under that id.",
					   tv_keyring_source()),
			 errhint("Restore the key file (or what tokenvault.key_command prints) that holds the key this secret was sealed with.")));
}

/*
 * Open a sealed value.  The result is a varlena holding the plaintext, so a
 * jsonb or text sealed value comes back as that type; it is wiped when its
 * memory context goes.
 */
struct varlena *
tv_open(char kind, bytea *sealed, const char *aad, Size aadlen)
{
	int			header_len = check_sealed(sealed);
	const unsigned char *header = (const unsigned char *) VARDATA_ANY(sealed);
	const unsigned char *body = header + header_len;
	Size		len = VARSIZE_ANY_EXHDR(sealed) - header_len - TAG_LEN;
	uint32		key_id = get_uint32(header + 1);
	const TvKey *key = tv_keyring_find(key_id);
	struct varlena *out;
	EVP_CIPHER_CTX *ctx;
	int			n;
	bool		ok;

	if (key == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("key %u needed to open this secret is not in the key ring", key_id),
				 errdetail("The key ring was read from %s.", tv_keyring_source()),
				 errhint("Restore the line for key %u from the key file's backup, or make tokenvault.key_command print it.", key_id)));
	if (header[0] == SEAL_VERSION && memcmp(key->check, header + 5, CHECK_LEN) != 0)
		key_mismatch(key_id);

	out = palloc(VARHDRSZ + len);
	SET_VARSIZE(out, VARHDRSZ + len);
	tv_wipe_on_reset(out);
	ctx = start(key, false, header, header_len, kind, aad, aadlen);
	ok = ctx &&
		EVP_DecryptUpdate(ctx, (unsigned char *) VARDATA(out), &n, body, len) == 1 &&
		EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, TAG_LEN, (void *) (body + len)) == 1 &&
		EVP_DecryptFinal_ex(ctx, (unsigned char *) VARDATA(out) + len, &n) == 1;
	EVP_CIPHER_CTX_free(ctx);
	if (!ok)
	{
		explicit_bzero(VARDATA(out), len);
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("secret does not open with key %u", key_id),
				 errdetail("The sealed value was altered, or it was copied from another row.")));
	}
	return out;
}

/* The hex HMAC-SHA256 of text under key (a webhook's signature). */
char *
tv_hmac_sha256_hex(const char *key, const char *text)
{
	unsigned char mac[EVP_MAX_MD_SIZE];
	unsigned int maclen = 0;
	StringInfoData out;
	unsigned int i;

	if (HMAC(EVP_sha256(), key, strlen(key), (const unsigned char *) text, strlen(text),
			 mac, &maclen) == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_EXTERNAL_ROUTINE_EXCEPTION),
				 errmsg("could not sign a webhook delivery")));
	initStringInfo(&out);
	for (i = 0; i < maclen; i++)
		appendStringInfo(&out, "%02x", mac[i]);
	return out.data;
}

/* ---- SQL-callable ---- */

/* _key_id(sealed bytea) returns bigint: the key that sealed it */
Datum
tv_key_id(PG_FUNCTION_ARGS)
{
	PG_RETURN_INT64(sealed_key_id(PG_GETARG_BYTEA_PP(0)));
}

/*
 * _random_token(bytes integer) returns text: that many strong random bytes,
 * base64url without padding (a PKCE verifier, an authorization state).
 */
Datum
tv_random_token(PG_FUNCTION_ARGS)
{
	int32		n = PG_GETARG_INT32(0);
	unsigned char buf[96];
	static const char alphabet[] =
		"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
	StringInfoData out;
	int			i;

	if (n < 16 || n > (int32) sizeof(buf))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("random token length must be 16 to %d bytes", (int) sizeof(buf))));
	if (!pg_strong_random(buf, n))
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not generate random bytes")));
	initStringInfo(&out);
	/* 6 bits a character, most significant first */
	for (i = 0; i * 6 < n * 8; i++)
	{
		int			bit = i * 6;
		int			byte = bit / 8;
		int			shift = bit % 8;
		int			v = (buf[byte] << 8 | (byte + 1 < n ? buf[byte + 1] : 0)) >> (10 - shift);

		appendStringInfoChar(&out, alphabet[v & 63]);
	}
	explicit_bzero(buf, sizeof(buf));
	PG_RETURN_TEXT_P(cstring_to_text(out.data));
}
