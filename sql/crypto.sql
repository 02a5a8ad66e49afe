-- Sealing and opening secrets where they belong, and the key ring, in C (envelope.c, crypto.c, keyring.c)

-- A sealed value opens only in its place: _seal_<place> and _open_<place>
-- take the value and who it belongs to (src/envelope.c spells the
-- associated data; SQL never does).
CREATE FUNCTION _seal_auth(secret jsonb, auth_id uuid) RETURNS bytea
    LANGUAGE c STRICT VOLATILE AS 'MODULE_PATHNAME', 'tv_seal_auth';
CREATE FUNCTION _open_auth(sealed bytea, auth_id uuid) RETURNS jsonb
    LANGUAGE c STRICT STABLE AS 'MODULE_PATHNAME', 'tv_open_auth';

CREATE FUNCTION _seal_client(secret jsonb, client_id uuid) RETURNS bytea
    LANGUAGE c STRICT VOLATILE AS 'MODULE_PATHNAME', 'tv_seal_client';
CREATE FUNCTION _open_client(sealed bytea, client_id uuid) RETURNS jsonb
    LANGUAGE c STRICT STABLE AS 'MODULE_PATHNAME', 'tv_open_client';

CREATE FUNCTION _seal_webhook(secret text, webhook_id uuid) RETURNS bytea
    LANGUAGE c STRICT VOLATILE AS 'MODULE_PATHNAME', 'tv_seal_webhook';
CREATE FUNCTION _open_webhook(sealed bytea, webhook_id uuid) RETURNS text
    LANGUAGE c STRICT STABLE AS 'MODULE_PATHNAME', 'tv_open_webhook';

-- a pending authorization's PKCE verifier, by its state
CREATE FUNCTION _seal_state(verifier text, state text) RETURNS bytea
    LANGUAGE c STRICT VOLATILE AS 'MODULE_PATHNAME', 'tv_seal_state';
CREATE FUNCTION _open_state(sealed bytea, state text) RETURNS text
    LANGUAGE c STRICT STABLE AS 'MODULE_PATHNAME', 'tv_open_state';

-- an app-private token, by its owner's name when sealed
CREATE FUNCTION _seal_private(value text, owner_name name, related_id text, key text) RETURNS bytea
    LANGUAGE c STRICT VOLATILE AS 'MODULE_PATHNAME', 'tv_seal_private';
CREATE FUNCTION _open_private(sealed bytea, owner_name name, related_id text, key text) RETURNS text
    LANGUAGE c STRICT STABLE AS 'MODULE_PATHNAME', 'tv_open_private';

CREATE FUNCTION _seal_user_token(value text, user_id uuid, related_id text, key text) RETURNS bytea
    LANGUAGE c STRICT VOLATILE AS 'MODULE_PATHNAME', 'tv_seal_user_token';
CREATE FUNCTION _open_user_token(sealed bytea, user_id uuid, related_id text, key text) RETURNS text
    LANGUAGE c STRICT STABLE AS 'MODULE_PATHNAME', 'tv_open_user_token';

CREATE FUNCTION _key_id(sealed bytea) RETURNS bigint
    LANGUAGE c STRICT IMMUTABLE AS 'MODULE_PATHNAME', 'tv_key_id';

CREATE FUNCTION _create_key_file() RETURNS bigint
    LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'tv_create_key_file_sql';

CREATE FUNCTION _wait_for_older_transactions() RETURNS void
    LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'tv_wait_for_older_transactions';

CREATE FUNCTION _add_key() RETURNS bigint
    LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'tv_add_key_sql';

CREATE FUNCTION _drop_key(key_id bigint) RETURNS void
    LANGUAGE c STRICT VOLATILE AS 'MODULE_PATHNAME', 'tv_drop_key_sql';
