-- tokenvault 0.1.0: users, clients, imported auths, encryption at rest

\echo Use "CREATE EXTENSION tokenvault" to load this file. \quit

-- Roles are cluster-wide and outlive the extension; create them only once.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'tokenvault_app') THEN
        CREATE ROLE tokenvault_app NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'tokenvault_admin') THEN
        CREATE ROLE tokenvault_admin NOLOGIN;
    END IF;
    IF NOT pg_has_role('tokenvault_admin', 'tokenvault_app', 'MEMBER') THEN
        GRANT tokenvault_app TO tokenvault_admin;
    END IF;
END
$$;

------------------------------------------------------------------------------
-- Tables
------------------------------------------------------------------------------

CREATE TABLE users (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    external_user_id text NOT NULL UNIQUE
                     CHECK (external_user_id <> '' AND length(external_user_id) <= 1024),
    name             text,
    created_at       timestamptz NOT NULL DEFAULT now()
);

-- A client is how the application reaches one service: an OAuth2 client, or
-- the shape of the basic, api_key or noauth credentials its users hold.
CREATE TABLE clients (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name            text NOT NULL CHECK (name <> ''),
    service         text NOT NULL CHECK (service <> ''),
    type            text NOT NULL CHECK (type IN ('oauth2', 'basic', 'api_key', 'noauth')),
    grant_type      text NOT NULL DEFAULT 'none'
                    CHECK (grant_type IN ('authorization_code', 'client_credentials', 'password', 'none')),
    client_id       text,
    auth_url        text,
    token_url       text,
    refresh_url     text,
    revoke_url      text,
    scopes          text[] NOT NULL DEFAULT '{}',
    client_auth     text NOT NULL DEFAULT 'basic' CHECK (client_auth IN ('basic', 'post')),
    token_lifetime  integer CHECK (token_lifetime > 0),
    extra_params    jsonb NOT NULL DEFAULT '{}',
    api_key_header  text,
    api_key_prefix  text,
    secret          bytea,          -- sealed {"client_secret": ...}
    owner           name NOT NULL,
    visibility      text NOT NULL DEFAULT 'shared' CHECK (visibility IN ('private', 'shared')),
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CHECK ((type = 'oauth2') = (grant_type <> 'none'))
);

-- Everything secret sits in the one sealed column; the rest stays queryable,
-- and expires_at is the source of truth for expiry.
CREATE TABLE auths (
    id                 uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id            uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    client_id          uuid NOT NULL REFERENCES clients (id),
    name               text NOT NULL CHECK (name <> ''),
    service            text NOT NULL,
    scopes             text[] NOT NULL DEFAULT '{}',
    status             text NOT NULL DEFAULT 'active'
                       CHECK (status IN ('active', 'refreshing', 'needs_reauth', 'expired', 'revoked', 'error')),
    token_type         text,
    expires_at         timestamptz,
    refresh_expires_at timestamptz,
    refresh_at         timestamptz,
    last_refreshed_at  timestamptz,
    failure_count      integer NOT NULL DEFAULT 0,
    last_error         text,
    version            bigint NOT NULL DEFAULT 1,
    expiry_notified_at timestamptz,
    secret             bytea NOT NULL,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX auths_user_id_idx ON auths (user_id);
CREATE INDEX auths_client_id_idx ON auths (client_id);
CREATE INDEX auths_refresh_at_idx ON auths (refresh_at) WHERE refresh_at IS NOT NULL;

SELECT pg_catalog.pg_extension_config_dump('users', '');
SELECT pg_catalog.pg_extension_config_dump('clients', '');
SELECT pg_catalog.pg_extension_config_dump('auths', '');

------------------------------------------------------------------------------
-- Internal C functions: granted to no one, called by the functions below
------------------------------------------------------------------------------

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
CREATE FUNCTION _caller() RETURNS name
    LANGUAGE c STABLE AS 'MODULE_PATHNAME', 'tv_caller';


CREATE FUNCTION _require(value anyelement, what text) RETURNS anyelement
    LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF value IS NULL THEN
        RAISE EXCEPTION '% must not be null', what USING ERRCODE = 'null_value_not_allowed';
    END IF;
    RETURN value;
END
$$;

------------------------------------------------------------------------------
-- Users
------------------------------------------------------------------------------

CREATE FUNCTION create_user(external_user_id text, name text DEFAULT NULL) RETURNS uuid
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    new_id uuid;
BEGIN
    PERFORM tokenvault._require(external_user_id, 'external_user_id');
    IF external_user_id = '' OR length(external_user_id) > 1024 THEN
        RAISE EXCEPTION 'external_user_id must be 1 to 1024 characters long'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    INSERT INTO tokenvault.users (external_user_id, name)
    VALUES (create_user.external_user_id, create_user.name)
    ON CONFLICT ON CONSTRAINT users_external_user_id_key DO NOTHING
    RETURNING id INTO new_id;
    IF new_id IS NULL THEN
        RAISE EXCEPTION 'user with external id "%" already exists', external_user_id
            USING ERRCODE = 'unique_violation',
                  HINT = 'Look it up with tokenvault.find_user().';
    END IF;
    RETURN new_id;
END
$$;

CREATE FUNCTION find_user(external_user_id text) RETURNS uuid
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT id FROM tokenvault.users u WHERE u.external_user_id = find_user.external_user_id
$$;

CREATE FUNCTION _user_must_exist(user_id uuid) RETURNS void
    LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM tokenvault._require(user_id, 'user id');
    IF NOT EXISTS (SELECT FROM tokenvault.users WHERE id = user_id) THEN
        RAISE EXCEPTION 'user % does not exist', user_id
            USING ERRCODE = 'undefined_object',
                  HINT = 'Create it with tokenvault.create_user(), or look it up with tokenvault.find_user().';
    END IF;
END
$$;

CREATE FUNCTION delete_user(user_id uuid) RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM tokenvault._user_must_exist(user_id);
    -- the user's auths go with it (ON DELETE CASCADE)
    DELETE FROM tokenvault.users WHERE id = user_id;
END
$$;

CREATE FUNCTION user_auths(user_id uuid)
    RETURNS TABLE (id uuid, name text, service text, client_id uuid, scopes text[],
                   status text, expires_at timestamptz, created_at timestamptz)
    LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM tokenvault._user_must_exist(user_id);
    RETURN QUERY
        SELECT a.id, a.name, a.service, a.client_id, a.scopes, a.status, a.expires_at, a.created_at
          FROM tokenvault.auths a
         WHERE a.user_id = user_auths.user_id
         ORDER BY a.created_at, a.id;
END
$$;

CREATE FUNCTION delete_user_auths(user_id uuid) RETURNS integer
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    n integer;
BEGIN
    PERFORM tokenvault._user_must_exist(user_id);
    DELETE FROM tokenvault.auths a WHERE a.user_id = delete_user_auths.user_id;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;

------------------------------------------------------------------------------
-- Clients
------------------------------------------------------------------------------

-- Check a settings object and return it with defaults filled in for a type.
-- Unknown keys are refused: a misspelt "client_secert" must not pass silently.
CREATE FUNCTION _client_settings(type text, settings jsonb, creating boolean) RETURNS jsonb
    LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    known constant text[] := ARRAY['grant', 'client_id', 'client_secret', 'auth_url', 'token_url',
        'refresh_url', 'revoke_url', 'scopes', 'client_auth', 'token_lifetime', 'extra_params',
        'api_key_header', 'api_key_prefix', 'visibility'];
    oauth2_only constant text[] := ARRAY['grant', 'client_id', 'client_secret', 'auth_url', 'token_url',
        'refresh_url', 'revoke_url', 'scopes', 'client_auth', 'token_lifetime', 'extra_params'];
    k text;
    g text;
BEGIN
    settings := coalesce(settings, '{}');
    IF jsonb_typeof(settings) <> 'object' THEN
        RAISE EXCEPTION 'client settings must be a JSON object' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF pg_column_size(settings) > 65536 THEN
        RAISE EXCEPTION 'client settings are larger than 64 kB' USING ERRCODE = 'program_limit_exceeded';
    END IF;
    FOR k IN SELECT jsonb_object_keys(settings) LOOP
        IF NOT k = ANY (known) THEN
            RAISE EXCEPTION 'unknown client setting "%"', k
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Known settings: ' || array_to_string(known, ', ') || '.';
        END IF;
        IF type <> 'oauth2' AND k = ANY (oauth2_only) THEN
            RAISE EXCEPTION 'setting "%" does not apply to a client of type %', k, type
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        IF type <> 'api_key' AND k IN ('api_key_header', 'api_key_prefix') THEN
            RAISE EXCEPTION 'setting "%" applies only to api_key clients', k
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        IF k = 'scopes' THEN
            IF jsonb_typeof(settings->k) <> 'array'
               OR EXISTS (SELECT FROM jsonb_array_elements(settings->k) e WHERE jsonb_typeof(e) <> 'string') THEN
                RAISE EXCEPTION 'setting "scopes" must be an array of strings' USING ERRCODE = 'invalid_parameter_value';
            END IF;
        ELSIF k = 'extra_params' THEN
            IF jsonb_typeof(settings->k) <> 'object' THEN
                RAISE EXCEPTION 'setting "extra_params" must be a JSON object' USING ERRCODE = 'invalid_parameter_value';
            END IF;
        ELSIF k = 'token_lifetime' THEN
            IF jsonb_typeof(settings->k) <> 'number' OR (settings->>k)::numeric <= 0
               OR (settings->>k)::numeric <> trunc((settings->>k)::numeric) OR (settings->>k)::numeric > 2147483647 THEN
                RAISE EXCEPTION 'setting "token_lifetime" must be a positive whole number of seconds'
                    USING ERRCODE = 'invalid_parameter_value';
            END IF;
        ELSIF jsonb_typeof(settings->k) <> 'string' OR settings->>k = '' THEN
            RAISE EXCEPTION 'setting "%" must be a non-empty string', k USING ERRCODE = 'invalid_parameter_value';
        END IF;
    END LOOP;

    g := settings->>'grant';
    IF g IS NOT NULL AND g NOT IN ('authorization_code', 'client_credentials', 'password') THEN
        RAISE EXCEPTION 'unknown grant "%"', g
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use authorization_code, client_credentials or password.';
    END IF;
    IF settings->>'client_auth' NOT IN ('basic', 'post') THEN
        RAISE EXCEPTION 'client_auth must be "basic" or "post"' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF settings->>'visibility' NOT IN ('private', 'shared') THEN
        RAISE EXCEPTION 'visibility must be "private" or "shared"' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    FOR k IN SELECT unnest(ARRAY['auth_url', 'token_url', 'refresh_url', 'revoke_url']) LOOP
        IF settings ? k AND settings->>k !~* '^https?://[^/?#[:space:]]+' THEN
            RAISE EXCEPTION 'setting "%" must be an http or https URL', k
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
    END LOOP;
    IF creating AND type = 'oauth2' THEN
        g := coalesce(g, 'authorization_code');
        IF NOT settings ? 'token_url' THEN
            RAISE EXCEPTION 'an oauth2 client needs a token_url' USING ERRCODE = 'invalid_parameter_value';
        END IF;
        IF NOT settings ? 'client_id' THEN
            RAISE EXCEPTION 'an oauth2 client needs a client_id' USING ERRCODE = 'invalid_parameter_value';
        END IF;
        IF g = 'authorization_code' AND NOT settings ? 'auth_url' THEN
            RAISE EXCEPTION 'an authorization_code client needs an auth_url' USING ERRCODE = 'invalid_parameter_value';
        END IF;
        settings := settings || jsonb_build_object('grant', g);
    END IF;
    RETURN settings;
END
$$;

CREATE FUNCTION create_client(name text, service text, type text, settings jsonb DEFAULT '{}')
    RETURNS uuid
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    s jsonb;
    new_id uuid := gen_random_uuid();
BEGIN
    PERFORM tokenvault._require(name, 'name'), tokenvault._require(service, 'service'),
            tokenvault._require(type, 'type');
    IF type NOT IN ('oauth2', 'basic', 'api_key', 'noauth') THEN
        RAISE EXCEPTION 'unknown client type "%"', type
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use oauth2, basic, api_key or noauth.';
    END IF;
    IF name = '' OR service = '' THEN
        RAISE EXCEPTION 'name and service must not be empty' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    s := tokenvault._client_settings(type, settings, true);
    INSERT INTO tokenvault.clients (id, name, service, type, grant_type, client_id, auth_url, token_url,
            refresh_url, revoke_url, scopes, client_auth, token_lifetime, extra_params,
            api_key_header, api_key_prefix, secret, owner, visibility)
    VALUES (new_id, name, service, type, coalesce(s->>'grant', 'none'), s->>'client_id',
            s->>'auth_url', s->>'token_url', s->>'refresh_url', s->>'revoke_url',
            coalesce(ARRAY(SELECT jsonb_array_elements_text(s->'scopes')), '{}'),
            coalesce(s->>'client_auth', 'basic'), (s->>'token_lifetime')::integer,
            coalesce(s->'extra_params', '{}'), s->>'api_key_header', s->>'api_key_prefix',
            CASE WHEN s ? 'client_secret'
                 THEN tokenvault._seal_jsonb(jsonb_build_object('client_secret', s->'client_secret'),
                                             'client:' || new_id) END,
            tokenvault._caller(), coalesce(s->>'visibility', 'shared'));
    RETURN new_id;
END
$$;

CREATE FUNCTION _client_must_exist(client_id uuid) RETURNS tokenvault.clients
    LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    c tokenvault.clients;
BEGIN
    PERFORM tokenvault._require(client_id, 'client id');
    SELECT * INTO c FROM tokenvault.clients t WHERE t.id = _client_must_exist.client_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'client % does not exist', client_id
            USING ERRCODE = 'undefined_object',
                  HINT = 'List clients with: SELECT id, name, service FROM tokenvault.clients;';
    END IF;
    RETURN c;
END
$$;

-- Settings given replace those stored; a key set to null clears it.
CREATE FUNCTION update_client(client_id uuid, settings jsonb) RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    c tokenvault.clients := tokenvault._client_must_exist(client_id);
    s jsonb;
    cleared text[];
BEGIN
    PERFORM tokenvault._require(settings, 'settings');
    IF jsonb_typeof(settings) = 'object' THEN
        cleared := ARRAY(SELECT key FROM jsonb_each(settings) WHERE jsonb_typeof(value) = 'null');
        settings := jsonb_strip_nulls(settings);
    END IF;
    IF 'grant' = ANY (cleared) OR 'token_url' = ANY (cleared) OR 'client_id' = ANY (cleared) THEN
        RAISE EXCEPTION 'grant, token_url and client_id cannot be cleared' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    s := tokenvault._client_settings(c.type, settings, false);
    UPDATE tokenvault.clients t SET
        grant_type     = coalesce(s->>'grant', t.grant_type),
        client_id      = coalesce(s->>'client_id', t.client_id),
        auth_url       = CASE WHEN 'auth_url' = ANY (cleared) THEN NULL ELSE coalesce(s->>'auth_url', t.auth_url) END,
        token_url      = coalesce(s->>'token_url', t.token_url),
        refresh_url    = CASE WHEN 'refresh_url' = ANY (cleared) THEN NULL ELSE coalesce(s->>'refresh_url', t.refresh_url) END,
        revoke_url     = CASE WHEN 'revoke_url' = ANY (cleared) THEN NULL ELSE coalesce(s->>'revoke_url', t.revoke_url) END,
        scopes         = CASE WHEN s ? 'scopes' THEN ARRAY(SELECT jsonb_array_elements_text(s->'scopes'))
                              WHEN 'scopes' = ANY (cleared) THEN '{}' ELSE t.scopes END,
        client_auth    = CASE WHEN 'client_auth' = ANY (cleared) THEN 'basic' ELSE coalesce(s->>'client_auth', t.client_auth) END,
        token_lifetime = CASE WHEN 'token_lifetime' = ANY (cleared) THEN NULL
                              ELSE coalesce((s->>'token_lifetime')::integer, t.token_lifetime) END,
        extra_params   = CASE WHEN 'extra_params' = ANY (cleared) THEN '{}' ELSE coalesce(s->'extra_params', t.extra_params) END,
        api_key_header = CASE WHEN 'api_key_header' = ANY (cleared) THEN NULL ELSE coalesce(s->>'api_key_header', t.api_key_header) END,
        api_key_prefix = CASE WHEN 'api_key_prefix' = ANY (cleared) THEN NULL ELSE coalesce(s->>'api_key_prefix', t.api_key_prefix) END,
        visibility     = coalesce(s->>'visibility', t.visibility),
        secret         = CASE WHEN s ? 'client_secret'
                              THEN tokenvault._seal_jsonb(jsonb_build_object('client_secret', s->'client_secret'),
                                                          'client:' || t.id)
                              WHEN 'client_secret' = ANY (cleared) THEN NULL ELSE t.secret END,
        updated_at     = now()
     WHERE t.id = c.id;
END
$$;

CREATE FUNCTION delete_client(client_id uuid, force boolean DEFAULT false) RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    c tokenvault.clients := tokenvault._client_must_exist(client_id);
    n bigint;
BEGIN
    SELECT count(*) INTO n FROM tokenvault.auths a WHERE a.client_id = c.id;
    IF n > 0 AND NOT coalesce(force, false) THEN
        RAISE EXCEPTION 'client % is used by % auth(s)', c.id, n
            USING ERRCODE = 'dependent_objects_still_exist',
                  HINT = 'Delete those auths first, or call tokenvault.delete_client(id, force => true) to delete them too.';
    END IF;
    DELETE FROM tokenvault.auths a WHERE a.client_id = c.id;
    DELETE FROM tokenvault.clients WHERE id = c.id;
END
$$;

------------------------------------------------------------------------------
-- Auths
------------------------------------------------------------------------------

-- A timestamp from JSON: an ISO 8601 string or seconds since the epoch.
CREATE FUNCTION _json_timestamp(value jsonb, field text) RETURNS timestamptz
    LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF value IS NULL OR jsonb_typeof(value) = 'null' THEN
        RETURN NULL;
    ELSIF jsonb_typeof(value) = 'number' THEN
        RETURN to_timestamp((value #>> '{}')::double precision);
    ELSIF jsonb_typeof(value) = 'string' THEN
        RETURN (value #>> '{}')::timestamptz;
    END IF;
    RAISE EXCEPTION '"%" must be a timestamp or seconds since the epoch', field
        USING ERRCODE = 'invalid_parameter_value';
EXCEPTION
    WHEN datetime_field_overflow OR invalid_datetime_format OR invalid_parameter_value
         OR numeric_value_out_of_range OR data_exception THEN
        RAISE EXCEPTION '"%" must be a timestamp or seconds since the epoch', field
            USING ERRCODE = 'invalid_datetime_format',
                  HINT = 'For example "2030-01-31T12:00:00Z" or 1895666400.';
END
$$;

-- Seconds from JSON: a number or a numeric string, not negative.
CREATE FUNCTION _json_seconds(value jsonb, field text) RETURNS interval
    LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    n numeric;
BEGIN
    IF value IS NULL OR jsonb_typeof(value) = 'null' THEN
        RETURN NULL;
    END IF;
    IF jsonb_typeof(value) NOT IN ('number', 'string') OR (value #>> '{}') !~ '^\s*-?[0-9]+(\.[0-9]+)?\s*$' THEN
        RAISE EXCEPTION '"%" must be a number of seconds', field USING ERRCODE = 'invalid_parameter_value';
    END IF;
    n := (value #>> '{}')::numeric;
    IF n < 0 THEN
        RAISE EXCEPTION '"%" must not be negative', field USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF n > 3153600000 THEN
        RAISE EXCEPTION '"%" is more than 100 years', field USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN n * interval '1 second';
END
$$;

-- Split imported credential data into the plain columns and the secret,
-- checking it fits the client's type.  Returns the row to store, secret
-- still unsealed in the "secret" field.
CREATE FUNCTION _auth_fields(c tokenvault.clients, data jsonb, scopes text[]) RETURNS jsonb
    LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    plain_keys constant text[] := ARRAY['token_type', 'expires_in', 'expires_at', 'scope',
                                        'refresh_token_expires_in', 'refresh_expires_at'];
    allowed text[];
    required text[];
    k text;
    secret jsonb;
    expires_at timestamptz;
    refresh_expires_at timestamptz;
    scope_list text[];
BEGIN
    data := coalesce(data, '{}');
    IF jsonb_typeof(data) <> 'object' THEN
        RAISE EXCEPTION 'auth data must be a JSON object' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF pg_column_size(data) > 65536 THEN
        RAISE EXCEPTION 'auth data is larger than 64 kB'
            USING ERRCODE = 'program_limit_exceeded',
                  HINT = 'A credential, with its extra fields, is limited to 64 kB.';
    END IF;

    CASE c.type
        WHEN 'oauth2' THEN
            allowed := NULL;    -- any: providers send extra fields worth keeping
            required := CASE c.grant_type WHEN 'password' THEN ARRAY['username', 'password'] ELSE '{}' END;
        WHEN 'api_key' THEN
            allowed := ARRAY['api_key', 'expires_in', 'expires_at'];
            required := ARRAY['api_key'];
        WHEN 'basic' THEN
            allowed := ARRAY['username', 'password', 'expires_in', 'expires_at'];
            required := ARRAY['username', 'password'];
        ELSE
            allowed := '{}';
            required := '{}';
    END CASE;

    FOR k IN SELECT jsonb_object_keys(data) LOOP
        IF allowed IS NOT NULL AND NOT k = ANY (allowed) THEN
            RAISE EXCEPTION 'field "%" does not fit a % client', k, c.type
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = CASE WHEN allowed = '{}' THEN 'A noauth auth takes no data.'
                                  ELSE 'A ' || c.type || ' auth takes: ' || array_to_string(allowed, ', ') || '.' END;
        END IF;
        IF c.type = 'oauth2' AND k IN ('api_key', 'username', 'password') AND c.grant_type <> 'password' THEN
            RAISE EXCEPTION 'field "%" does not fit an oauth2 client with grant %', k, c.grant_type
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Only password-grant clients keep a username and password.';
        END IF;
        IF k IN ('access_token', 'refresh_token', 'id_token', 'api_key', 'username', 'password', 'token_type', 'scope')
           AND (jsonb_typeof(data->k) <> 'string' OR data->>k = '') THEN
            RAISE EXCEPTION 'field "%" must be a non-empty string', k USING ERRCODE = 'invalid_parameter_value';
        END IF;
    END LOOP;
    FOR k IN SELECT unnest(required) LOOP
        IF NOT data ? k THEN
            RAISE EXCEPTION 'a % auth needs the field "%"', c.type, k USING ERRCODE = 'invalid_parameter_value';
        END IF;
    END LOOP;
    IF c.type = 'oauth2' AND c.grant_type = 'authorization_code'
       AND NOT (data ? 'access_token' OR data ? 'refresh_token') THEN
        RAISE EXCEPTION 'an authorization_code auth needs an access_token or a refresh_token'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Import the tokens the provider issued.';
    END IF;

    -- "expires_at" wins over "expires_in" when a full token response is imported.
    expires_at := coalesce(tokenvault._json_timestamp(data->'expires_at', 'expires_at'),
                           now() + tokenvault._json_seconds(data->'expires_in', 'expires_in'));
    IF expires_at IS NULL AND c.type = 'oauth2' AND data ? 'access_token' AND c.token_lifetime IS NOT NULL THEN
        expires_at := now() + c.token_lifetime * interval '1 second';
    END IF;
    refresh_expires_at := coalesce(
        tokenvault._json_timestamp(data->'refresh_expires_at', 'refresh_expires_at'),
        now() + tokenvault._json_seconds(data->'refresh_token_expires_in', 'refresh_token_expires_in'));
    scope_list := coalesce(scopes,
                           regexp_split_to_array(nullif(btrim(data->>'scope'), ''), '[\s,]+'),
                           c.scopes);

    secret := data - plain_keys;
    RETURN jsonb_build_object(
        'secret', secret,
        'token_type', CASE WHEN c.type = 'oauth2' THEN coalesce(data->>'token_type', 'Bearer') END,
        'expires_at', expires_at,
        'refresh_expires_at', refresh_expires_at,
        'scopes', to_jsonb(scope_list));
END
$$;

CREATE FUNCTION create_auth(user_id uuid, client_id uuid, name text DEFAULT NULL,
                            data jsonb DEFAULT '{}', scopes text[] DEFAULT NULL) RETURNS uuid
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    c tokenvault.clients := tokenvault._client_must_exist(client_id);
    f jsonb;
    new_id uuid := gen_random_uuid();
BEGIN
    PERFORM tokenvault._user_must_exist(user_id);
    IF c.visibility = 'private' AND NOT pg_has_role(tokenvault._caller(), c.owner, 'MEMBER') THEN
        RAISE EXCEPTION 'client % is private to role %', c.id, c.owner
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF name = '' THEN
        RAISE EXCEPTION 'auth name must not be empty' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    f := tokenvault._auth_fields(c, data, scopes);
    INSERT INTO tokenvault.auths (id, user_id, client_id, name, service, scopes, token_type,
                                  expires_at, refresh_expires_at, secret)
    VALUES (new_id, user_id, c.id, coalesce(name, c.name), c.service,
            ARRAY(SELECT jsonb_array_elements_text(f->'scopes')), f->>'token_type',
            (f->>'expires_at')::timestamptz, (f->>'refresh_expires_at')::timestamptz,
            tokenvault._seal_jsonb(f->'secret', 'auth:' || new_id));
    RETURN new_id;
END
$$;

CREATE FUNCTION _auth_must_exist(auth_id uuid) RETURNS tokenvault.auths
    LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    a tokenvault.auths;
BEGIN
    PERFORM tokenvault._require(auth_id, 'auth id');
    SELECT * INTO a FROM tokenvault.auths WHERE id = auth_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'auth % does not exist', auth_id
            USING ERRCODE = 'undefined_object',
                  HINT = 'List a user''s auths with tokenvault.user_auths().';
    END IF;
    RETURN a;
END
$$;

-- New data replaces the whole credential, as a new import would; the edit
-- bumps the version, so a refresh already under way does not overwrite it.
CREATE FUNCTION update_auth(auth_id uuid, name text DEFAULT NULL, data jsonb DEFAULT NULL) RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    a tokenvault.auths := tokenvault._auth_must_exist(auth_id);
    c tokenvault.clients := tokenvault._client_must_exist(a.client_id);
    f jsonb;
BEGIN
    IF name = '' THEN
        RAISE EXCEPTION 'auth name must not be empty' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF data IS NOT NULL THEN
        f := tokenvault._auth_fields(c, data, NULL);
        UPDATE tokenvault.auths SET
            scopes = ARRAY(SELECT jsonb_array_elements_text(f->'scopes')),
            token_type = f->>'token_type',
            expires_at = (f->>'expires_at')::timestamptz,
            refresh_expires_at = (f->>'refresh_expires_at')::timestamptz,
            secret = tokenvault._seal_jsonb(f->'secret', 'auth:' || a.id),
            status = 'active', failure_count = 0, last_error = NULL, expiry_notified_at = NULL
         WHERE id = a.id;
    END IF;
    UPDATE tokenvault.auths SET
        name = coalesce(update_auth.name, auths.name),
        version = auths.version + 1,
        updated_at = now()
     WHERE id = a.id;
END
$$;

CREATE FUNCTION delete_auth(auth_id uuid, revoke boolean DEFAULT false) RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    a tokenvault.auths := tokenvault._auth_must_exist(auth_id);
BEGIN
    IF coalesce(revoke, false) THEN
        RAISE EXCEPTION 'revoking at the provider is not supported yet'
            USING ERRCODE = 'feature_not_supported',
                  HINT = 'Call tokenvault.delete_auth(id) to delete the auth without revoking it.';
    END IF;
    DELETE FROM tokenvault.auths WHERE id = a.id;
END
$$;

CREATE FUNCTION access_token(auth_id uuid) RETURNS text
    LANGUAGE c VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'tv_access_token';

-- The whole credential, opened: the secret fields with the plain ones.
CREATE FUNCTION credentials(auth_id uuid) RETURNS jsonb
    LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    a tokenvault.auths := tokenvault._auth_must_exist(auth_id);
BEGIN
    RETURN tokenvault._open_jsonb(a.secret, 'auth:' || a.id)
        || jsonb_strip_nulls(jsonb_build_object(
               'token_type', a.token_type,
               'expires_at', a.expires_at,
               'refresh_expires_at', a.refresh_expires_at,
               'scope', nullif(array_to_string(a.scopes, ' '), '')));
END
$$;

-- The HTTP headers that authenticate a request with this auth.
CREATE FUNCTION http_headers(auth_id uuid) RETURNS jsonb
    LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    a tokenvault.auths := tokenvault._auth_must_exist(auth_id);
    c tokenvault.clients := tokenvault._client_must_exist(a.client_id);
    s jsonb;
BEGIN
    CASE c.type
        WHEN 'oauth2' THEN
            -- RFC 6750 scheme names are case-insensitive, but many APIs insist on "Bearer".
            RETURN jsonb_build_object('Authorization',
                CASE WHEN lower(a.token_type) = 'bearer' THEN 'Bearer' ELSE a.token_type END
                || ' ' || tokenvault.access_token(a.id));
        WHEN 'api_key' THEN
            RETURN jsonb_build_object(coalesce(c.api_key_header, 'X-API-Key'),
                coalesce(c.api_key_prefix || ' ', '') || tokenvault.access_token(a.id));
        WHEN 'basic' THEN
            s := tokenvault._open_jsonb(a.secret, 'auth:' || a.id);
            RETURN jsonb_build_object('Authorization', 'Basic ' ||
                translate(encode(convert_to((s->>'username') || ':' || (s->>'password'), 'UTF8'), 'base64'), E'\n', ''));
        ELSE
            RETURN '{}'::jsonb;
    END CASE;
END
$$;

------------------------------------------------------------------------------
-- Keys
------------------------------------------------------------------------------

CREATE FUNCTION key_ring() RETURNS TABLE (key_id bigint, newest boolean)
    LANGUAGE c VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'tv_key_ring';

-- How many secrets each key seals.
CREATE FUNCTION key_usage() RETURNS TABLE (key_id bigint, newest boolean, secrets bigint)
    LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    WITH used AS (
        SELECT tokenvault._key_id(secret) AS key_id FROM tokenvault.auths
        UNION ALL
        SELECT tokenvault._key_id(secret) FROM tokenvault.clients WHERE secret IS NOT NULL
    )
    SELECT coalesce(r.key_id, u.key_id), coalesce(r.newest, false), count(u.key_id)
      FROM tokenvault.key_ring() r
      FULL JOIN used u ON u.key_id = r.key_id
     GROUP BY 1, 2
     ORDER BY 2, 1
$$;

CREATE FUNCTION add_key() RETURNS bigint
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    -- one writer of the key file at a time
    PERFORM pg_advisory_xact_lock(hashtext('tokenvault.key_file'));
    RETURN tokenvault._add_key();
END
$$;

CREATE FUNCTION drop_key(key_id bigint) RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    n bigint;
BEGIN
    PERFORM tokenvault._require(key_id, 'key id');
    PERFORM pg_advisory_xact_lock(hashtext('tokenvault.key_file'));
    SELECT u.secrets INTO n FROM tokenvault.key_usage() u WHERE u.key_id = drop_key.key_id;
    IF n > 0 THEN
        RAISE EXCEPTION 'key % still seals % secret(s)', key_id, n
            USING ERRCODE = 'dependent_objects_still_exist',
                  HINT = 'Run tokenvault.rotate_key() first to re-seal them with the newest key.';
    END IF;
    PERFORM tokenvault._drop_key(key_id);
END
$$;

-- Re-seal one batch of a table's secrets (columns id and secret, associated
-- data "<prefix>:<id>") that the newest key did not seal.
CREATE FUNCTION _reseal_batch(tbl regclass, prefix text, after uuid, newest bigint,
                              OUT last_id uuid, OUT resealed bigint)
    LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    EXECUTE format($q$
        WITH batch AS (
            SELECT id FROM %1$s WHERE id > $1 AND secret IS NOT NULL ORDER BY id LIMIT 1000 FOR UPDATE
        ), resealed AS (
            UPDATE %1$s t
               SET secret = tokenvault._seal_jsonb(tokenvault._open_jsonb(t.secret, %2$L || t.id), %2$L || t.id)
              FROM batch
             WHERE t.id = batch.id AND tokenvault._key_id(t.secret) <> $2
            RETURNING 1
        )
        SELECT (SELECT id FROM batch ORDER BY id DESC LIMIT 1), (SELECT count(*) FROM resealed)
        $q$, tbl, prefix || ':')
    INTO last_id, resealed USING after, newest;
END
$$;

-- Re-seal every secret not under the newest key, a batch at a time.
CREATE FUNCTION rotate_key() RETURNS bigint
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    newest bigint := (SELECT r.key_id FROM tokenvault.key_ring() r WHERE r.newest);
    total bigint := 0;
    t record;
    last_id uuid;
    n bigint;
BEGIN
    FOR t IN SELECT * FROM (VALUES ('tokenvault.clients'::regclass, 'client'),
                                   ('tokenvault.auths'::regclass, 'auth')) v (tbl, prefix) LOOP
        last_id := '00000000-0000-0000-0000-000000000000';
        LOOP
            SELECT * INTO last_id, n FROM tokenvault._reseal_batch(t.tbl, t.prefix, last_id, newest);
            EXIT WHEN last_id IS NULL;
            CONTINUE WHEN n = 0;
            total := total + n;
            RAISE NOTICE 'rotate_key: % secret(s) re-sealed with key % so far', total, newest;
        END LOOP;
    END LOOP;
    RETURN total;
END
$$;

------------------------------------------------------------------------------
-- Privileges: nothing for PUBLIC; the app reads tokens, the admin also
-- manages clients and keys.  Secrets leave only through the functions.
------------------------------------------------------------------------------

REVOKE ALL ON ALL TABLES IN SCHEMA tokenvault FROM PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA tokenvault FROM PUBLIC;
GRANT USAGE ON SCHEMA tokenvault TO tokenvault_app, tokenvault_admin;

GRANT SELECT ON users TO tokenvault_app;
GRANT SELECT (id, user_id, client_id, name, service, scopes, status, token_type, expires_at,
              refresh_expires_at, refresh_at, last_refreshed_at, failure_count, last_error,
              version, expiry_notified_at, created_at, updated_at)
    ON auths TO tokenvault_app;
GRANT SELECT (id, name, service, type, grant_type, client_id, auth_url, token_url, refresh_url,
              revoke_url, scopes, client_auth, token_lifetime, extra_params, api_key_header,
              api_key_prefix, owner, visibility, created_at, updated_at)
    ON clients TO tokenvault_app;

GRANT EXECUTE ON FUNCTION
    create_user(text, text), find_user(text), delete_user(uuid), user_auths(uuid),
    delete_user_auths(uuid), create_auth(uuid, uuid, text, jsonb, text[]),
    update_auth(uuid, text, jsonb), delete_auth(uuid, boolean),
    access_token(uuid), credentials(uuid), http_headers(uuid)
    TO tokenvault_app;

GRANT EXECUTE ON FUNCTION
    create_client(text, text, text, jsonb), update_client(uuid, jsonb), delete_client(uuid, boolean),
    key_ring(), key_usage(), add_key(), drop_key(bigint), rotate_key()
    TO tokenvault_admin;
