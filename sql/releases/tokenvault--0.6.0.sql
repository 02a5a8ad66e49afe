-- tokenvault 0.6.0, built by make from the files of sql/: edit those, not this.

\echo Use "CREATE EXTENSION tokenvault" to load this file. \quit

-- The two roles tokenvault grants to, created once per cluster

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

-- The tables, their indexes and sequences, which are dumped, and row level security enabled

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
    -- provider quirks
    body_format     text NOT NULL DEFAULT 'form' CHECK (body_format IN ('form', 'json')),
    token_path      text CHECK (token_path <> ''),
    expires_in_unit text NOT NULL DEFAULT 'seconds'
                    CHECK (expires_in_unit IN ('seconds', 'milliseconds')),
    scope_separator text NOT NULL DEFAULT ' ' CHECK (scope_separator IN (' ', ',')),
    pkce            boolean NOT NULL DEFAULT true,
    refresh_every   integer CHECK (refresh_every > 0),
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
                       CHECK (status IN ('active', 'needs_reauth', 'expired', 'revoked', 'error')),
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

-- Authorizations under way: one row from authorize_url() to
-- complete_authorization(), at most ten minutes.
CREATE TABLE auth_states (
    state        text PRIMARY KEY,
    client_id    uuid NOT NULL REFERENCES clients (id) ON DELETE CASCADE,
    user_id      uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    auth_id      uuid REFERENCES auths (id) ON DELETE CASCADE,
    name         text,
    scopes       text[] NOT NULL,
    redirect_uri text NOT NULL,
    verifier     bytea,         -- sealed PKCE code verifier
    expires_at   timestamptz NOT NULL
);
CREATE INDEX auth_states_expires_at_idx ON auth_states (expires_at);

CREATE TABLE events (
    id           bigserial PRIMARY KEY,
    kind         text NOT NULL,
    auth_id      uuid,
    payload      jsonb NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    delivered_at timestamptz     -- every webhook has it (at once when there is none)
);
CREATE INDEX events_auth_id_idx ON events (auth_id);
CREATE INDEX events_delivered_at_idx ON events (delivered_at);

CREATE TABLE webhooks (
    id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    url        text NOT NULL,
    secret     bytea NOT NULL,  -- sealed HMAC key
    kinds      text[],          -- NULL: every kind
    enabled    boolean NOT NULL DEFAULT true,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE webhook_deliveries (
    id              bigserial PRIMARY KEY,
    webhook_id      uuid NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    event_id        bigint NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    auth_id         uuid,
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    delivered_at    timestamptz,
    last_status     integer,
    last_error      text
);

-- the head of each (webhook, auth) queue is what may be sent
CREATE INDEX webhook_deliveries_pending_idx ON webhook_deliveries (webhook_id, auth_id, id)
    WHERE delivered_at IS NULL;
CREATE INDEX webhook_deliveries_event_id_idx ON webhook_deliveries (event_id);
SELECT pg_catalog.pg_extension_config_dump('events', '');
SELECT pg_catalog.pg_extension_config_dump('events_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('webhooks', '');
SELECT pg_catalog.pg_extension_config_dump('webhook_deliveries', '');
SELECT pg_catalog.pg_extension_config_dump('webhook_deliveries_id_seq', '');

CREATE TABLE solutions (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    title       text NOT NULL CHECK (title <> '' AND length(title) <= 1024),
    description text NOT NULL DEFAULT '' CHECK (length(description) <= 65536),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- What an instance of a solution fills, addressed by its external id: an
-- auth of one client or service, or a config value.  External ids compare
-- byte for byte (COLLATE "C"), so they are case-sensitive whatever the
-- database's collation.  A static slot holds the one auth every instance
-- uses; it is never copied into the instances.
CREATE TABLE slots (
    solution_id    uuid NOT NULL REFERENCES solutions (id) ON DELETE CASCADE,
    external_id    text COLLATE "C" NOT NULL CHECK (external_id <> '' AND length(external_id) <= 255),
    kind           text NOT NULL CHECK (kind IN ('auth', 'config')),
    position       integer NOT NULL,
    client_id      uuid REFERENCES clients (id),
    service        text CHECK (service <> ''),
    scopes         text[],
    required       boolean NOT NULL DEFAULT false,
    force_unique   boolean NOT NULL DEFAULT false,
    static_auth_id uuid REFERENCES auths (id),
    default_value  jsonb CHECK (jsonb_typeof(default_value) <> 'null'),
    created_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (solution_id, external_id),
    CONSTRAINT slots_auth_takes_client_or_service
        CHECK (CASE WHEN kind = 'auth' THEN num_nonnulls(client_id, service) = 1
                    ELSE num_nonnulls(client_id, service) = 0 END),
    CONSTRAINT slots_auth_settings CHECK (kind = 'auth' OR (scopes IS NULL AND NOT force_unique
                                                         AND static_auth_id IS NULL)),
    CONSTRAINT slots_config_settings CHECK (kind = 'config' OR default_value IS NULL),
    CONSTRAINT slots_static_not_unique CHECK (static_auth_id IS NULL OR NOT force_unique)
);
CREATE INDEX slots_client_id_idx ON slots (client_id) WHERE client_id IS NOT NULL;
CREATE INDEX slots_static_auth_id_idx ON slots (static_auth_id) WHERE static_auth_id IS NOT NULL;

CREATE TABLE instances (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    solution_id uuid NOT NULL REFERENCES solutions (id),
    owner       uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name        text NOT NULL CHECK (name <> '' AND length(name) <= 1024),
    enabled     boolean NOT NULL DEFAULT false,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (id, solution_id)
);
CREATE INDEX instances_owner_idx ON instances (owner);
CREATE INDEX instances_solution_id_idx ON instances (solution_id);

-- The solution_id column lets the keys tie each value to a slot of its own
-- instance's solution.
CREATE TABLE instance_auth_values (
    instance_id uuid NOT NULL,
    solution_id uuid NOT NULL,
    external_id text COLLATE "C" NOT NULL,
    auth_id     uuid NOT NULL REFERENCES auths (id),
    PRIMARY KEY (instance_id, external_id),
    FOREIGN KEY (instance_id, solution_id) REFERENCES instances (id, solution_id) ON DELETE CASCADE,
    FOREIGN KEY (solution_id, external_id) REFERENCES slots (solution_id, external_id) ON DELETE CASCADE
);
CREATE INDEX instance_auth_values_auth_id_idx ON instance_auth_values (auth_id);
CREATE INDEX instance_auth_values_slot_idx ON instance_auth_values (solution_id, external_id);

CREATE TABLE instance_config_values (
    instance_id uuid NOT NULL,
    solution_id uuid NOT NULL,
    external_id text COLLATE "C" NOT NULL,
    value       jsonb NOT NULL CHECK (jsonb_typeof(value) <> 'null'),
    PRIMARY KEY (instance_id, external_id),
    FOREIGN KEY (instance_id, solution_id) REFERENCES instances (id, solution_id) ON DELETE CASCADE,
    FOREIGN KEY (solution_id, external_id) REFERENCES slots (solution_id, external_id) ON DELETE CASCADE
);
CREATE INDEX instance_config_values_slot_idx ON instance_config_values (solution_id, external_id);
SELECT pg_catalog.pg_extension_config_dump('solutions', '');
SELECT pg_catalog.pg_extension_config_dump('slots', '');
SELECT pg_catalog.pg_extension_config_dump('instances', '');
SELECT pg_catalog.pg_extension_config_dump('instance_auth_values', '');
SELECT pg_catalog.pg_extension_config_dump('instance_config_values', '');

-- {relatedId, key, value} tokens private to the role that wrote them.  The
-- role is held by its OID (regrole: a dump writes it as a name, and a
-- restore finds that name's OID), so a role renamed keeps its tokens and a
-- role dropped leaves them to no later role of the same name.  The value is
-- sealed with the owner's name (as it was then), related id and key as its
-- associated data, so a value copied onto another row does not open.
-- Related ids and keys may hold any character, dots included; they are only
-- compared.
CREATE TABLE private_tokens (
    owner      regrole NOT NULL,
    owner_name name NOT NULL,
    related_id text NOT NULL CHECK (related_id <> '' AND length(related_id) <= 1024),
    key        text NOT NULL CHECK (key <> '' AND length(key) <= 1024),
    value      bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (owner, related_id, key)
);

-- Tokens of an end user's account, shared with roles by user_token_grants.
CREATE TABLE user_tokens (
    user_id    uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    related_id text NOT NULL CHECK (related_id <> '' AND length(related_id) <= 1024),
    key        text NOT NULL CHECK (key <> '' AND length(key) <= 1024),
    value      bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, related_id, key)
);

-- A role may read, or read and write, a user's tokens: all of them (related
-- id NULL) or those of one related id.  Members of the role inherit it.
CREATE TABLE user_token_grants (
    user_id    uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    grantee    regrole NOT NULL,
    privilege  text NOT NULL CHECK (privilege IN ('read', 'write')),
    related_id text CHECK (related_id <> ''),
    granted_by name NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE NULLS NOT DISTINCT (user_id, grantee, related_id)
);
SELECT pg_catalog.pg_extension_config_dump('private_tokens', '');
SELECT pg_catalog.pg_extension_config_dump('user_tokens', '');
SELECT pg_catalog.pg_extension_config_dump('user_token_grants', '');

-- Through the table, a role sees its own private tokens only (the policies
-- are in privileges.sql).
ALTER TABLE private_tokens ENABLE ROW LEVEL SECURITY;

-- What C and SQL pass each other: typed rows, not JSON (src/verdict.h, src/engine.c, src/webhooks.c)

-- What became of a token request or a refresh.  src/verdict.h lists the
-- same labels in the same order.
CREATE TYPE outcome AS ENUM ('done', 'needs_reauth', 'retryable', 'error');

-- A token request's verdict, as oauth2.c judges the provider's answer.
CREATE TYPE verdict AS (
    outcome     outcome,
    status      integer,    -- HTTP status, 0 when none came
    error       text,       -- the provider's OAuth2 error code
    message     text,       -- what went wrong, never a secret
    retry_after integer,    -- seconds, from Retry-After
    token       jsonb       -- the provider's token object, when done
);

-- A refresh's request, or (outcome set) why none is needed.
CREATE TYPE refresh_plan AS (
    outcome outcome,        -- NULL: send the request
    message text,
    kind    text,           -- 'refresh' or 'token': which URL and extra parameters
    version bigint,         -- the auth's, for _refresh_apply
    config  jsonb,          -- the client's settings, for oauth2.c
    params  jsonb,          -- the grant's parameters
    keep    jsonb           -- what of the credential a new token leaves in place
);

-- A webhook delivery to send, signed with the webhook's secret.
CREATE TYPE delivery AS (
    id     bigint,
    url    text,
    event  text,
    body   text,
    secret text
);

-- Small helpers the other files use: the caller, NULL checks, settings, restores

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

-- A setting in seconds (they show as '60s', '2min', '7d') as an interval.
-- (No SET search_path on this and the other one-line helpers, so that they
-- are inlined; every name in them is qualified.)
CREATE FUNCTION _setting_interval(name text) RETURNS interval
    LANGUAGE sql STABLE AS $$
    SELECT pg_catalog.current_setting(name)::pg_catalog.interval
$$;

-- pg_dump's scripts set row_security off, and a restore loads each table
-- whole in foreign-key order: instances before their values, slots after
-- the instances.  The checks that span tables (required slots filled) hold
-- for what was dumped and would refuse it half loaded, so a restore skips
-- them.  Only the tables' owner can write them directly, and it could as
-- well disable the triggers.
CREATE FUNCTION _restoring() RETURNS boolean
    LANGUAGE sql STABLE AS $$
    SELECT pg_catalog.current_setting('row_security') = 'off'
$$;

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

CREATE FUNCTION _add_key() RETURNS bigint
    LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'tv_add_key_sql';

CREATE FUNCTION _drop_key(key_id bigint) RETURNS void
    LANGUAGE c STRICT VOLATILE AS 'MODULE_PATHNAME', 'tv_drop_key_sql';

-- Users: the application's end users, and deleting them with what they hold

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

-- The user's instances go before its auths, which they may use.
CREATE FUNCTION delete_user(user_id uuid) RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM tokenvault._user_must_exist(user_id);
    DELETE FROM tokenvault.instances i WHERE i.owner = delete_user.user_id;
    DELETE FROM tokenvault.auths a WHERE a.user_id = delete_user.user_id;
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

CREATE FUNCTION delete_user_auths(user_id uuid, force boolean DEFAULT false) RETURNS integer
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    ids uuid[];
    n integer;
BEGIN
    PERFORM tokenvault._user_must_exist(user_id);
    ids := ARRAY(SELECT a.id FROM tokenvault.auths a WHERE a.user_id = delete_user_auths.user_id);
    IF coalesce(force, false) THEN
        PERFORM tokenvault._release_auths(ids);
    END IF;
    PERFORM tokenvault._refuse_auths_in_use(ids);
    DELETE FROM tokenvault.auths a WHERE a.user_id = delete_user_auths.user_id;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;

-- Clients: OAuth2 clients and credential shapes, their settings and provider quirks

-- Check a settings object and return it with defaults filled in for a type.
-- Unknown keys are refused: a misspelt "client_secert" must not pass silently.
CREATE FUNCTION _client_settings(type text, settings jsonb, creating boolean) RETURNS jsonb
    LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    known constant text[] := ARRAY['grant', 'client_id', 'client_secret', 'auth_url', 'token_url',
        'refresh_url', 'revoke_url', 'scopes', 'client_auth', 'token_lifetime', 'extra_params',
        'body_format', 'token_path', 'expires_in_unit', 'scope_separator', 'pkce', 'refresh_every',
        'api_key_header', 'api_key_prefix', 'visibility'];
    oauth2_only constant text[] := ARRAY['grant', 'client_id', 'client_secret', 'auth_url', 'token_url',
        'refresh_url', 'revoke_url', 'scopes', 'client_auth', 'token_lifetime', 'extra_params',
        'body_format', 'token_path', 'expires_in_unit', 'scope_separator', 'pkce', 'refresh_every'];
    choices constant jsonb := '{"client_auth": ["basic", "post"], "visibility": ["private", "shared"],
        "body_format": ["form", "json"], "expires_in_unit": ["seconds", "milliseconds"],
        "scope_separator": [" ", ","]}';
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
            IF jsonb_typeof(settings->k) <> 'object'
               OR EXISTS (SELECT FROM jsonb_each(settings->k) e
                           WHERE e.key NOT IN ('authorize', 'token', 'refresh') OR jsonb_typeof(e.value) <> 'object'
                              OR EXISTS (SELECT FROM jsonb_each(e.value) p WHERE jsonb_typeof(p.value) <> 'string')) THEN
                RAISE EXCEPTION 'setting "extra_params" must map "authorize", "token" or "refresh" to objects of strings'
                    USING ERRCODE = 'invalid_parameter_value',
                          HINT = 'For example {"authorize": {"access_type": "offline", "prompt": "consent"}}.';
            END IF;
        ELSIF k IN ('token_lifetime', 'refresh_every') THEN
            IF jsonb_typeof(settings->k) <> 'number' OR (settings->>k)::numeric <= 0
               OR (settings->>k)::numeric <> trunc((settings->>k)::numeric) OR (settings->>k)::numeric > 2147483647 THEN
                RAISE EXCEPTION 'setting "%" must be a positive whole number of seconds', k
                    USING ERRCODE = 'invalid_parameter_value';
            END IF;
        ELSIF k = 'pkce' THEN
            IF jsonb_typeof(settings->k) <> 'boolean' THEN
                RAISE EXCEPTION 'setting "pkce" must be true or false' USING ERRCODE = 'invalid_parameter_value';
            END IF;
        ELSIF jsonb_typeof(settings->k) <> 'string' OR settings->>k = '' THEN
            RAISE EXCEPTION 'setting "%" must be a non-empty string', k USING ERRCODE = 'invalid_parameter_value';
        ELSIF choices ? k AND NOT choices->k ? (settings->>k) THEN
            RAISE EXCEPTION 'setting "%" must be one of %', k,
                (SELECT string_agg(format('"%s"', c), ', ') FROM jsonb_array_elements_text(choices->k) c)
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
    END LOOP;

    g := settings->>'grant';
    IF g IS NOT NULL AND g NOT IN ('authorization_code', 'client_credentials', 'password') THEN
        RAISE EXCEPTION 'unknown grant "%"', g
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use authorization_code, client_credentials or password.';
    END IF;
    FOR k IN SELECT unnest(ARRAY['auth_url', 'token_url', 'refresh_url', 'revoke_url']) LOOP
        IF settings ? k AND settings->>k !~* '^https?://[^/?#[:space:]]+' THEN
            RAISE EXCEPTION 'setting "%" must be an http or https URL', k
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'A URL may name the auth''s own fields in braces, as in https://{subdomain}.example.com/token.';
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
    t tokenvault.clients;
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
    t := tokenvault._client_quirks(s, t);
    INSERT INTO tokenvault.clients (id, name, service, type, grant_type, client_id, auth_url, token_url,
            refresh_url, revoke_url, scopes, client_auth, token_lifetime, extra_params,
            api_key_header, api_key_prefix, secret, owner, visibility,
            body_format, token_path, expires_in_unit, scope_separator, pkce, refresh_every)
    VALUES (new_id, name, service, type, coalesce(s->>'grant', 'none'), s->>'client_id',
            s->>'auth_url', s->>'token_url', s->>'refresh_url', s->>'revoke_url',
            coalesce(ARRAY(SELECT jsonb_array_elements_text(s->'scopes')), '{}'),
            coalesce(s->>'client_auth', 'basic'), (s->>'token_lifetime')::integer,
            coalesce(s->'extra_params', '{}'), s->>'api_key_header', s->>'api_key_prefix',
            CASE WHEN s ? 'client_secret'
                 THEN tokenvault._seal_client(jsonb_build_object('client_secret', s->'client_secret'), new_id) END,
            tokenvault._caller(), coalesce(s->>'visibility', 'shared'),
            t.body_format, t.token_path, t.expires_in_unit, t.scope_separator, t.pkce, t.refresh_every);
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
    q tokenvault.clients;
    cleared text[];
BEGIN
    PERFORM tokenvault._require(settings, 'settings');
    IF jsonb_typeof(settings) = 'object' THEN
        cleared := ARRAY(SELECT key FROM jsonb_each(settings) WHERE jsonb_typeof(value) = 'null');
        q := tokenvault._client_quirks(settings, c);
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
                              THEN tokenvault._seal_client(jsonb_build_object('client_secret', s->'client_secret'), t.id)
                              WHEN 'client_secret' = ANY (cleared) THEN NULL ELSE t.secret END,
        body_format = q.body_format, token_path = q.token_path, expires_in_unit = q.expires_in_unit,
        scope_separator = q.scope_separator, pkce = q.pkce, refresh_every = q.refresh_every,
        updated_at     = now()
     WHERE t.id = c.id;
END
$$;

CREATE FUNCTION delete_client(client_id uuid, force boolean DEFAULT false) RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    c tokenvault.clients := tokenvault._client_must_exist(client_id);
    n bigint;
    slots text;
BEGIN
    SELECT string_agg(format('"%s" of solution %s', s.external_id, s.solution_id), ', ') INTO slots
      FROM tokenvault.slots s WHERE s.client_id = c.id;
    IF slots IS NOT NULL THEN
        RAISE EXCEPTION 'client % is used by slot %', c.id, slots
            USING ERRCODE = 'dependent_objects_still_exist',
                  HINT = 'Delete those slots, or give them another client with tokenvault.update_slot().';
    END IF;
    SELECT count(*) INTO n FROM tokenvault.auths a WHERE a.client_id = c.id;
    IF n > 0 AND NOT coalesce(force, false) THEN
        RAISE EXCEPTION 'client % is used by % auth(s)', c.id, n
            USING ERRCODE = 'dependent_objects_still_exist',
                  HINT = 'Delete those auths first, or call tokenvault.delete_client(id, force => true) to delete them too (instances using them are disabled).';
    END IF;
    PERFORM tokenvault._release_auths(ARRAY(SELECT a.id FROM tokenvault.auths a WHERE a.client_id = c.id));
    DELETE FROM tokenvault.auths a WHERE a.client_id = c.id;
    DELETE FROM tokenvault.clients WHERE id = c.id;
END
$$;

-- The quirk columns, from settings; NULL where a setting is absent.
CREATE FUNCTION _client_quirks(s jsonb, t tokenvault.clients) RETURNS tokenvault.clients
    LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    cleared text[] := ARRAY(SELECT key FROM jsonb_each(s) WHERE jsonb_typeof(value) = 'null');
BEGIN
    t.body_format     := CASE WHEN 'body_format' = ANY (cleared) THEN 'form' ELSE coalesce(s->>'body_format', t.body_format, 'form') END;
    t.token_path      := CASE WHEN 'token_path' = ANY (cleared) THEN NULL ELSE coalesce(s->>'token_path', t.token_path) END;
    t.expires_in_unit := CASE WHEN 'expires_in_unit' = ANY (cleared) THEN 'seconds' ELSE coalesce(s->>'expires_in_unit', t.expires_in_unit, 'seconds') END;
    t.scope_separator := CASE WHEN 'scope_separator' = ANY (cleared) THEN ' ' ELSE coalesce(s->>'scope_separator', t.scope_separator, ' ') END;
    t.pkce            := CASE WHEN 'pkce' = ANY (cleared) THEN true ELSE coalesce((s->>'pkce')::boolean, t.pkce, true) END;
    t.refresh_every   := CASE WHEN 'refresh_every' = ANY (cleared) THEN NULL ELSE coalesce((s->>'refresh_every')::integer, t.refresh_every) END;
    RETURN t;
END
$$;

-- Auths: imported credentials, reading them (tokens, credentials, headers), editing and deleting

-- A timestamp from JSON: an ISO 8601 string or seconds since the epoch.
-- (The exception block, a subtransaction, is entered only for a value.)
CREATE FUNCTION _json_timestamp(value jsonb, field text) RETURNS timestamptz
    LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF value IS NULL OR jsonb_typeof(value) = 'null' THEN
        RETURN NULL;
    END IF;
    BEGIN
        IF jsonb_typeof(value) = 'number' THEN
            RETURN to_timestamp((value #>> '{}')::double precision);
        ELSIF jsonb_typeof(value) = 'string' THEN
            RETURN (value #>> '{}')::timestamptz;
        END IF;
    EXCEPTION
        WHEN datetime_field_overflow OR invalid_datetime_format OR numeric_value_out_of_range
             OR data_exception THEN
            NULL;
    END;
    RAISE EXCEPTION '"%" must be a timestamp or seconds since the epoch', field
        USING ERRCODE = 'invalid_datetime_format',
              HINT = 'For example "2030-01-31T12:00:00Z" or 1895666400.';
END
$$;

-- Seconds from JSON: a number or a numeric string, not negative.
CREATE FUNCTION _json_seconds(value jsonb, field text) RETURNS interval
    LANGUAGE plpgsql IMMUTABLE AS $$
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

-- Checks and splits an auth's data; the checks are expressions over the
-- fixed key lists rather than a loop over the data's keys, so a refresh's
-- token costs no query.  Within each check the keys are tried in jsonb's
-- order, so the same key is named whatever order the data came in.
CREATE FUNCTION _auth_fields(c tokenvault.clients, data jsonb, scopes text[]) RETURNS jsonb
    LANGUAGE plpgsql STABLE AS $$
DECLARE
    plain_keys constant text[] := ARRAY['token_type', 'expires_in', 'expires_at', 'scope',
                                        'refresh_token_expires_in', 'refresh_expires_at'];
    string_keys constant text[] := ARRAY['scope', 'api_key', 'id_token', 'password', 'username',
                                         'token_type', 'access_token', 'refresh_token'];
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

    IF allowed IS NOT NULL AND data - allowed <> '{}' THEN
        k := (SELECT x FROM jsonb_object_keys(data - allowed) x LIMIT 1);
        RAISE EXCEPTION 'field "%" does not fit a % client', k, c.type
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = CASE WHEN allowed = '{}' THEN 'A noauth auth takes no data.'
                              ELSE 'A ' || c.type || ' auth takes: ' || array_to_string(allowed, ', ') || '.' END;
    END IF;
    IF c.type = 'oauth2' AND c.grant_type <> 'password' THEN
        FOREACH k IN ARRAY ARRAY['api_key', 'password', 'username'] LOOP
            IF data ? k THEN
                RAISE EXCEPTION 'field "%" does not fit an oauth2 client with grant %', k, c.grant_type
                    USING ERRCODE = 'invalid_parameter_value',
                          HINT = 'Only password-grant clients keep a username and password.';
            END IF;
        END LOOP;
    END IF;
    FOREACH k IN ARRAY string_keys LOOP
        IF data ? k AND (jsonb_typeof(data->k) <> 'string' OR data->>k = '') THEN
            RAISE EXCEPTION 'field "%" must be a non-empty string', k USING ERRCODE = 'invalid_parameter_value';
        END IF;
    END LOOP;
    FOREACH k IN ARRAY required LOOP
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
    -- a client_credentials or password client fetches its first token at once
    IF c.grant_type IN ('client_credentials', 'password') AND NOT data ? 'access_token' THEN
        data := coalesce(data, '{}') || tokenvault._fetch_token(c, 'token',
                    tokenvault._direct_grant_params(c, f->'secret', coalesce(scopes, c.scopes)), f->'secret');
        f := tokenvault._auth_fields(c, data, scopes);
    END IF;
    INSERT INTO tokenvault.auths (id, user_id, client_id, name, service, scopes, token_type,
                                  expires_at, refresh_expires_at, secret, last_refreshed_at)
    VALUES (new_id, user_id, c.id, coalesce(name, c.name), c.service,
            ARRAY(SELECT jsonb_array_elements_text(f->'scopes')), f->>'token_type',
            (f->>'expires_at')::timestamptz, (f->>'refresh_expires_at')::timestamptz,
            tokenvault._seal_auth(f->'secret', new_id),
            CASE WHEN data ? 'access_token' AND c.grant_type IN ('client_credentials', 'password') THEN now() END);
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
            secret = tokenvault._seal_auth(f->'secret', a.id),
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

-- With revoke, the grant is revoked at the provider first (RFC 7009: the
-- refresh token, which takes its access tokens with it, else the access
-- token); if that fails nothing is deleted.  Instances that use the auth
-- refuse the delete, unless force lets them go of it.
CREATE FUNCTION delete_auth(auth_id uuid, revoke boolean DEFAULT false, force boolean DEFAULT false) RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    a tokenvault.auths := tokenvault._auth_must_exist(auth_id);
    c tokenvault.clients;
    cred jsonb;
    v tokenvault.verdict;
BEGIN
    -- before the provider hears of it
    IF coalesce(force, false) THEN
        PERFORM tokenvault._release_auths(ARRAY[a.id]);
    END IF;
    PERFORM tokenvault._refuse_auths_in_use(ARRAY[a.id]);
    IF coalesce(revoke, false) THEN
        c := tokenvault._client_must_exist(a.client_id);
        IF c.revoke_url IS NULL THEN
            RAISE EXCEPTION 'client % has no revoke_url', c.id
                USING ERRCODE = 'object_not_in_prerequisite_state',
                      HINT = 'Set one with tokenvault.update_client(), or delete without revoke.';
        END IF;
        cred := tokenvault._open_auth(a.secret, a.id);
        IF cred ? 'refresh_token' OR cred ? 'access_token' THEN
            v := tokenvault._revoke_request(tokenvault._client_config(c, cred), jsonb_build_object(
                     'token', coalesce(cred->>'refresh_token', cred->>'access_token'),
                     'token_type_hint', CASE WHEN cred ? 'refresh_token' THEN 'refresh_token' ELSE 'access_token' END));
            IF v.outcome <> 'done' THEN
                PERFORM tokenvault._raise_refusal(c, v, 'revocation');
            END IF;
        END IF;
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
    RETURN tokenvault._open_auth(a.secret, a.id)
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
            s := tokenvault._open_auth(a.secret, a.id);
            RETURN jsonb_build_object('Authorization', 'Basic ' ||
                translate(encode(convert_to((s->>'username') || ':' || (s->>'password'), 'UTF8'), 'base64'), E'\n', ''));
        ELSE
            RETURN '{}'::jsonb;
    END CASE;
END
$$;

-- OAuth2 token requests, the authorization code flow with PKCE, and revocation

CREATE FUNCTION _token_request(config jsonb, kind text, params jsonb) RETURNS tokenvault.verdict
    LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'tv_token_request';

CREATE FUNCTION _random_token(bytes integer) RETURNS text
    LANGUAGE c STRICT VOLATILE AS 'MODULE_PATHNAME', 'tv_random_token';

-- What oauth2.c needs to know of a client (and of the auth, for URL
-- templates), as one object.  Holds the client secret: internal only.
-- Inlined into its callers: every name is qualified.
CREATE FUNCTION _client_config(c tokenvault.clients, credential jsonb DEFAULT NULL) RETURNS jsonb
    LANGUAGE sql STABLE AS $$
    SELECT pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
        'token_url', c.token_url, 'refresh_url', c.refresh_url, 'revoke_url', c.revoke_url, 'client_id', c.client_id,
        'client_secret', CASE WHEN c.secret IS NOT NULL
                              THEN tokenvault._open_client(c.secret, c.id)
                                   OPERATOR(pg_catalog.->>) 'client_secret' END,
        'client_auth', c.client_auth, 'body_format', c.body_format, 'token_path', c.token_path,
        'extra_params', c.extra_params, 'template_values', credential))
$$;

-- Send a token request; raise the provider's refusal as an error.
CREATE FUNCTION _fetch_token(c tokenvault.clients, kind text, params jsonb, credential jsonb DEFAULT NULL)
    RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v tokenvault.verdict := tokenvault._token_request(tokenvault._client_config(c, credential), kind, params);
BEGIN
    IF v.outcome = 'done' THEN
        RETURN tokenvault._normalize_token(c, v.token);
    END IF;
    PERFORM tokenvault._raise_refusal(c, v);
END
$$;

-- A provider's failure as an error: needs_reauth 28000, retryable 08000,
-- anything else 38000.  The message never holds a secret (oauth2.c).
CREATE FUNCTION _raise_refusal(c tokenvault.clients, v tokenvault.verdict, what text DEFAULT 'token request') RETURNS void
    LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    CASE v.outcome
        WHEN 'needs_reauth' THEN
            RAISE EXCEPTION '% to % failed: %', what, c.service, v.message
                USING ERRCODE = 'invalid_authorization_specification',
                      HINT = CASE WHEN v.error = 'invalid_client'
                                  THEN 'The provider does not accept the client''s credentials; check its client_id and client_secret.'
                                  ELSE 'The grant is no longer valid: the user must authorize again.' END;
        WHEN 'retryable' THEN
            RAISE EXCEPTION '% to % failed: %', what, c.service, v.message
                USING ERRCODE = 'connection_exception',
                      HINT = CASE WHEN v.retry_after IS NOT NULL THEN format('The provider asks to retry after %s s.', v.retry_after)
                                  ELSE 'The failure is temporary; try again later.' END;
        ELSE
            RAISE EXCEPTION '% to % failed: %', what, c.service, v.message
                USING ERRCODE = 'external_routine_exception',
                      HINT = 'Check the client''s settings (tokenvault.update_client) against the provider''s documentation.';
    END CASE;
END
$$;

-- A provider's token as tokenvault stores it: expires_in in seconds (a
-- number or a numeric string, in the client's unit; dropped when it is
-- neither, or 0), a scope sent as an array joined with spaces, and an empty
-- or null field taken for none.
CREATE FUNCTION _normalize_token(c tokenvault.clients, t jsonb) RETURNS jsonb
    LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    k text;
    n numeric;
BEGIN
    FOREACH k IN ARRAY ARRAY['expires_in', 'refresh_token_expires_in'] LOOP
        CONTINUE WHEN NOT t ? k;
        n := CASE WHEN t->>k ~ '^\s*[0-9]+(\.[0-9]+)?\s*$' THEN (t->>k)::numeric END;
        IF n IS NOT NULL AND c.expires_in_unit = 'milliseconds' THEN
            n := n / 1000;
        END IF;
        -- 0 is read as no lifetime given: some providers mean "does not
        -- expire" by it, and taken literally it would be refreshed at once,
        -- over and over
        t := CASE WHEN n IS NULL OR n = 0 OR n > 3153600000 THEN t - k ELSE jsonb_set(t, ARRAY[k], to_jsonb(round(n))) END;
    END LOOP;
    IF jsonb_typeof(t->'scope') = 'array' THEN
        t := jsonb_set(t, '{scope}', to_jsonb(array_to_string(ARRAY(SELECT jsonb_array_elements_text(t->'scope')), ' ')));
    END IF;
    FOREACH k IN ARRAY ARRAY['refresh_token', 'scope', 'token_type', 'id_token'] LOOP
        IF t->>k = '' THEN
            t := t - k;
        END IF;
    END LOOP;
    RETURN jsonb_strip_nulls(t);
END
$$;

-- The parameters of a grant that needs no user at the provider.
CREATE FUNCTION _direct_grant_params(c tokenvault.clients, credential jsonb, scopes text[]) RETURNS jsonb
    LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT jsonb_strip_nulls(jsonb_build_object(
        'grant_type', c.grant_type,
        'username', CASE WHEN c.grant_type = 'password' THEN credential->>'username' END,
        'password', CASE WHEN c.grant_type = 'password' THEN credential->>'password' END,
        'scope', nullif(array_to_string(scopes, c.scope_separator), '')))
$$;

CREATE FUNCTION authorize_url(client_id uuid, user_id uuid, redirect_uri text, name text DEFAULT NULL,
                              scopes text[] DEFAULT NULL, auth_id uuid DEFAULT NULL) RETURNS text
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    c tokenvault.clients := tokenvault._client_must_exist(client_id);
    a tokenvault.auths;
    st text := tokenvault._random_token(24);
    verifier text;
    params jsonb;
BEGIN
    PERFORM tokenvault._user_must_exist(user_id), tokenvault._require(redirect_uri, 'redirect_uri');
    IF c.grant_type <> 'authorization_code' THEN
        RAISE EXCEPTION 'client % does not use the authorization_code grant', c.id
            USING ERRCODE = 'wrong_object_type',
                  HINT = 'Create auths of client_credentials and password clients with tokenvault.create_auth().';
    END IF;
    IF redirect_uri !~* '^[a-z][a-z0-9+.-]*://[^[:space:]]+$' THEN
        RAISE EXCEPTION 'redirect_uri must be an absolute URL' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF c.visibility = 'private' AND NOT pg_has_role(tokenvault._caller(), c.owner, 'MEMBER') THEN
        RAISE EXCEPTION 'client % is private to role %', c.id, c.owner USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF auth_id IS NOT NULL THEN
        a := tokenvault._auth_must_exist(auth_id);
        IF a.client_id <> c.id OR a.user_id <> authorize_url.user_id THEN
            RAISE EXCEPTION 'auth % belongs to another user or client', auth_id
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
    END IF;
    scopes := coalesce(scopes, a.scopes, c.scopes);
    IF c.pkce THEN
        verifier := tokenvault._random_token(48);
    END IF;
    DELETE FROM tokenvault.auth_states s WHERE s.expires_at < now();
    INSERT INTO tokenvault.auth_states (state, client_id, user_id, auth_id, name, scopes, redirect_uri,
                                        verifier, expires_at)
    VALUES (st, c.id, user_id, auth_id, name, scopes, redirect_uri,
            tokenvault._seal_state(verifier, st), now() + interval '10 minutes');

    params := jsonb_strip_nulls(jsonb_build_object(
        'response_type', 'code', 'client_id', c.client_id, 'redirect_uri', redirect_uri,
        'scope', nullif(array_to_string(scopes, c.scope_separator), ''), 'state', st,
        'code_challenge', CASE WHEN c.pkce THEN
            rtrim(translate(encode(sha256(convert_to(verifier, 'UTF8')), 'base64'), E'+/\n', '-_'), '=') END,
        'code_challenge_method', CASE WHEN c.pkce THEN 'S256' END))
        || coalesce(c.extra_params->'authorize', '{}');
    RETURN c.auth_url || CASE WHEN position('?' IN c.auth_url) > 0 THEN '&' ELSE '?' END ||
        (SELECT string_agg(key || '=' || tokenvault._form_encode(value), '&' ORDER BY key)
           FROM jsonb_each_text(params));
END
$$;

CREATE FUNCTION _form_encode(value text) RETURNS text
    LANGUAGE sql IMMUTABLE STRICT SET search_path = pg_catalog, pg_temp AS $$
    SELECT string_agg(CASE WHEN b BETWEEN 48 AND 57 OR b BETWEEN 65 AND 90 OR b BETWEEN 97 AND 122
                                OR b IN (45, 46, 95, 126)
                           THEN chr(b) ELSE '%' || upper(lpad(to_hex(b), 2, '0')) END, '' ORDER BY i)
      FROM (SELECT i, get_byte(convert_to(value, 'UTF8'), i) AS b
              FROM generate_series(0, octet_length(convert_to(value, 'UTF8')) - 1) i) bytes
$$;

CREATE FUNCTION complete_authorization(state text, code text) RETURNS uuid
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    s tokenvault.auth_states;
    c tokenvault.clients;
    t jsonb;
    new_id uuid;
BEGIN
    PERFORM tokenvault._require(state, 'state'), tokenvault._require(code, 'code');
    -- single use: the state is gone once read, whatever happens next
    DELETE FROM tokenvault.auth_states x WHERE x.state = complete_authorization.state RETURNING * INTO s;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown or already used authorization state'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Start again with tokenvault.authorize_url().';
    END IF;
    IF s.expires_at < now() THEN
        RAISE EXCEPTION 'authorization state expired at %', s.expires_at
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'A state lasts ten minutes; start again with tokenvault.authorize_url().';
    END IF;
    c := tokenvault._client_must_exist(s.client_id);
    t := tokenvault._fetch_token(c, 'token', jsonb_strip_nulls(jsonb_build_object(
             'grant_type', 'authorization_code', 'code', code, 'redirect_uri', s.redirect_uri,
             'code_verifier', CASE WHEN s.verifier IS NOT NULL
                                   THEN tokenvault._open_state(s.verifier, s.state) END)));
    IF s.auth_id IS NOT NULL THEN
        PERFORM tokenvault.update_auth(s.auth_id, s.name, t || jsonb_build_object('scope', coalesce(t->>'scope',
                    array_to_string(s.scopes, ' '))));
        RETURN s.auth_id;
    END IF;
    new_id := tokenvault.create_auth(s.user_id, c.id, s.name, t, CASE WHEN t ? 'scope' THEN NULL ELSE s.scopes END);
    UPDATE tokenvault.auths SET last_refreshed_at = now() WHERE id = new_id;
    RETURN new_id;
END
$$;

CREATE FUNCTION _revoke_request(config jsonb, params jsonb) RETURNS tokenvault.verdict
    LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'tv_revoke_request';

-- The refresh schedule (refresh_at, kept by a trigger), backoff, and refreshing a token

-- The worker plans and applies every refresh through the functions below
-- (and those of auths.sql and oauth2.sql they call), so they are kept
-- cheap: no SET search_path where a caller already sets it (a SET costs a
-- GUC save and restore per call, and keeps a SQL function from being
-- inlined), no query where an expression does.

-- What a refresh of this auth must send, or why it sends nothing (outcome
-- set: done when the token is valid or the auth is gone).  The credential
-- is opened here once: what of it a new token leaves in place travels with
-- the plan to _refresh_apply.
CREATE FUNCTION _refresh_plan(auth_id uuid, force boolean, min_validity integer) RETURNS tokenvault.refresh_plan
    LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r record;
    a tokenvault.auths;
    c tokenvault.clients;
    cred jsonb;
    plan tokenvault.refresh_plan;
BEGIN
    SELECT x AS a, y AS c INTO r
      FROM tokenvault.auths x JOIN tokenvault.clients y ON y.id = x.client_id WHERE x.id = auth_id;
    IF NOT FOUND THEN
        plan.outcome := 'done';
        plan.message := 'the auth was deleted';
        RETURN plan;
    END IF;
    a := r.a;
    c := r.c;
    IF NOT force AND a.expires_at > now() + min_validity * interval '1 second' THEN
        plan.outcome := 'done';
        RETURN plan;
    END IF;
    cred := tokenvault._open_auth(a.secret, a.id);
    IF cred ? 'refresh_token' THEN
        plan.kind := 'refresh';
        plan.params := jsonb_build_object('grant_type', 'refresh_token', 'refresh_token', cred->>'refresh_token');
    ELSIF c.grant_type IN ('client_credentials', 'password') THEN
        plan.kind := 'token';
        plan.params := tokenvault._direct_grant_params(c, cred, a.scopes);
    ELSE
        IF a.status <> 'needs_reauth' THEN
            UPDATE tokenvault.auths SET status = 'needs_reauth',
                   last_error = 'the token expired and there is no refresh token', updated_at = now()
             WHERE id = a.id RETURNING * INTO a;
            PERFORM tokenvault._emit('auth.needs_reauth', a, NULL, a.last_error);
        END IF;
        plan.outcome := 'needs_reauth';
        plan.message := 'the token expired and there is no refresh token';
        RETURN plan;
    END IF;
    plan.version := a.version;
    plan.config := tokenvault._client_config(c, cred);
    -- the old token's own fields go; credentials (username, password) and
    -- an unrotated refresh token stay
    plan.keep := cred - ARRAY['access_token', 'id_token'];
    RETURN plan;
END
$$;

-- Store a refresh's verdict, if the auth's version is still the planned
-- one.  keep is the plan's, so the credential is not opened again (NULL:
-- it is).  The outcome is the refresh's, for its waiters.
CREATE FUNCTION _refresh_apply(auth_id uuid, version bigint, keep jsonb, v tokenvault.verdict,
                               OUT outcome tokenvault.outcome, OUT message text)
    LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r record;
    a tokenvault.auths;
    c tokenvault.clients;
    t jsonb;
    f jsonb;
    failures integer;
BEGIN
    outcome := 'done';
    SELECT x AS a, y AS c INTO r
      FROM tokenvault.auths x JOIN tokenvault.clients y ON y.id = x.client_id WHERE x.id = auth_id
       FOR UPDATE OF x;
    IF NOT FOUND THEN
        message := 'the auth was deleted';
        RETURN;
    END IF;
    a := r.a;
    c := r.c;
    IF a.version <> _refresh_apply.version THEN
        message := 'the auth was changed meanwhile';
        RETURN;
    END IF;
    failures := a.failure_count;
    IF v.outcome = 'done' THEN
        -- A token the provider sent that cannot be stored (a field of the
        -- wrong type, a date that is none) is a failed refresh like any
        -- other: recorded, announced and backed off.  As an error it would
        -- leave the auth claimed, to be tried again each time the lease ran
        -- out, without an event.
        BEGIN
            t := tokenvault._normalize_token(c, v.token);
            f := tokenvault._auth_fields(c, coalesce(keep, tokenvault._open_auth(a.secret, a.id)
                                                          - ARRAY['access_token', 'id_token']) || t,
                                         CASE WHEN t ? 'scope' THEN NULL ELSE a.scopes END);
        EXCEPTION WHEN data_exception OR program_limit_exceeded THEN
            v := ROW('error', v.status, NULL, 'the provider''s token cannot be stored: ' || SQLERRM, NULL, NULL);
        END;
    END IF;
    IF v.outcome <> 'done' THEN
        UPDATE tokenvault.auths SET
            status = CASE v.outcome WHEN 'needs_reauth' THEN 'needs_reauth'
                                    WHEN 'error' THEN 'error' ELSE status END,
            failure_count = failure_count + 1,
            last_error = v.message,
            refresh_at = CASE WHEN v.outcome <> 'needs_reauth'
                              THEN tokenvault._backoff(failure_count + 1, v.retry_after) END,
            updated_at = now()
         WHERE id = a.id RETURNING * INTO a;
        PERFORM tokenvault._emit(CASE WHEN a.status = 'needs_reauth' THEN 'auth.needs_reauth' ELSE 'auth.refresh_failed' END,
                                 a, NULL, a.last_error);
        outcome := v.outcome;
        message := v.message;
        RETURN;
    END IF;

    UPDATE tokenvault.auths SET
        secret = tokenvault._seal_auth(f->'secret', a.id),
        token_type = f->>'token_type',
        scopes = ARRAY(SELECT jsonb_array_elements_text(f->'scopes')),
        expires_at = (f->>'expires_at')::timestamptz,
        refresh_expires_at = coalesce((f->>'refresh_expires_at')::timestamptz,
                                      CASE WHEN t ? 'refresh_token' THEN NULL ELSE a.refresh_expires_at END),
        status = 'active', failure_count = 0, last_error = NULL, expiry_notified_at = NULL,
        last_refreshed_at = now(), version = a.version + 1, updated_at = now(),
        refresh_at = tokenvault._schedule(c, f->'secret' ? 'refresh_token', (f->>'expires_at')::timestamptz, now())
     WHERE id = a.id RETURNING * INTO a;
    PERFORM tokenvault._emit(CASE WHEN failures > 0 THEN 'auth.recovered' ELSE 'auth.refreshed' END, a);
END
$$;

CREATE FUNCTION refresh_auth(auth_id uuid) RETURNS timestamptz
    LANGUAGE c VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'tv_refresh_auth';

-- When the worker should refresh a token of this client obtained at
-- refreshed_at that expires at expires_at: refresh_lead before it expires,
-- but not before half its life has passed (a token shorter-lived than the
-- lead would otherwise be refreshed again and again) and never within a
-- second of the last refresh (a token the provider says is already
-- expired), or sooner when the client wants a refresh every so often; NULL
-- when it cannot be refreshed.
CREATE FUNCTION _schedule(c tokenvault.clients, refreshable boolean, expires_at timestamptz,
                          refreshed_at timestamptz) RETURNS timestamptz
    LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN c.type OPERATOR(pg_catalog.=) 'oauth2'
                     AND (refreshable OR c.grant_type OPERATOR(pg_catalog.=) ANY ('{client_credentials,password}'))
                THEN LEAST(CASE WHEN expires_at IS NOT NULL THEN
                               GREATEST(expires_at OPERATOR(pg_catalog.-) tokenvault._setting_interval('tokenvault.refresh_lead'),
                                        refreshed_at OPERATOR(pg_catalog.+)
                                            GREATEST((expires_at OPERATOR(pg_catalog.-) refreshed_at) OPERATOR(pg_catalog./) 2,
                                                     interval '1 second')) END,
                           refreshed_at OPERATOR(pg_catalog.+) pg_catalog.make_interval(secs => c.refresh_every)) END
$$;

-- The schedule of a stored auth.
CREATE FUNCTION _refresh_at(a tokenvault.auths) RETURNS timestamptz
    LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    c tokenvault.clients;
    refreshable boolean := true;
BEGIN
    IF a.status IN ('needs_reauth', 'revoked', 'expired') THEN
        RETURN NULL;
    END IF;
    SELECT * INTO c FROM tokenvault.clients WHERE id = a.client_id;
    IF NOT FOUND OR c.type <> 'oauth2' THEN
        RETURN NULL;
    END IF;
    -- opened only when the grant alone does not tell; a secret that does
    -- not open (a missing key, a copied value) cannot be refreshed either
    IF c.grant_type NOT IN ('client_credentials', 'password') THEN
        BEGIN
            refreshable := tokenvault._open_auth(a.secret, a.id) ? 'refresh_token';
        EXCEPTION WHEN data_corrupted OR undefined_object OR object_not_in_prerequisite_state THEN
            refreshable := false;
        END;
    END IF;
    RETURN tokenvault._schedule(c, refreshable, a.expires_at, coalesce(a.last_refreshed_at, a.created_at));
END
$$;

-- When an auth dies for good unless someone acts: its token's expiry when it
-- cannot be refreshed (or keeps failing), its refresh token's when that
-- expires; NULL while refreshes keep it alive.
CREATE FUNCTION _dies_at(a tokenvault.auths) RETURNS timestamptz
    LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN a.status IN ('expired', 'revoked') THEN NULL
        WHEN a.refresh_at IS NULL OR a.status = 'needs_reauth' OR a.failure_count >= 3 THEN a.expires_at
        ELSE a.refresh_expires_at END
$$;

-- Keeps refresh_at whichever way a row is written, and asks for the worker
-- to be woken if the row needs it sooner than planned.  The wake-up goes out
-- only if the transaction commits, so asking before the row is written is
-- safe; one BEFORE trigger is half the cost of a BEFORE and an AFTER one.
CREATE FUNCTION _auths_schedule() RETURNS trigger
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NEW.status IN ('needs_reauth', 'revoked', 'expired') THEN
        NEW.refresh_at := NULL;
    ELSIF TG_OP = 'INSERT' THEN
        NEW.refresh_at := coalesce(NEW.refresh_at, tokenvault._refresh_at(NEW));
    -- a refresh_at the statement set itself (a backoff, a lease, a refresh's
    -- result) stands; otherwise it follows what it depends on
    ELSIF NEW.refresh_at IS NOT DISTINCT FROM OLD.refresh_at
          AND (NEW.status IS DISTINCT FROM OLD.status OR NEW.secret IS DISTINCT FROM OLD.secret
               OR NEW.expires_at IS DISTINCT FROM OLD.expires_at) THEN
        NEW.refresh_at := tokenvault._refresh_at(NEW);
    END IF;
    PERFORM tokenvault._wake_worker(least(NEW.refresh_at,
        tokenvault._dies_at(NEW) - tokenvault._setting_interval('tokenvault.expiry_notice')));
    RETURN NEW;
END
$$;
CREATE TRIGGER auths_schedule BEFORE INSERT OR UPDATE ON auths
    FOR EACH ROW EXECUTE FUNCTION _auths_schedule();

CREATE FUNCTION _auths_deleted() RETURNS trigger
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM tokenvault._emit('auth.deleted', OLD);
    RETURN NULL;
END
$$;
CREATE TRIGGER auths_deleted AFTER DELETE ON auths
    FOR EACH ROW EXECUTE FUNCTION _auths_deleted();

-- After a failed try: 10 s doubling per failure, capped at 30 min, times a
-- jitter in [0.5, 1] so that many auths failing together spread out; never
-- sooner than the provider's Retry-After.
CREATE FUNCTION _backoff(failures integer, retry_after integer) RETURNS timestamptz
    LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
    SELECT now() + greatest(least(1800, 10 * 2 ^ least(greatest(failures - 1, 0), 20)) * (0.5 + random() / 2),
                            coalesce(retry_after, 0)) * interval '1 second'
$$;

-- Events: recorded, sent by NOTIFY and queued for webhooks

-- An auth event: Tray's expiry payload with the kind in "event".  User-given
-- text is cut short so that it stays well within NOTIFY's 8000 bytes.  Never
-- a secret.
CREATE FUNCTION _emit(kind text, a tokenvault.auths, expires timestamptz DEFAULT NULL, error text DEFAULT NULL)
    RETURNS void
    LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM tokenvault._publish(kind, a.id,
        jsonb_build_object(
            'event', kind,
            'authentication_name', left(a.name, 400),
            'service_name', left(a.service, 400),
            'user_id', a.user_id,
            'authId', a.id,
            'external_user_id', (SELECT left(u.external_user_id, 400) FROM tokenvault.users u WHERE u.id = a.user_id),
            'expires_at', to_char(coalesce(expires, a.expires_at) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'))
        || CASE WHEN error IS NULL THEN '{}' ELSE jsonb_build_object('error', left(error, 400)) END);
END
$$;

CREATE FUNCTION _event_kinds() RETURNS text[]
    LANGUAGE sql IMMUTABLE AS $$
    SELECT ARRAY['auth.refreshed', 'auth.refresh_failed', 'auth.needs_reauth', 'auth.recovered',
                 'auth.expiring', 'auth.expired', 'auth.deleted', 'instance.disabled']
$$;

-- Record an event, NOTIFY it and queue it for the webhooks that want it,
-- all in the caller's transaction.  Webhooks get one auth's events in order.
-- (No SET search_path: it runs for every refresh, and only functions and
-- triggers that set it call it.)
CREATE FUNCTION _publish(kind text, auth_id uuid, payload jsonb) RETURNS void
    LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    event_id bigint;
    delivered timestamptz;
BEGIN
    INSERT INTO tokenvault.events (kind, auth_id, payload, delivered_at)
    VALUES (kind, auth_id, payload,
            -- no webhook wants it: delivered by the NOTIFY alone
            CASE WHEN NOT EXISTS (SELECT FROM tokenvault.webhooks w
                                   WHERE w.enabled AND (w.kinds IS NULL OR kind = ANY (w.kinds))) THEN now() END)
    RETURNING id, delivered_at INTO event_id, delivered;
    IF delivered IS NULL THEN
        INSERT INTO tokenvault.webhook_deliveries (webhook_id, event_id, auth_id)
            SELECT w.id, event_id, _publish.auth_id FROM tokenvault.webhooks w
             WHERE w.enabled AND (w.kinds IS NULL OR kind = ANY (w.kinds));
        PERFORM tokenvault._wake_worker(now());
    END IF;
    PERFORM pg_notify('tokenvault', payload::text);
END
$$;

-- Webhooks: registering them, and the deliveries the worker sends

CREATE FUNCTION add_webhook(url text, secret text, kinds text[] DEFAULT NULL) RETURNS uuid
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    new_id uuid := gen_random_uuid();
BEGIN
    IF url IS NULL OR url !~* '^https?://.' THEN
        RAISE EXCEPTION 'webhook URL must be an http or https URL'
            USING ERRCODE = 'invalid_parameter_value';
    ELSIF url ~* '^http://' AND NOT current_setting('tokenvault.allow_insecure_http')::boolean THEN
        RAISE EXCEPTION 'plain http is not allowed for webhooks'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use an https URL, or set tokenvault.allow_insecure_http (tests and private networks only).';
    ELSIF coalesce(length(secret), 0) < 16 THEN
        RAISE EXCEPTION 'webhook secret must be at least 16 characters'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Make one with: SELECT encode(gen_random_bytes(32), ''hex'') (pgcrypto) or openssl rand -hex 32.';
    ELSIF kinds IS NOT NULL AND NOT kinds <@ tokenvault._event_kinds() THEN
        RAISE EXCEPTION 'unknown event kind in %', kinds
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Event kinds are ' || array_to_string(tokenvault._event_kinds(), ', ') || '.';
    END IF;
    INSERT INTO tokenvault.webhooks (id, url, secret, kinds)
    VALUES (new_id, url, tokenvault._seal_webhook(secret, new_id), kinds);
    RETURN new_id;
END
$$;

CREATE FUNCTION delete_webhook(webhook_id uuid) RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    DELETE FROM tokenvault.webhooks WHERE id = webhook_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'webhook % does not exist', webhook_id
            USING ERRCODE = 'undefined_object',
                  HINT = 'List them with: SELECT id, url, kinds FROM tokenvault.webhooks.';
    END IF;
    -- events waiting only for this webhook are delivered now
    UPDATE tokenvault.events e SET delivered_at = now()
     WHERE delivered_at IS NULL
       AND NOT EXISTS (SELECT FROM tokenvault.webhook_deliveries d
                        WHERE d.event_id = e.id AND d.delivered_at IS NULL);
END
$$;

-- Claim up to n deliveries that may go now: the oldest undelivered one of
-- each (webhook, auth), so that one auth's events arrive in order.  Also
-- when the next one not yet due may go.
CREATE FUNCTION _webhook_claim(n integer, OUT deliveries tokenvault.delivery[], OUT next_at timestamptz)
    LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
    WITH heads AS (
        SELECT DISTINCT ON (webhook_id, auth_id) id, next_attempt_at
          FROM tokenvault.webhook_deliveries WHERE delivered_at IS NULL
         ORDER BY webhook_id, auth_id, id
    ), due AS (
        SELECT id FROM heads WHERE next_attempt_at <= now() ORDER BY next_attempt_at LIMIT n
    ), claimed AS (
        UPDATE tokenvault.webhook_deliveries d
           SET attempts = attempts + 1, next_attempt_at = now() + tokenvault._lease()
          FROM due WHERE d.id = due.id
        RETURNING d.id, d.webhook_id, d.event_id
    )
    SELECT coalesce((
               SELECT array_agg(ROW(c.id, w.url, e.kind, e.payload::text,
                                    tokenvault._open_webhook(w.secret, w.id))::tokenvault.delivery)
                 FROM claimed c JOIN tokenvault.webhooks w ON w.id = c.webhook_id
                 JOIN tokenvault.events e ON e.id = c.event_id), '{}'),
           (SELECT min(next_attempt_at) FROM heads WHERE next_attempt_at > now())
$$;

-- A delivery's answer: 2xx delivers it (and its event, once every webhook
-- has it); anything else is tried again later: 2 s doubling, capped at an
-- hour, times a jitter in [0.5, 1].
CREATE FUNCTION _webhook_result(delivery_id bigint, status integer, error text) RETURNS void
    LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    d tokenvault.webhook_deliveries;
BEGIN
    IF status BETWEEN 200 AND 299 THEN
        UPDATE tokenvault.webhook_deliveries SET delivered_at = now(), last_status = status, last_error = NULL
         WHERE id = delivery_id RETURNING * INTO d;
        UPDATE tokenvault.events e SET delivered_at = now()
         WHERE e.id = d.event_id
           AND NOT EXISTS (SELECT FROM tokenvault.webhook_deliveries x
                            WHERE x.event_id = e.id AND x.delivered_at IS NULL);
        -- the auth's next event for this webhook may go now
        PERFORM tokenvault._wake_worker(now());
    ELSE
        UPDATE tokenvault.webhook_deliveries SET
            last_status = nullif(status, 0), last_error = left(error, 400),
            next_attempt_at = now() + least(3600, 2 * 2 ^ least(greatest(attempts - 1, 0), 20))
                                      * (0.5 + random() / 2) * interval '1 second'
         WHERE id = delivery_id RETURNING * INTO d;
        PERFORM tokenvault._wake_worker(d.next_attempt_at);
    END IF;
END
$$;

-- What the background worker runs, each step in a short transaction, and its stats

CREATE FUNCTION _wake_worker(at timestamptz) RETURNS void
    LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'tv_wake_worker';

-- How long a claim (of an auth to refresh, a delivery to send) holds: long
-- enough for any request, short enough that a crashed worker's claims
-- come back soon.
CREATE FUNCTION _lease() RETURNS interval
    LANGUAGE sql STABLE AS $$
    SELECT 2 OPERATOR(pg_catalog.*) tokenvault._setting_interval('tokenvault.http_timeout')
           OPERATOR(pg_catalog.+) interval '30 seconds'
$$;

-- Claim up to n due auths: their refresh_at moves a lease ahead (the
-- refresh's result sets the real one).  Unless it claimed n, also the next
-- refresh_at after them.
CREATE FUNCTION _worker_claim(n integer, OUT ids uuid[], OUT next_at timestamptz)
    LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
-- (plpgsql rather than sql: its plan is kept between calls)
BEGIN
    WITH due AS (
        SELECT id FROM tokenvault.auths
         WHERE refresh_at <= now() ORDER BY refresh_at LIMIT n FOR UPDATE SKIP LOCKED
    ), claimed AS (
        UPDATE tokenvault.auths a SET refresh_at = now() + tokenvault._lease()
          FROM due WHERE a.id = due.id RETURNING a.id
    )
    SELECT coalesce(array_agg(id), '{}') INTO ids FROM claimed;
    -- a full claim is followed by another one at once: no need to look ahead
    IF cardinality(ids) < n THEN
        next_at := (SELECT min(refresh_at) FROM tokenvault.auths WHERE refresh_at > now());
    END IF;
END
$$;

-- When the worker starts nothing is in flight: auths a previous worker
-- claimed (and crashed or restarted on) are due again now rather than when
-- their lease runs out.  (Webhook deliveries wait for theirs.)  Schedules
-- in the lease window are made again, which leaves the others as they
-- were.  Returns how many were released.
CREATE FUNCTION _worker_start() RETURNS bigint
    LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
    WITH released AS (
        UPDATE tokenvault.auths SET refresh_at = tokenvault._refresh_at(auths)
         WHERE refresh_at > now() AND refresh_at <= now() + tokenvault._lease() AND failure_count = 0
        RETURNING 1
    )
    SELECT count(*) FROM released
$$;

-- Expiry notices (auth.expiring, once, expiry_notice ahead), expired auths
-- (auth.expired), old delivered events.  Returns when it is next needed.
CREATE FUNCTION _worker_tick() RETURNS timestamptz
    LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    notice constant interval := tokenvault._setting_interval('tokenvault.expiry_notice');
    a tokenvault.auths;
    dies timestamptz;
BEGIN
    FOR a IN SELECT * FROM tokenvault.auths
              WHERE expiry_notified_at IS NULL AND tokenvault._dies_at(auths) > now()
                AND tokenvault._dies_at(auths) <= now() + notice
              FOR UPDATE SKIP LOCKED LOOP
        dies := tokenvault._dies_at(a);
        UPDATE tokenvault.auths SET expiry_notified_at = now() WHERE id = a.id;
        PERFORM tokenvault._emit('auth.expiring', a, dies);
    END LOOP;
    FOR a IN SELECT * FROM tokenvault.auths
              WHERE tokenvault._dies_at(auths) <= now()
              FOR UPDATE SKIP LOCKED LOOP
        dies := tokenvault._dies_at(a);
        UPDATE tokenvault.auths SET status = 'expired', updated_at = now(),
               last_error = coalesce(last_error, 'the auth expired and could not be refreshed')
         WHERE id = a.id RETURNING * INTO a;
        PERFORM tokenvault._emit('auth.expired', a, dies);
    END LOOP;
    DELETE FROM tokenvault.events
     WHERE delivered_at < now() - tokenvault._setting_interval('tokenvault.event_retention');
    RETURN least(
        (SELECT min(d) FROM (SELECT tokenvault._dies_at(auths) AS d FROM tokenvault.auths) x WHERE d > now()),
        (SELECT min(tokenvault._dies_at(auths) - notice) FROM tokenvault.auths
          WHERE expiry_notified_at IS NULL AND tokenvault._dies_at(auths) - notice > now()),
        (SELECT min(delivered_at) + tokenvault._setting_interval('tokenvault.event_retention')
           FROM tokenvault.events WHERE delivered_at IS NOT NULL),
        now() + interval '1 hour');
END
$$;

-- A changed refresh_lead: every stored schedule made again.  Returns how
-- many moved.
CREATE FUNCTION _reschedule() RETURNS bigint
    LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
    WITH moved AS (
        UPDATE tokenvault.auths SET refresh_at = tokenvault._refresh_at(auths)
         WHERE refresh_at IS NOT NULL AND failure_count = 0 RETURNING 1
    )
    SELECT count(*) FROM moved
$$;

CREATE FUNCTION _worker_stats(OUT worker_pid integer, OUT worker_state text, OUT last_loop_at timestamptz,
                              OUT refreshes_succeeded bigint, OUT refreshes_failed bigint,
                              OUT http_p50_ms double precision, OUT http_p90_ms double precision,
                              OUT http_p99_ms double precision)
    LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'tv_worker_stats';
CREATE VIEW stats AS
    SELECT s.worker_pid, s.worker_state, s.last_loop_at, s.refreshes_succeeded, s.refreshes_failed,
           (SELECT count(*) FROM tokenvault.auths WHERE refresh_at <= now()) AS auths_due,
           s.http_p50_ms, s.http_p90_ms, s.http_p99_ms,
           (SELECT count(*) FROM tokenvault.webhook_deliveries WHERE delivered_at IS NULL) AS webhook_backlog
      FROM tokenvault._worker_stats() s;

-- Solutions, slots and instances: the rules that hold them together (triggers), and lookups

CREATE FUNCTION _solution_must_exist(solution_id uuid) RETURNS tokenvault.solutions
    LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    s tokenvault.solutions;
BEGIN
    PERFORM tokenvault._require(solution_id, 'solution id');
    SELECT * INTO s FROM tokenvault.solutions t WHERE t.id = _solution_must_exist.solution_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'solution % does not exist', solution_id
            USING ERRCODE = 'undefined_object',
                  HINT = 'List solutions with: SELECT id, title FROM tokenvault.solutions;';
    END IF;
    RETURN s;
END
$$;

CREATE FUNCTION _instance_must_exist(instance_id uuid) RETURNS tokenvault.instances
    LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    i tokenvault.instances;
BEGIN
    PERFORM tokenvault._require(instance_id, 'instance id');
    SELECT * INTO i FROM tokenvault.instances t WHERE t.id = _instance_must_exist.instance_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'instance % does not exist', instance_id
            USING ERRCODE = 'undefined_object',
                  HINT = 'A user''s instances are listed by tokenvault.user_instances(user_id).';
    END IF;
    RETURN i;
END
$$;

-- The slot of a solution by its external id, matched case-sensitively, of
-- the kind given (any when NULL); an unknown one names the ids there are.
CREATE FUNCTION _slot_must_exist(solution_id uuid, external_id text, kind text) RETURNS tokenvault.slots
    LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    s tokenvault.slots;
    known text;
BEGIN
    PERFORM tokenvault._require(external_id, 'externalId');
    SELECT * INTO s FROM tokenvault.slots t
     WHERE t.solution_id = _slot_must_exist.solution_id AND t.external_id = _slot_must_exist.external_id;
    IF FOUND AND (_slot_must_exist.kind IS NULL OR s.kind = _slot_must_exist.kind) THEN
        RETURN s;
    ELSIF FOUND THEN
        RAISE EXCEPTION 'slot "%" of solution % is % slot, not % slot', external_id, solution_id,
                CASE s.kind WHEN 'auth' THEN 'an auth' ELSE 'a config' END,
                CASE _slot_must_exist.kind WHEN 'auth' THEN 'an auth' ELSE 'a config' END
            USING ERRCODE = 'wrong_object_type',
                  HINT = CASE s.kind WHEN 'auth' THEN 'Give it in auth_values.' ELSE 'Give it in config_values.' END;
    END IF;
    SELECT string_agg(t.external_id, ', ' ORDER BY t.position) INTO known
      FROM tokenvault.slots t
     WHERE t.solution_id = _slot_must_exist.solution_id
       AND (_slot_must_exist.kind IS NULL OR t.kind = _slot_must_exist.kind);
    RAISE EXCEPTION 'solution % has no %slot "%"', solution_id, coalesce(_slot_must_exist.kind || ' ', ''), external_id
        USING ERRCODE = 'undefined_object',
              HINT = CASE WHEN known IS NULL
                          THEN format('The solution has no %sslots.', coalesce(_slot_must_exist.kind || ' ', ''))
                          ELSE format('Its %sslots are: %s (external ids are case-sensitive).',
                                      coalesce(_slot_must_exist.kind || ' ', ''), known) END;
END
$$;

-- An auth fits a slot when it is of the slot's client, or of its service.
CREATE FUNCTION _auth_fits_slot(a tokenvault.auths, s tokenvault.slots) RETURNS void
    LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF s.client_id IS NOT NULL AND a.client_id <> s.client_id THEN
        RAISE EXCEPTION 'auth % is not of the client slot "%" takes', a.id, s.external_id
            USING ERRCODE = 'check_violation',
                  HINT = format('Slot "%s" takes auths of client %s.', s.external_id, s.client_id);
    ELSIF s.service IS NOT NULL AND a.service <> s.service THEN
        RAISE EXCEPTION 'auth % is for service "%", slot "%" takes "%"', a.id, a.service, s.external_id, s.service
            USING ERRCODE = 'check_violation';
    END IF;
END
$$;

-- Required slots of an instance that nothing fills: neither a value, nor a
-- static auth, nor a default.
CREATE FUNCTION _unfilled_slots(instance_id uuid, solution_id uuid) RETURNS text[]
    LANGUAGE sql STABLE AS $$
    SELECT pg_catalog.array_agg(s.external_id::text ORDER BY s.position)
      FROM tokenvault.slots s
     WHERE s.solution_id = $2 AND s.required AND s.static_auth_id IS NULL AND s.default_value IS NULL
       AND NOT EXISTS (SELECT FROM tokenvault.instance_auth_values v
                        WHERE v.instance_id = $1 AND v.external_id = s.external_id)
       AND NOT EXISTS (SELECT FROM tokenvault.instance_config_values v
                        WHERE v.instance_id = $1 AND v.external_id = s.external_id)
$$;

CREATE FUNCTION _instances_check() RETURNS trigger
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    missing text[];
BEGIN
    IF TG_OP = 'UPDATE' AND (NEW.solution_id <> OLD.solution_id OR NEW.owner <> OLD.owner) THEN
        RAISE EXCEPTION 'the solution and owner of instance % cannot change', OLD.id
            USING ERRCODE = 'feature_not_supported',
                  HINT = 'Create a new instance with tokenvault.create_instance().';
    END IF;
    IF NEW.enabled AND (TG_OP = 'INSERT' OR NOT OLD.enabled) AND NOT tokenvault._restoring() THEN
        -- waits for a slot being added or changed (slots_check locks the
        -- solution), and keeps one from changing until this one is done
        PERFORM FROM tokenvault.solutions s WHERE s.id = NEW.solution_id FOR SHARE;
        missing := tokenvault._unfilled_slots(NEW.id, NEW.solution_id);
        IF missing IS NOT NULL THEN
            RAISE EXCEPTION 'instance % cannot be enabled: required slot(s) % not filled',
                    NEW.id, array_to_string(missing, ', ')
                USING ERRCODE = 'object_not_in_prerequisite_state',
                      HINT = 'Fill them with tokenvault.update_instance(id, auth_values => ..., config_values => ...).';
        END IF;
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER instances_check BEFORE INSERT OR UPDATE ON instances
    FOR EACH ROW EXECUTE FUNCTION _instances_check();

-- An auth value: a slot of the instance's solution, not static, the owner's
-- own auth of the slot's client or service, and unique where a slot says so.
CREATE FUNCTION _instance_auth_values_check() RETURNS trigger
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    i tokenvault.instances := tokenvault._instance_must_exist(NEW.instance_id);
    s tokenvault.slots := tokenvault._slot_must_exist(i.solution_id, NEW.external_id, 'auth');
    a tokenvault.auths;
    other record;
BEGIN
    NEW.solution_id := i.solution_id;
    IF s.static_auth_id IS NOT NULL THEN
        RAISE EXCEPTION 'slot "%" is static: its auth is the solution''s and cannot be set or changed', s.external_id
            USING ERRCODE = 'check_violation',
                  HINT = 'Every instance of the solution uses the slot''s static auth; nothing needs to be given.';
    END IF;
    -- The row lock makes writers of one auth take turns, so that two
    -- instances cannot both take it while one of them forces it unique.
    SELECT * INTO a FROM tokenvault.auths t WHERE t.id = NEW.auth_id FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'auth % does not exist', NEW.auth_id USING ERRCODE = 'undefined_object';
    ELSIF a.user_id <> i.owner THEN
        RAISE EXCEPTION 'auth % does not belong to the owner of instance %', a.id, i.id
            USING ERRCODE = 'check_violation',
                  HINT = 'An instance is filled with its owner''s own auths; an auth all users share goes in a static slot.';
    END IF;
    PERFORM tokenvault._auth_fits_slot(a, s);
    SELECT v.instance_id, v.external_id INTO other
      FROM tokenvault.instance_auth_values v
      JOIN tokenvault.slots o ON o.solution_id = v.solution_id AND o.external_id = v.external_id
     WHERE v.auth_id = a.id AND v.instance_id <> i.id AND (s.force_unique OR o.force_unique)
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'auth % is already used by instance %', a.id, other.instance_id
            USING ERRCODE = 'unique_violation',
                  HINT = CASE WHEN s.force_unique
                              THEN format('Slot "%s" forces a unique auth: create a new auth for this instance.', s.external_id)
                              ELSE format('It fills the force-unique slot "%s" there: create a new auth for this instance.',
                                          other.external_id) END;
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER instance_auth_values_check BEFORE INSERT OR UPDATE ON instance_auth_values
    FOR EACH ROW EXECUTE FUNCTION _instance_auth_values_check();

CREATE FUNCTION _instance_config_values_check() RETURNS trigger
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    i tokenvault.instances := tokenvault._instance_must_exist(NEW.instance_id);
BEGIN
    NEW.solution_id := i.solution_id;
    PERFORM tokenvault._slot_must_exist(i.solution_id, NEW.external_id, 'config');
    RETURN NEW;
END
$$;
CREATE TRIGGER instance_config_values_check BEFORE INSERT OR UPDATE ON instance_config_values
    FOR EACH ROW EXECUTE FUNCTION _instance_config_values_check();

-- A value taken away must not leave an enabled instance without a required
-- slot.  (When the slot itself is gone, nothing requires it any more.)  The
-- share lock waits for a transaction enabling the instance, and keeps one
-- from enabling it until this one is done.
CREATE FUNCTION _instance_values_removed() RETURNS trigger
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    enabled boolean;
BEGIN
    -- (locked whether enabled or not: the version this statement sees may
    -- be the one a transaction is enabling)
    SELECT i.enabled INTO enabled FROM tokenvault.instances i WHERE i.id = OLD.instance_id FOR SHARE;
    IF enabled AND OLD.external_id = ANY (tokenvault._unfilled_slots(OLD.instance_id, OLD.solution_id)) THEN
        RAISE EXCEPTION 'slot "%" is required and instance % is enabled', OLD.external_id, OLD.instance_id
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Give the slot another value, or disable the instance first.';
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER instance_auth_values_removed AFTER DELETE ON instance_auth_values
    FOR EACH ROW EXECUTE FUNCTION _instance_values_removed();
CREATE TRIGGER instance_config_values_removed AFTER DELETE ON instance_config_values
    FOR EACH ROW EXECUTE FUNCTION _instance_values_removed();

CREATE FUNCTION _slots_check() RETURNS trigger
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    a tokenvault.auths;
BEGIN
    IF TG_OP = 'UPDATE' AND (NEW.solution_id <> OLD.solution_id OR NEW.external_id <> OLD.external_id
                             OR NEW.kind <> OLD.kind) THEN
        RAISE EXCEPTION 'the solution, external id and kind of a slot cannot change'
            USING ERRCODE = 'feature_not_supported',
                  HINT = 'Delete the slot and add a new one.';
    END IF;
    -- slots of a solution change in turn, and not while an instance of it is
    -- being enabled (instances_check); instances can still be created
    PERFORM FROM tokenvault.solutions s WHERE s.id = NEW.solution_id FOR NO KEY UPDATE;
    IF TG_OP = 'INSERT' AND NEW.position IS NULL THEN
        NEW.position := (SELECT coalesce(max(s.position), 0) + 1 FROM tokenvault.slots s
                          WHERE s.solution_id = NEW.solution_id);
    END IF;
    IF NEW.static_auth_id IS NOT NULL THEN
        SELECT * INTO a FROM tokenvault.auths t WHERE t.id = NEW.static_auth_id;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'auth % does not exist', NEW.static_auth_id USING ERRCODE = 'undefined_object';
        END IF;
        PERFORM tokenvault._auth_fits_slot(a, NEW);
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER slots_check BEFORE INSERT OR UPDATE ON slots
    FOR EACH ROW EXECUTE FUNCTION _slots_check();

-- A slot that changes is checked against the values that fill it: values
-- of a slot made static go (the static auth replaces them), the others are
-- written again so that their own trigger checks them; and a required slot
-- must be filled in every enabled instance.
CREATE FUNCTION _slots_changed() RETURNS trigger
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    lacking uuid[];
BEGIN
    IF TG_OP = 'UPDATE' AND NEW.kind = 'auth' THEN
        IF NEW.static_auth_id IS NOT NULL THEN
            DELETE FROM tokenvault.instance_auth_values v
             WHERE v.solution_id = NEW.solution_id AND v.external_id = NEW.external_id;
        ELSIF (NEW.client_id, NEW.service, NEW.force_unique) IS DISTINCT FROM (OLD.client_id, OLD.service, OLD.force_unique) THEN
            UPDATE tokenvault.instance_auth_values v SET auth_id = v.auth_id
             WHERE v.solution_id = NEW.solution_id AND v.external_id = NEW.external_id;
        END IF;
    END IF;
    IF NEW.required AND NOT tokenvault._restoring() THEN
        SELECT array_agg(i.id ORDER BY i.created_at) INTO lacking
          FROM tokenvault.instances i
         WHERE i.solution_id = NEW.solution_id AND i.enabled
           AND NEW.external_id = ANY (tokenvault._unfilled_slots(i.id, i.solution_id));
        IF lacking IS NOT NULL THEN
            RAISE EXCEPTION 'slot "%" is required but % enabled instance(s) of solution % do not fill it',
                    NEW.external_id, cardinality(lacking), NEW.solution_id
                USING ERRCODE = 'object_not_in_prerequisite_state',
                      DETAIL = format('Instances: %s.', array_to_string(lacking[1:10], ', ')),
                      HINT = 'Add it as not required, fill it in each instance, then make it required; or give a config slot a default.';
        END IF;
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER slots_changed AFTER INSERT OR UPDATE ON slots
    FOR EACH ROW EXECUTE FUNCTION _slots_changed();

-- An auth in use stays: as a slot's static auth always, and in instances
-- until they let go of it (delete_auth(..., force => true) does that).
CREATE FUNCTION _refuse_auths_in_use(auth_ids uuid[]) RETURNS void
    LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    first_id uuid;
    users text;
BEGIN
    SELECT s.static_auth_id, string_agg(format('"%s" of solution %s', s.external_id, s.solution_id), ', ')
      INTO first_id, users
      FROM tokenvault.slots s WHERE s.static_auth_id = ANY (auth_ids)
     GROUP BY s.static_auth_id ORDER BY min(s.created_at), s.static_auth_id LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'auth % is the static auth of slot %', first_id, users
            USING ERRCODE = 'dependent_objects_still_exist',
                  HINT = 'Give the slot another static auth with tokenvault.update_slot(), or delete the slot.';
    END IF;
    -- the first ten by age, as PostgreSQL names some of the objects that
    -- depend on one: a shared auth may fill thousands of instances
    SELECT v.auth_id,
           array_to_string((array_agg(format('"%s" (%s)', i.name, i.id) ORDER BY i.created_at, i.id))[1:10], ', ')
           || CASE WHEN count(*) > 10 THEN format(' and %s more', count(*) - 10) ELSE '' END
      INTO first_id, users
      FROM tokenvault.instance_auth_values v JOIN tokenvault.instances i ON i.id = v.instance_id
     WHERE v.auth_id = ANY (auth_ids)
     GROUP BY v.auth_id ORDER BY min(i.created_at), v.auth_id LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'auth % is used by instance(s) %', first_id, users
            USING ERRCODE = 'dependent_objects_still_exist',
                  HINT = 'Give them another auth with tokenvault.update_instance(), or delete with force => true, which disables them.';
    END IF;
END
$$;

CREATE FUNCTION _auths_in_use() RETURNS trigger
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM tokenvault._refuse_auths_in_use(ARRAY[OLD.id]);
    RETURN OLD;
END
$$;
CREATE TRIGGER auths_in_use BEFORE DELETE ON auths
    FOR EACH ROW EXECUTE FUNCTION _auths_in_use();

-- An auth that moves to another user, client or service is checked again
-- where it is used.  (Nothing in tokenvault moves one; a direct write can.)
CREATE FUNCTION _auths_moved() RETURNS trigger
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    UPDATE tokenvault.instance_auth_values v SET auth_id = v.auth_id WHERE v.auth_id = NEW.id;
    UPDATE tokenvault.slots s SET static_auth_id = s.static_auth_id WHERE s.static_auth_id = NEW.id;
    RETURN NULL;
END
$$;
CREATE TRIGGER auths_moved AFTER UPDATE OF user_id, client_id, service ON auths
    FOR EACH ROW WHEN ((OLD.user_id, OLD.client_id, OLD.service) IS DISTINCT FROM (NEW.user_id, NEW.client_id, NEW.service))
    EXECUTE FUNCTION _auths_moved();

-- Instances let go of auths about to be deleted: each is disabled, loses
-- those auth values, and says so with an instance.disabled event.
CREATE FUNCTION _release_auths(auth_ids uuid[]) RETURNS void
    LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT i, a, u.external_user_id
               FROM tokenvault.instance_auth_values v
               JOIN tokenvault.instances i ON i.id = v.instance_id
               JOIN tokenvault.auths a ON a.id = v.auth_id
               JOIN tokenvault.users u ON u.id = i.owner
              WHERE v.auth_id = ANY (auth_ids)
              ORDER BY i.created_at, i.id, v.external_id LOOP
        UPDATE tokenvault.instances SET enabled = false, updated_at = now() WHERE id = (r.i).id AND enabled;
        DELETE FROM tokenvault.instance_auth_values v WHERE v.instance_id = (r.i).id AND v.auth_id = (r.a).id;
        PERFORM tokenvault._publish('instance.disabled', (r.a).id, jsonb_build_object(
            'event', 'instance.disabled',
            'reason', 'auth deleted',
            'instance_id', (r.i).id,
            'instance_name', left((r.i).name, 400),
            'solution_id', (r.i).solution_id,
            'user_id', (r.i).owner,
            'external_user_id', left(r.external_user_id, 400),
            'authId', (r.a).id,
            'authentication_name', left((r.a).name, 400),
            'service_name', left((r.a).service, 400)));
    END LOOP;
END
$$;

-- Solutions, slots and instances: what an application calls to embed them

-- The table's limits on a title and a description, said in words (a NULL
-- is not checked: update_solution() keeps that field).
CREATE FUNCTION _check_solution_text(title text, description text) RETURNS void
    LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF title = '' OR length(title) > 1024 THEN
        RAISE EXCEPTION 'a solution needs a title of 1 to 1024 characters' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF length(description) > 65536 THEN
        RAISE EXCEPTION 'a solution''s description is limited to 65536 characters'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
END
$$;

CREATE FUNCTION create_solution(title text, description text DEFAULT '') RETURNS uuid
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    new_id uuid;
BEGIN
    PERFORM tokenvault._check_solution_text(coalesce(title, ''), description);
    INSERT INTO tokenvault.solutions (title, description)
    VALUES (title, coalesce(description, ''))
    RETURNING id INTO new_id;
    RETURN new_id;
END
$$;

-- Rename or describe again; a NULL leaves that field as it is.
CREATE FUNCTION update_solution(solution_id uuid, title text DEFAULT NULL, description text DEFAULT NULL)
    RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    s tokenvault.solutions := tokenvault._solution_must_exist(solution_id);
BEGIN
    PERFORM tokenvault._check_solution_text(title, description);
    UPDATE tokenvault.solutions t
       SET title = coalesce(update_solution.title, t.title),
           description = coalesce(update_solution.description, t.description),
           updated_at = now()
     WHERE t.id = s.id;
END
$$;

CREATE FUNCTION delete_solution(solution_id uuid, force boolean DEFAULT false) RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    s tokenvault.solutions := tokenvault._solution_must_exist(solution_id);
    n bigint;
BEGIN
    SELECT count(*) INTO n FROM tokenvault.instances i WHERE i.solution_id = s.id;
    IF n > 0 AND NOT coalesce(force, false) THEN
        RAISE EXCEPTION 'solution % has % instance(s)', s.id, n
            USING ERRCODE = 'dependent_objects_still_exist',
                  HINT = 'Delete them first, or call tokenvault.delete_solution(id, force => true) to delete them too.';
    END IF;
    DELETE FROM tokenvault.instances i WHERE i.solution_id = s.id;
    DELETE FROM tokenvault.solutions WHERE id = s.id;
END
$$;

-- Check a slot's settings for its kind.  Unknown keys are refused, as for
-- clients: a misspelt "requried" must not pass silently.
CREATE FUNCTION _slot_settings(kind text, settings jsonb) RETURNS jsonb
    LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    known constant text[] := CASE kind WHEN 'auth'
        THEN ARRAY['client_id', 'service', 'scopes', 'required', 'force_unique', 'static_auth_id']
        ELSE ARRAY['required', 'default'] END;
    k text;
BEGIN
    settings := coalesce(settings, '{}');
    IF jsonb_typeof(settings) <> 'object' THEN
        RAISE EXCEPTION 'slot settings must be a JSON object' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    FOR k IN SELECT jsonb_object_keys(settings) LOOP
        IF NOT k = ANY (known) THEN
            RAISE EXCEPTION 'unknown setting "%" for % slot', k, CASE kind WHEN 'auth' THEN 'an auth' ELSE 'a config' END
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Known settings: ' || array_to_string(known, ', ') || '.';
        ELSIF k IN ('required', 'force_unique') AND jsonb_typeof(settings->k) <> 'boolean' THEN
            RAISE EXCEPTION 'setting "%" must be true or false', k USING ERRCODE = 'invalid_parameter_value';
        ELSIF k IN ('client_id', 'static_auth_id') AND (jsonb_typeof(settings->k) <> 'string'
                OR settings->>k !~* '^[0-9a-f]{8}-?([0-9a-f]{4}-?){3}[0-9a-f]{12}$') THEN
            RAISE EXCEPTION 'setting "%" must be a uuid', k USING ERRCODE = 'invalid_parameter_value';
        ELSIF k = 'service' AND (jsonb_typeof(settings->k) <> 'string' OR settings->>k = '') THEN
            RAISE EXCEPTION 'setting "service" must be a non-empty string' USING ERRCODE = 'invalid_parameter_value';
        ELSIF k = 'scopes' AND (jsonb_typeof(settings->k) <> 'array'
                OR EXISTS (SELECT FROM jsonb_array_elements(settings->k) e WHERE jsonb_typeof(e) <> 'string')) THEN
            RAISE EXCEPTION 'setting "scopes" must be an array of strings' USING ERRCODE = 'invalid_parameter_value';
        ELSIF k = 'default' AND jsonb_typeof(settings->k) = 'null' THEN
            RAISE EXCEPTION 'setting "default" must not be null' USING ERRCODE = 'invalid_parameter_value',
                HINT = 'Leave it out for no default.';
        END IF;
    END LOOP;
    IF kind = 'auth' AND num_nonnulls(settings->'client_id', settings->'service') <> 1 THEN
        RAISE EXCEPTION 'an auth slot takes either a client_id or a service'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'With client_id, auths must be of that client; with service, of any client of that service.';
    ELSIF settings ? 'static_auth_id' AND (settings->'force_unique')::boolean THEN
        RAISE EXCEPTION 'a static slot cannot force a unique auth: every instance shares its auth'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF settings ? 'client_id' THEN
        PERFORM tokenvault._client_must_exist((settings->>'client_id')::uuid);
    END IF;
    IF settings ? 'static_auth_id' THEN
        PERFORM tokenvault._auth_must_exist((settings->>'static_auth_id')::uuid);
    END IF;
    RETURN settings;
END
$$;

-- A slot's row from checked settings.
CREATE FUNCTION _slot_from(solution_id uuid, external_id text, kind text, s jsonb) RETURNS tokenvault.slots
    LANGUAGE sql IMMUTABLE AS $$
    SELECT ROW(solution_id, external_id, kind, NULL, (s->>'client_id')::uuid, s->>'service',
               CASE WHEN s ? 'scopes' THEN ARRAY(SELECT pg_catalog.jsonb_array_elements_text(s->'scopes')) END,
               coalesce((s->>'required')::boolean, false), coalesce((s->>'force_unique')::boolean, false),
               (s->>'static_auth_id')::uuid, s->'default', NULL)::tokenvault.slots
$$;

-- A slot's settings as add_slot() takes them.
CREATE FUNCTION _slot_settings_of(s tokenvault.slots) RETURNS jsonb
    LANGUAGE sql IMMUTABLE AS $$
    SELECT pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
        'client_id', s.client_id, 'service', s.service, 'scopes', pg_catalog.to_jsonb(s.scopes),
        'required', s.required, 'force_unique', CASE WHEN s.kind = 'auth' THEN s.force_unique END,
        'static_auth_id', s.static_auth_id, 'default', s.default_value))
$$;

CREATE FUNCTION add_slot(solution_id uuid, external_id text, kind text, settings jsonb DEFAULT '{}')
    RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r tokenvault.slots;
BEGIN
    PERFORM tokenvault._solution_must_exist(solution_id);
    IF coalesce(external_id, '') = '' OR length(external_id) > 255 THEN
        RAISE EXCEPTION 'externalId must be 1 to 255 characters long' USING ERRCODE = 'invalid_parameter_value';
    ELSIF kind IS NULL OR kind NOT IN ('auth', 'config') THEN
        RAISE EXCEPTION 'unknown slot kind "%"', kind
            USING ERRCODE = 'invalid_parameter_value', HINT = 'A slot is of kind auth or config.';
    ELSIF EXISTS (SELECT FROM tokenvault.slots s
                   WHERE s.solution_id = add_slot.solution_id AND s.external_id = add_slot.external_id) THEN
        RAISE EXCEPTION 'solution % already has a slot "%"', solution_id, external_id
            USING ERRCODE = 'unique_violation',
                  HINT = 'Change it with tokenvault.update_slot().';
    END IF;
    r := tokenvault._slot_from(solution_id, external_id, kind, tokenvault._slot_settings(kind, settings));
    INSERT INTO tokenvault.slots (solution_id, external_id, kind, client_id, service, scopes, required,
                                  force_unique, static_auth_id, default_value)
    VALUES (r.solution_id, r.external_id, r.kind, r.client_id, r.service, r.scopes, r.required,
            r.force_unique, r.static_auth_id, r.default_value);
END
$$;

-- Settings given replace those stored; a key set to null clears it.
CREATE FUNCTION update_slot(solution_id uuid, external_id text, settings jsonb) RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    s tokenvault.slots;
    r tokenvault.slots;
BEGIN
    PERFORM tokenvault._solution_must_exist(solution_id), tokenvault._require(settings, 'settings');
    s := tokenvault._slot_must_exist(solution_id, external_id, NULL);
    IF jsonb_typeof(settings) <> 'object' THEN
        RAISE EXCEPTION 'slot settings must be a JSON object' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- client_id and service replace each other
    IF settings ? 'client_id' OR settings ? 'service' THEN
        settings := jsonb_build_object('client_id', NULL, 'service', NULL) || settings;
    END IF;
    r := tokenvault._slot_from(s.solution_id, s.external_id, s.kind,
             tokenvault._slot_settings(s.kind, jsonb_strip_nulls(tokenvault._slot_settings_of(s) || settings)));
    UPDATE tokenvault.slots t
       SET client_id = r.client_id, service = r.service, scopes = r.scopes, required = r.required,
           force_unique = r.force_unique, static_auth_id = r.static_auth_id, default_value = r.default_value
     WHERE t.solution_id = s.solution_id AND t.external_id = s.external_id;
END
$$;

-- The slot goes, and its values in every instance with it.
CREATE FUNCTION delete_slot(solution_id uuid, external_id text) RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM tokenvault._solution_must_exist(solution_id), tokenvault._slot_must_exist(solution_id, external_id, NULL);
    DELETE FROM tokenvault.slots s
     WHERE s.solution_id = delete_slot.solution_id AND s.external_id = delete_slot.external_id;
END
$$;

-- The entries of an auth_values or config_values argument, checked:
-- [{"externalId": ..., <field>: ...}], each external id once.  A JSON null
-- in <field> comes back as NULL: it clears the slot.
CREATE FUNCTION _slot_values(list jsonb, arg text, field text) RETURNS TABLE (external_id text, value jsonb)
    LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    e jsonb;
    seen text[] := '{}';
BEGIN
    IF list IS NULL THEN
        RETURN;
    ELSIF jsonb_typeof(list) <> 'array' THEN
        RAISE EXCEPTION '% must be a JSON array', arg
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = format('Give [{"externalId": ..., "%s": ...}, ...].', field);
    END IF;
    FOR e IN SELECT jsonb_array_elements(list) LOOP
        IF jsonb_typeof(e) <> 'object' OR jsonb_typeof(e->'externalId') IS DISTINCT FROM 'string'
           OR NOT e ? field OR EXISTS (SELECT FROM jsonb_object_keys(e) k WHERE k NOT IN ('externalId', field)) THEN
            -- (the entry's keys only: a value is the user's and stays out of errors)
            RAISE EXCEPTION 'each entry of % must be {"externalId": ..., "%": ...}', arg, field
                USING ERRCODE = 'invalid_parameter_value',
                      DETAIL = CASE WHEN jsonb_typeof(e) = 'object'
                                    THEN format('Found an entry with the keys: %s.',
                                                (SELECT string_agg(k, ', ' ORDER BY k) FROM jsonb_object_keys(e) k))
                                    ELSE format('Found a JSON %s.', jsonb_typeof(e)) END;
        ELSIF e->>'externalId' = ANY (seen) THEN
            RAISE EXCEPTION 'externalId "%" is given twice in %', e->>'externalId', arg
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        seen := seen || (e->>'externalId');
        external_id := e->>'externalId';
        value := CASE WHEN jsonb_typeof(e->field) <> 'null' THEN e->field END;
        RETURN NEXT;
    END LOOP;
END
$$;

-- Fill or clear an instance's slots; the triggers hold the rules.
CREATE FUNCTION _set_instance_values(i tokenvault.instances, auth_values jsonb, config_values jsonb) RETURNS void
    LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r record;
    s tokenvault.slots;
BEGIN
    FOR r IN SELECT * FROM tokenvault._slot_values(auth_values, 'auth_values', 'authId') LOOP
        s := tokenvault._slot_must_exist(i.solution_id, r.external_id, 'auth');
        IF s.static_auth_id IS NOT NULL THEN
            RAISE EXCEPTION 'slot "%" is static: its auth is the solution''s and cannot be set or changed', s.external_id
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Leave it out: every instance of the solution uses the slot''s static auth.';
        ELSIF r.value IS NULL THEN
            DELETE FROM tokenvault.instance_auth_values v WHERE v.instance_id = i.id AND v.external_id = s.external_id;
        ELSIF jsonb_typeof(r.value) <> 'string' OR r.value #>> '{}' !~* '^[0-9a-f]{8}-?([0-9a-f]{4}-?){3}[0-9a-f]{12}$' THEN
            RAISE EXCEPTION 'authId for "%" must be a uuid', s.external_id USING ERRCODE = 'invalid_parameter_value';
        ELSE
            INSERT INTO tokenvault.instance_auth_values (instance_id, solution_id, external_id, auth_id)
            VALUES (i.id, i.solution_id, s.external_id, (r.value #>> '{}')::uuid)
            ON CONFLICT (instance_id, external_id) DO UPDATE SET auth_id = EXCLUDED.auth_id;
        END IF;
    END LOOP;
    FOR r IN SELECT * FROM tokenvault._slot_values(config_values, 'config_values', 'value') LOOP
        s := tokenvault._slot_must_exist(i.solution_id, r.external_id, 'config');
        IF r.value IS NULL THEN
            DELETE FROM tokenvault.instance_config_values v WHERE v.instance_id = i.id AND v.external_id = s.external_id;
        ELSE
            INSERT INTO tokenvault.instance_config_values (instance_id, solution_id, external_id, value)
            VALUES (i.id, i.solution_id, s.external_id, r.value)
            ON CONFLICT (instance_id, external_id) DO UPDATE SET value = EXCLUDED.value;
        END IF;
    END LOOP;
END
$$;

-- A new instance starts disabled, as in Tray: enable it with update_instance().
CREATE FUNCTION create_instance(solution_id uuid, owner uuid, name text,
                                auth_values jsonb DEFAULT '[]', config_values jsonb DEFAULT '[]') RETURNS uuid
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    i tokenvault.instances;
BEGIN
    PERFORM tokenvault._solution_must_exist(solution_id), tokenvault._user_must_exist(owner);
    IF coalesce(name, '') = '' OR length(name) > 1024 THEN
        RAISE EXCEPTION 'an instance needs a name of 1 to 1024 characters' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    INSERT INTO tokenvault.instances (solution_id, owner, name)
    VALUES (solution_id, owner, name)
    RETURNING * INTO i;
    PERFORM tokenvault._set_instance_values(i, auth_values, config_values);
    RETURN i.id;
END
$$;

-- A NULL leaves that part as it is.  Values given are set slot by slot
-- (others keep theirs); a null authId or value clears a slot.  Disabling
-- comes before the values change, enabling after.
CREATE FUNCTION update_instance(instance_id uuid, name text DEFAULT NULL, enabled boolean DEFAULT NULL,
                                auth_values jsonb DEFAULT NULL, config_values jsonb DEFAULT NULL) RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    i tokenvault.instances := tokenvault._instance_must_exist(instance_id);
BEGIN
    IF name = '' OR length(name) > 1024 THEN
        RAISE EXCEPTION 'an instance needs a name of 1 to 1024 characters' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    UPDATE tokenvault.instances t
       SET name = coalesce(update_instance.name, t.name),
           enabled = CASE WHEN update_instance.enabled THEN t.enabled ELSE coalesce(update_instance.enabled, t.enabled) END,
           updated_at = now()
     WHERE t.id = i.id;
    PERFORM tokenvault._set_instance_values(i, auth_values, config_values);
    IF update_instance.enabled THEN
        UPDATE tokenvault.instances t SET enabled = true WHERE t.id = i.id;
    END IF;
END
$$;

CREATE FUNCTION delete_instance(instance_id uuid) RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    DELETE FROM tokenvault.instances WHERE id = (tokenvault._instance_must_exist(instance_id)).id;
END
$$;

-- The auth values of a user's instances, static slots included, with the
-- slots' positions (Tray lists them in slot order).  Plain SQL, so that the
-- planner inlines it and pushes an instance id down into both halves.
CREATE FUNCTION _auth_value_rows(owner uuid)
    RETURNS TABLE (instance_id uuid, external_id text, auth_id uuid, "position" integer)
    LANGUAGE sql STABLE AS $$
    SELECT v.instance_id, v.external_id, v.auth_id, s.position
      FROM tokenvault.instances i
      JOIN tokenvault.instance_auth_values v ON v.instance_id = i.id
      JOIN tokenvault.slots s ON s.solution_id = v.solution_id AND s.external_id = v.external_id
     WHERE i.owner = $1
    UNION ALL
    SELECT i.id, s.external_id, s.static_auth_id, s.position
      FROM tokenvault.instances i
      JOIN tokenvault.slots s ON s.solution_id = i.solution_id AND s.static_auth_id IS NOT NULL
     WHERE i.owner = $1
$$;

-- Tray's "Get Solution Instance" node.  authValues hold the static slots'
-- auths too; configValues the slots' defaults where no value is set, each
-- value JSON-encoded as a string, as Tray returns them.
CREATE FUNCTION instance(instance_id uuid) RETURNS jsonb
    LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    i tokenvault.instances := tokenvault._instance_must_exist(instance_id);
BEGIN
    RETURN (
        SELECT jsonb_build_object(
            'id', i.id,
            'name', i.name,
            'enabled', i.enabled,
            'owner', i.owner,
            'created', to_char(i.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
            'solution', jsonb_build_object('id', s.id, 'title', s.title, 'description', s.description),
            'authValues', coalesce((
                SELECT jsonb_agg(jsonb_build_object('externalId', r.external_id, 'authId', r.auth_id)
                                 ORDER BY r.position)
                  FROM tokenvault._auth_value_rows(i.owner) r WHERE r.instance_id = i.id), '[]'),
            'configValues', coalesce((
                SELECT jsonb_agg(jsonb_build_object('externalId', sl.external_id,
                                                    'value', coalesce(v.value, sl.default_value)::text)
                                 ORDER BY sl.position)
                  FROM tokenvault.slots sl
                  LEFT JOIN tokenvault.instance_config_values v
                         ON v.instance_id = i.id AND v.external_id = sl.external_id
                 WHERE sl.solution_id = i.solution_id AND sl.kind = 'config'
                   AND coalesce(v.value, sl.default_value) IS NOT NULL), '[]'))
          FROM tokenvault.solutions s WHERE s.id = i.solution_id);
END
$$;

-- Tray's mapping query: a user's instances with their auth values, and the
-- user's auths, so that an application maps one to the other in one call.
CREATE FUNCTION user_instances(user_id uuid) RETURNS jsonb
    LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM tokenvault._user_must_exist(user_id);
    RETURN jsonb_build_object(
        'solutionInstances', coalesce((
            SELECT jsonb_agg(jsonb_build_object('id', i.id, 'name', i.name, 'authValues', coalesce(av.list, '[]'))
                             ORDER BY i.created_at, i.id)
              FROM tokenvault.instances i
              LEFT JOIN (SELECT r.instance_id,
                                jsonb_agg(jsonb_build_object('externalId', r.external_id, 'authId', r.auth_id)
                                          ORDER BY r.position) AS list
                           FROM tokenvault._auth_value_rows(user_instances.user_id) r
                          GROUP BY r.instance_id) av ON av.instance_id = i.id
             WHERE i.owner = user_instances.user_id), '[]'),
        'authentications', coalesce((
            SELECT jsonb_agg(jsonb_build_object('id', a.id, 'name', a.name) ORDER BY a.created_at, a.id)
              FROM tokenvault.auths a WHERE a.user_id = user_instances.user_id), '[]'));
END
$$;

-- authorize_url() for a slot: the slot's client (or the one authorization
-- code client of its service) and the slot's scopes, not the end user's.
-- (A name of its own: as an overload of authorize_url(), calls with untyped
-- literals or parameters could no longer choose between the two.)
CREATE FUNCTION authorize_url_for_slot(solution_id uuid, external_id text, user_id uuid, redirect_uri text,
                              name text DEFAULT NULL, auth_id uuid DEFAULT NULL) RETURNS text
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    s tokenvault.slots;
    c uuid[];
BEGIN
    PERFORM tokenvault._solution_must_exist(solution_id);
    s := tokenvault._slot_must_exist(solution_id, external_id, 'auth');
    IF s.static_auth_id IS NOT NULL THEN
        RAISE EXCEPTION 'slot "%" is static: its auth is the solution''s, not the user''s', s.external_id
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    c := CASE WHEN s.client_id IS NOT NULL THEN ARRAY[s.client_id]
              ELSE ARRAY(SELECT t.id FROM tokenvault.clients t
                          WHERE t.service = s.service AND t.grant_type = 'authorization_code' ORDER BY t.created_at) END;
    IF cardinality(c) <> 1 THEN
        RAISE EXCEPTION 'slot "%" takes service "%", which % authorization_code clients serve',
                s.external_id, s.service, cardinality(c)
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Name the client in the slot: tokenvault.update_slot(solution_id, external_id, ''{"client_id": ...}'').';
    END IF;
    RETURN tokenvault.authorize_url(client_id => c[1], user_id => user_id, redirect_uri => redirect_uri,
                                    name => name, auth_id => auth_id,
                                    scopes => coalesce(s.scopes, (SELECT t.scopes FROM tokenvault.clients t WHERE t.id = c[1])));
END
$$;

-- Token stores: app-private tokens per role, and user tokens shared by grants

-- 16 MiB, as the reference's store takes.
CREATE FUNCTION _check_token(related_id text, key text, value text DEFAULT '') RETURNS void
    LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM tokenvault._require(related_id, 'related_id'), tokenvault._require(key, 'key'),
            tokenvault._require(value, 'value');
    IF related_id = '' OR key = '' THEN
        RAISE EXCEPTION 'related_id and key must not be empty' USING ERRCODE = 'invalid_parameter_value';
    ELSIF length(related_id) > 1024 OR length(key) > 1024 THEN
        RAISE EXCEPTION 'related_id and key are limited to 1024 characters' USING ERRCODE = 'invalid_parameter_value';
    ELSIF octet_length(value) > 16777216 THEN
        RAISE EXCEPTION 'token value is % bytes, more than the 16 MiB (16777216 bytes) a token may hold',
                octet_length(value)
            USING ERRCODE = 'program_limit_exceeded',
                  HINT = 'Split it over several keys.';
    END IF;
END
$$;

CREATE FUNCTION put_private_token(related_id text, key text, value text) RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    me name := tokenvault._caller();
BEGIN
    PERFORM tokenvault._check_token(related_id, key, value);
    INSERT INTO tokenvault.private_tokens AS t (owner, owner_name, related_id, key, value)
    VALUES (tokenvault._role(me), me, related_id, key,
            tokenvault._seal_private(value, me, related_id, key))
    ON CONFLICT ON CONSTRAINT private_tokens_pkey
        DO UPDATE SET owner_name = EXCLUDED.owner_name, value = EXCLUDED.value, updated_at = now();
END
$$;

-- The reads are C (tokens.c): one probe of the primary key and a decryption.
-- NULL when the role has no such token.
CREATE FUNCTION get_private_token(related_id text, key text) RETURNS text
    LANGUAGE c STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'tv_get_private_token';

-- In related id and key order.
CREATE FUNCTION list_private_tokens(related_id text DEFAULT NULL)
    RETURNS TABLE (related_id text, key text, value text)
    LANGUAGE c STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp ROWS 100
    AS 'MODULE_PATHNAME', 'tv_list_private_tokens';

-- Whether there was one to delete.
CREATE FUNCTION delete_private_token(related_id text, key text) RETURNS boolean
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    DELETE FROM tokenvault.private_tokens t
     WHERE t.owner = tokenvault._role(tokenvault._caller()) AND t.related_id = delete_private_token.related_id
       AND t.key = delete_private_token.key;
    RETURN FOUND;
END
$$;

-- A role by its exact name (no identifier quoting or case folding), NULL
-- when there is none.
CREATE FUNCTION _role(name name) RETURNS regrole
    LANGUAGE sql STABLE AS $$
    SELECT r.oid::pg_catalog.regrole FROM pg_catalog.pg_roles r WHERE r.rolname = $1
$$;

-- Whether a role has what is granted to another (it, or a role it inherits
-- from); false for a role dropped since the grant.
CREATE FUNCTION _holds(member name, grantee regrole) RETURNS boolean
    LANGUAGE sql STABLE AS $$
    SELECT EXISTS (SELECT FROM pg_catalog.pg_roles r
                    WHERE r.oid = grantee::pg_catalog.oid AND pg_catalog.pg_has_role(member, r.oid, 'USAGE'))
$$;

-- Refuse unless the calling role (or a role it inherits from) holds a grant
-- that covers the related id: "write" for writing, either for reading.
-- Read afresh in every call, so a revoke applies from the next statement on.
CREATE FUNCTION _user_token_access(user_id uuid, related_id text, need text) RETURNS void
    LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM tokenvault._user_must_exist(user_id);
    IF NOT EXISTS (SELECT FROM tokenvault.user_token_grants g
                    WHERE g.user_id = _user_token_access.user_id
                      AND (g.related_id IS NULL OR g.related_id = _user_token_access.related_id)
                      AND (g.privilege = 'write' OR need = 'read')
                      AND tokenvault._holds(tokenvault._caller(), g.grantee)) THEN
        RAISE EXCEPTION 'role % may not % the tokens of user %', tokenvault._caller(), need,
                user_id || CASE WHEN related_id IS NULL THEN '' ELSE format(' with related id "%s"', related_id) END
            USING ERRCODE = 'insufficient_privilege',
                  HINT = format('An administrator shares them with tokenvault.grant_user_tokens(user_id, role, ''%s'').', need);
    END IF;
END
$$;

CREATE FUNCTION put_user_token(user_id uuid, related_id text, key text, value text) RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM tokenvault._check_token(related_id, key, value),
            tokenvault._user_token_access(user_id, related_id, 'write');
    INSERT INTO tokenvault.user_tokens AS t (user_id, related_id, key, value)
    VALUES (user_id, related_id, key,
            tokenvault._seal_user_token(value, user_id, related_id, key))
    ON CONFLICT ON CONSTRAINT user_tokens_pkey DO UPDATE SET value = EXCLUDED.value, updated_at = now();
END
$$;

CREATE FUNCTION get_user_token(user_id uuid, related_id text, key text) RETURNS text
    LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM tokenvault._check_token(related_id, key), tokenvault._user_token_access(user_id, related_id, 'read');
    RETURN (SELECT tokenvault._open_user_token(t.value, t.user_id, t.related_id, t.key)
              FROM tokenvault.user_tokens t
             WHERE t.user_id = get_user_token.user_id AND t.related_id = get_user_token.related_id
               AND t.key = get_user_token.key);
END
$$;

-- The tokens the caller may read: those of one related id, or, without
-- one, every token a grant of the caller's covers.  (SQL, not PL/pgSQL,
-- whose variables could not be named like both the argument and a column.)
CREATE FUNCTION _user_token_list_access(user_id uuid, related_id text) RETURNS void
    LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF related_id IS NOT NULL OR NOT EXISTS (
            SELECT FROM tokenvault.user_token_grants g
             WHERE g.user_id = _user_token_list_access.user_id AND tokenvault._holds(tokenvault._caller(), g.grantee)) THEN
        PERFORM tokenvault._user_token_access(user_id, related_id, 'read');
    END IF;
END
$$;

CREATE FUNCTION list_user_tokens(user_id uuid, related_id text DEFAULT NULL)
    RETURNS TABLE (related_id text, key text, value text)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT tokenvault._user_token_list_access($1, $2);
    SELECT t.related_id, t.key, tokenvault._open_user_token(t.value, t.user_id, t.related_id, t.key)
      FROM tokenvault.user_tokens t
     WHERE t.user_id = $1 AND ($2 IS NULL OR t.related_id = $2)
       AND EXISTS (SELECT FROM tokenvault.user_token_grants g
                    WHERE g.user_id = t.user_id AND (g.related_id IS NULL OR g.related_id = t.related_id)
                      AND tokenvault._holds(tokenvault._caller(), g.grantee))
     ORDER BY t.related_id, t.key
$$;

CREATE FUNCTION delete_user_token(user_id uuid, related_id text, key text) RETURNS boolean
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM tokenvault._check_token(related_id, key), tokenvault._user_token_access(user_id, related_id, 'write');
    DELETE FROM tokenvault.user_tokens t
     WHERE t.user_id = delete_user_token.user_id AND t.related_id = delete_user_token.related_id
       AND t.key = delete_user_token.key;
    RETURN FOUND;
END
$$;

-- Share a user's tokens with a role: 'read', or 'write' (which reads too),
-- for all of them or for one related id.  A new grant for the same role and
-- related id replaces the old one.
CREATE FUNCTION grant_user_tokens(user_id uuid, role name, privilege text, related_id text DEFAULT NULL)
    RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM tokenvault._user_must_exist(user_id), tokenvault._require(role, 'role');
    IF privilege IS NULL OR privilege NOT IN ('read', 'write') THEN
        RAISE EXCEPTION 'unknown privilege "%"', privilege
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Grant read, or write (which reads too).';
    ELSIF tokenvault._role(role) IS NULL THEN
        RAISE EXCEPTION 'role "%" does not exist', role USING ERRCODE = 'undefined_object';
    ELSIF related_id = '' THEN
        RAISE EXCEPTION 'related_id must not be empty (NULL grants all of the user''s tokens)'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    INSERT INTO tokenvault.user_token_grants (user_id, grantee, privilege, related_id, granted_by)
    VALUES (user_id, tokenvault._role(role), privilege, related_id, tokenvault._caller())
    ON CONFLICT ON CONSTRAINT user_token_grants_user_id_grantee_related_id_key DO UPDATE
        SET privilege = EXCLUDED.privilege, granted_by = EXCLUDED.granted_by, created_at = now();
END
$$;

-- Take a grant back (the one for that related id, or the one for all the
-- user's tokens when NULL); whether there was one.
CREATE FUNCTION revoke_user_tokens(user_id uuid, role name, related_id text DEFAULT NULL) RETURNS boolean
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM tokenvault._user_must_exist(user_id), tokenvault._require(role, 'role');
    DELETE FROM tokenvault.user_token_grants g
     WHERE g.user_id = revoke_user_tokens.user_id AND g.grantee = tokenvault._role(role)
       AND g.related_id IS NOT DISTINCT FROM revoke_user_tokens.related_id;
    RETURN FOUND;
END
$$;

-- Keys: the key ring, key usage and rotation over every sealed column

CREATE FUNCTION key_ring() RETURNS TABLE (key_id bigint, newest boolean)
    LANGUAGE c VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'tv_key_ring';

-- How many secrets each key seals.
CREATE FUNCTION key_usage() RETURNS TABLE (key_id bigint, newest boolean, secrets bigint)
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN QUERY EXECUTE format($q$
        WITH used AS (%s)
        SELECT coalesce(r.key_id, u.key_id), coalesce(r.newest, false), count(u.key_id)
          FROM tokenvault.key_ring() r
          FULL JOIN used u ON u.key_id = r.key_id
         GROUP BY 1, 2
         ORDER BY 2, 1 $q$,
        (SELECT string_agg(format('SELECT tokenvault._key_id(%I) AS key_id FROM %s WHERE %I IS NOT NULL',
                                  s.col, s.tbl, s.col), ' UNION ALL ')
           FROM tokenvault._sealed_columns() s));
END
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

-- Re-seal every secret not under the newest key, 100 pages at a time.
CREATE FUNCTION rotate_key() RETURNS bigint
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    newest bigint := (SELECT r.key_id FROM tokenvault.key_ring() r WHERE r.newest);
    total bigint := 0;
    s record;
    last_page bigint;
    page bigint;
    n bigint;
BEGIN
    FOR s IN SELECT * FROM tokenvault._sealed_columns() LOOP
        last_page := pg_relation_size(s.tbl) / current_setting('block_size')::bigint;
        page := 0;
        WHILE page <= last_page LOOP
            n := tokenvault._reseal_pages(s, page, 100, newest);
            page := page + 100;
            CONTINUE WHEN n = 0;
            total := total + n;
            RAISE NOTICE 'rotate_key: % secret(s) re-sealed with key % so far', total, newest;
        END LOOP;
    END LOOP;
    RETURN total;
END
$$;

-- Where secrets are sealed: the table, the column, the place it belongs
-- (_seal_<place>, _open_<place>) and who in that place, as an expression
-- over the row "t".
CREATE FUNCTION _sealed_columns() RETURNS TABLE (tbl regclass, col name, place text, place_args text)
    LANGUAGE sql STABLE AS $$
    VALUES ('tokenvault.clients'::pg_catalog.regclass, 'secret'::name, 'client', 't.id'),
           ('tokenvault.auths', 'secret', 'auth', 't.id'),
           ('tokenvault.webhooks', 'secret', 'webhook', 't.id'),
           ('tokenvault.auth_states', 'verifier', 'state', 't.state'),
           ('tokenvault.private_tokens', 'value', 'private', 't.owner_name, t.related_id, t.key'),
           ('tokenvault.user_tokens', 'value', 'user_token', 't.user_id, t.related_id, t.key')
$$;

-- Re-seal what a range of a table's pages holds under an older key.  Rows
-- are found by their place (a TID range scan), which needs no key of the
-- table's own; a re-sealed row that moves further on is under the newest
-- key and passed over.
CREATE FUNCTION _reseal_pages(s record, first_page bigint, pages bigint, newest bigint) RETURNS bigint
    LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    n bigint;
BEGIN
    EXECUTE format($q$
        WITH resealed AS (
            UPDATE %1$s t SET %2$I = tokenvault._seal_%4$s(tokenvault._open_%4$s(t.%2$I, %3$s), %3$s)
             WHERE t.ctid >= $1 AND t.ctid < $2 AND t.%2$I IS NOT NULL AND tokenvault._key_id(t.%2$I) <> $3
            RETURNING 1)
        SELECT count(*) FROM resealed $q$, s.tbl, s.col, s.place_args, s.place)
    INTO n USING format('(%s,0)', first_page)::tid, format('(%s,0)', first_page + pages)::tid, newest;
    RETURN n;
END
$$;

-- Privileges: nothing for PUBLIC; the application reads, the administrator also manages; the row level security policies.
-- Secrets leave only through the functions.

REVOKE ALL ON ALL TABLES IN SCHEMA tokenvault FROM PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA tokenvault FROM PUBLIC;
GRANT USAGE ON SCHEMA tokenvault TO tokenvault_app, tokenvault_admin;

------------------------------------------------------------------------------
-- Tables: the plain columns, never a sealed one
------------------------------------------------------------------------------

GRANT SELECT ON users TO tokenvault_app;
GRANT SELECT (id, user_id, client_id, name, service, scopes, status, token_type, expires_at,
              refresh_expires_at, refresh_at, last_refreshed_at, failure_count, last_error,
              version, expiry_notified_at, created_at, updated_at)
    ON auths TO tokenvault_app;
GRANT SELECT (id, name, service, type, grant_type, client_id, auth_url, token_url, refresh_url,
              revoke_url, scopes, client_auth, token_lifetime, extra_params, api_key_header,
              api_key_prefix, owner, visibility, created_at, updated_at,
              body_format, token_path, expires_in_unit, scope_separator, pkce, refresh_every)
    ON clients TO tokenvault_app;
GRANT SELECT ON events, stats TO tokenvault_app, tokenvault_admin;
GRANT SELECT (id, url, kinds, enabled, created_at) ON webhooks TO tokenvault_admin;
GRANT SELECT ON webhook_deliveries TO tokenvault_admin;
GRANT SELECT ON solutions, slots, instances, instance_auth_values, instance_config_values TO tokenvault_app;
GRANT SELECT (owner, owner_name, related_id, key, created_at, updated_at) ON private_tokens TO tokenvault_app;
GRANT SELECT ON user_token_grants TO tokenvault_admin;

------------------------------------------------------------------------------
-- Functions: the application's, then the administrator's (who is a member
-- of tokenvault_app); the internal ones (_*) are granted to no one
------------------------------------------------------------------------------

GRANT EXECUTE ON FUNCTION
    create_user(text, text), find_user(text), delete_user(uuid), user_auths(uuid),
    delete_user_auths(uuid, boolean), create_auth(uuid, uuid, text, jsonb, text[]),
    update_auth(uuid, text, jsonb), delete_auth(uuid, boolean, boolean),
    access_token(uuid), credentials(uuid), http_headers(uuid),
    authorize_url(uuid, uuid, text, text, text[], uuid), complete_authorization(text, text),
    refresh_auth(uuid),
    create_instance(uuid, uuid, text, jsonb, jsonb), update_instance(uuid, text, boolean, jsonb, jsonb),
    delete_instance(uuid), instance(uuid), user_instances(uuid),
    authorize_url_for_slot(uuid, text, uuid, text, text, uuid),
    put_private_token(text, text, text), get_private_token(text, text), list_private_tokens(text),
    delete_private_token(text, text),
    put_user_token(uuid, text, text, text), get_user_token(uuid, text, text), list_user_tokens(uuid, text),
    delete_user_token(uuid, text, text)
    TO tokenvault_app;

GRANT EXECUTE ON FUNCTION
    create_client(text, text, text, jsonb), update_client(uuid, jsonb), delete_client(uuid, boolean),
    key_ring(), key_usage(), add_key(), drop_key(bigint), rotate_key(),
    add_webhook(text, text, text[]), delete_webhook(uuid),
    create_solution(text, text), update_solution(uuid, text, text), delete_solution(uuid, boolean),
    add_slot(uuid, text, text, jsonb), update_slot(uuid, text, jsonb), delete_slot(uuid, text),
    grant_user_tokens(uuid, name, text, text), revoke_user_tokens(uuid, name, text)
    TO tokenvault_admin;

------------------------------------------------------------------------------
-- Row level security (enabled in tables.sql)
------------------------------------------------------------------------------

-- Through the table, too, a role sees its own private tokens only (sealed);
-- an administrator sees every role's, and writes none: the functions write.
CREATE POLICY private_tokens_own ON private_tokens FOR SELECT TO tokenvault_app
    USING (owner::oid = (SELECT r.oid FROM pg_catalog.pg_roles r WHERE r.rolname = current_user));
CREATE POLICY private_tokens_admin ON private_tokens FOR SELECT TO tokenvault_admin
    USING (true);

