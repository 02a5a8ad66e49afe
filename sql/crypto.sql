-- Sealing and opening secrets, and the key ring, in C (keyring.c, crypto.c)

CREATE FUNCTION _seal_jsonb(value jsonb, aad text) RETURNS bytea
    LANGUAGE c STRICT VOLATILE AS 'MODULE_PATHNAME', 'tv_seal_jsonb';

CREATE FUNCTION _open_jsonb(sealed bytea, aad text) RETURNS jsonb
    LANGUAGE c STRICT STABLE AS 'MODULE_PATHNAME', 'tv_open_jsonb';

CREATE FUNCTION _seal_text(value text, aad text) RETURNS bytea
    LANGUAGE c STRICT VOLATILE AS 'MODULE_PATHNAME', 'tv_seal_text';

CREATE FUNCTION _open_text(sealed bytea, aad text) RETURNS text
    LANGUAGE c STRICT STABLE AS 'MODULE_PATHNAME', 'tv_open_text';

CREATE FUNCTION _key_id(sealed bytea) RETURNS bigint
    LANGUAGE c STRICT IMMUTABLE AS 'MODULE_PATHNAME', 'tv_key_id';

CREATE FUNCTION _add_key() RETURNS bigint
    LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'tv_add_key_sql';

CREATE FUNCTION _drop_key(key_id bigint) RETURNS void
    LANGUAGE c STRICT VOLATILE AS 'MODULE_PATHNAME', 'tv_drop_key_sql';
