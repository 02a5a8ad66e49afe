/*
 * crypto.c: AES-256-GCM sealing of secrets
 *
 * A sealed value is
 *
 *     version (1 byte) | key id (4 bytes, big-endian) | nonce (12) | ciphertext | tag (16)
 *
 * The header, the kind of value and the caller's associated data (the row it
 * belongs to) are all authenticated, so a sealed value opens only where and
 * as what it was sealed.
 */
#include "postgres.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "fmgr.h"
#include "lib/stringinfo.h"
#include "storage/ipc.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"

#include "crypto.h"
#include "keyring.h"

#define SEAL_VERSION 1
#define NONCE_LEN 12
#define TAG_LEN 16
#define HEADER_LEN (1 + 4 + NONCE_LEN)

PG_FUNCTION_INFO_V1(tv_seal_jsonb);
PG_FUNCTION_INFO_V1(tv_open_jsonb);
PG_FUNCTION_INFO_V1(tv_seal_text);
PG_FUNCTION_INFO_V1(tv_open_text);
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

static void
check_sealed(bytea *sealed)
{
	const unsigned char *p = (const unsigned char *) VARDATA_ANY(sealed);

	if (VARSIZE_ANY_EXHDR(sealed) < HEADER_LEN + TAG_LEN)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("sealed secret is too short to be valid")));
	if (p[0] != SEAL_VERSION)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("sealed secret has unknown format version %d", p[0]),
				 errhint("It was written by a newer tokenvault, or it is not a tokenvault secret.")));
}

static uint32
sealed_key_id(bytea *sealed)
{
	check_sealed(sealed);
	return get_uint32((const unsigned char *) VARDATA_ANY(sealed) + 1);
}

/*
 * A cipher context per key, keyed once: setting up AES-GCM (the key schedule
 * and the GHASH tables) costs more than opening a short token, so each seal
 * or open only sets the nonce.  Contexts follow the key ring: when it is read
 * again, they are freed (OpenSSL wipes the key schedule) and made anew.
 */
typedef struct KeyCtx
{
	uint32		key_id;
	bool		encrypt;
	uint64		generation;
	EVP_CIPHER_CTX *ctx;
} KeyCtx;

#define KEY_CTX_SLOTS 8
static KeyCtx key_ctx_cache[KEY_CTX_SLOTS];
static int	key_ctx_next = 0;

static void
key_ctx_free_all(int code, Datum arg)
{
	int			i;

	for (i = 0; i < KEY_CTX_SLOTS; i++)
	{
		EVP_CIPHER_CTX_free(key_ctx_cache[i].ctx);
		key_ctx_cache[i].ctx = NULL;
	}
}

static EVP_CIPHER_CTX *
key_ctx(const TvKey *key, bool encrypt)
{
	static bool exit_hook = false;
	uint64		generation = tv_keyring_generation();
	KeyCtx	   *slot;
	int			i;

	for (i = 0; i < KEY_CTX_SLOTS; i++)
	{
		slot = &key_ctx_cache[i];
		if (slot->ctx && slot->generation == generation &&
			slot->key_id == key->id && slot->encrypt == encrypt)
			return slot->ctx;
	}
	if (!exit_hook)
	{
		on_proc_exit(key_ctx_free_all, 0);
		exit_hook = true;
	}
	slot = &key_ctx_cache[key_ctx_next];
	key_ctx_next = (key_ctx_next + 1) % KEY_CTX_SLOTS;
	EVP_CIPHER_CTX_free(slot->ctx);
	slot->ctx = EVP_CIPHER_CTX_new();
	if (slot->ctx == NULL ||
		EVP_CipherInit_ex(slot->ctx, EVP_aes_256_gcm(), NULL, key->material, NULL, encrypt) != 1)
	{
		EVP_CIPHER_CTX_free(slot->ctx);
		slot->ctx = NULL;
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not set up AES-256-GCM with OpenSSL")));
	}
	slot->key_id = key->id;
	slot->encrypt = encrypt;
	slot->generation = generation;
	return slot->ctx;
}

/*
 * Start an operation on a keyed context: set the nonce, then feed header,
 * kind and associated data as AAD.  Returns false on any OpenSSL failure.
 */
static bool
start(EVP_CIPHER_CTX *ctx, const unsigned char *header, char kind,
	  const char *aad, Size aadlen)
{
	int			n;

	return EVP_CipherInit_ex(ctx, NULL, NULL, NULL, header + 5, -1) == 1 &&
		EVP_CipherUpdate(ctx, NULL, &n, header, HEADER_LEN) == 1 &&
		EVP_CipherUpdate(ctx, NULL, &n, (const unsigned char *) &kind, 1) == 1 &&
		EVP_CipherUpdate(ctx, NULL, &n, (const unsigned char *) aad, aadlen) == 1;
}

static bytea *
seal(char kind, const char *plain, Size len, const char *aad, Size aadlen)
{
	const TvKey *key = tv_keyring_newest();
	bytea	   *out = palloc(VARHDRSZ + HEADER_LEN + len + TAG_LEN);
	unsigned char *header = (unsigned char *) VARDATA(out);
	unsigned char *body = header + HEADER_LEN;
	EVP_CIPHER_CTX *ctx = key_ctx(key, true);
	int			n;

	SET_VARSIZE(out, VARHDRSZ + HEADER_LEN + len + TAG_LEN);
	header[0] = SEAL_VERSION;
	put_uint32(header + 1, key->id);
	if (!pg_strong_random(header + 5, NONCE_LEN))
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not generate a random nonce")));

	if (!(start(ctx, header, kind, aad, aadlen) &&
		  EVP_EncryptUpdate(ctx, body, &n, (const unsigned char *) plain, len) == 1 &&
		  EVP_EncryptFinal_ex(ctx, body + len, &n) == 1 &&
		  EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, TAG_LEN, body + len) == 1))
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not encrypt a secret with OpenSSL")));
	return out;
}

/*
 * Open a sealed value.  The result is a varlena holding the plaintext, so a
 * jsonb or text sealed value comes back as that type.
 */
struct varlena *
tv_open(char kind, bytea *sealed, const char *aad, Size aadlen)
{
	const unsigned char *header;
	const unsigned char *body;
	Size		len;
	uint32		key_id = sealed_key_id(sealed);
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

	header = (const unsigned char *) VARDATA_ANY(sealed);
	body = header + HEADER_LEN;
	len = VARSIZE_ANY_EXHDR(sealed) - HEADER_LEN - TAG_LEN;
	out = palloc(VARHDRSZ + len);
	SET_VARSIZE(out, VARHDRSZ + len);

	ctx = key_ctx(key, false);
	ok = start(ctx, header, kind, aad, aadlen) &&
		EVP_DecryptUpdate(ctx, (unsigned char *) VARDATA(out), &n, body, len) == 1 &&
		EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, TAG_LEN, (void *) (body + len)) == 1 &&
		EVP_DecryptFinal_ex(ctx, (unsigned char *) VARDATA(out) + len, &n) == 1;
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

/* _seal_jsonb(value jsonb, aad text) returns bytea */
Datum
tv_seal_jsonb(PG_FUNCTION_ARGS)
{
	Jsonb	   *value = PG_GETARG_JSONB_P(0);
	text	   *aad = PG_GETARG_TEXT_PP(1);

	PG_RETURN_BYTEA_P(seal(TV_SEAL_JSONB, VARDATA(value), VARSIZE(value) - VARHDRSZ,
							  VARDATA_ANY(aad), VARSIZE_ANY_EXHDR(aad)));
}

/* _open_jsonb(sealed bytea, aad text) returns jsonb */
Datum
tv_open_jsonb(PG_FUNCTION_ARGS)
{
	bytea	   *sealed = PG_GETARG_BYTEA_PP(0);
	text	   *aad = PG_GETARG_TEXT_PP(1);

	PG_RETURN_POINTER(tv_open(TV_SEAL_JSONB, sealed,
							  VARDATA_ANY(aad), VARSIZE_ANY_EXHDR(aad)));
}

/* _seal_text(value text, aad text) returns bytea */
Datum
tv_seal_text(PG_FUNCTION_ARGS)
{
	text	   *value = PG_GETARG_TEXT_PP(0);
	text	   *aad = PG_GETARG_TEXT_PP(1);

	PG_RETURN_BYTEA_P(seal(TV_SEAL_TEXT, VARDATA_ANY(value), VARSIZE_ANY_EXHDR(value),
							  VARDATA_ANY(aad), VARSIZE_ANY_EXHDR(aad)));
}

/* _open_text(sealed bytea, aad text) returns text */
Datum
tv_open_text(PG_FUNCTION_ARGS)
{
	bytea	   *sealed = PG_GETARG_BYTEA_PP(0);
	text	   *aad = PG_GETARG_TEXT_PP(1);

	PG_RETURN_TEXT_P(tv_open(TV_SEAL_TEXT, sealed,
							 VARDATA_ANY(aad), VARSIZE_ANY_EXHDR(aad)));
}

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
