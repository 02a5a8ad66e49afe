-- tokenvault 0.6.0 -> 0.7.0: security I (issue 15)
\echo Use "ALTER EXTENSION tokenvault UPDATE TO '0.7.0'" to load this file. \quit

-- The schema stays the superuser's alone (an install now refuses one that
-- is not; see schema.sql).
DO $$
DECLARE
    others text := (SELECT pg_catalog.string_agg(DISTINCT CASE WHEN a.grantee = 0 THEN 'PUBLIC'
                                                          ELSE a.grantee::regrole::text END, ', ')
                      FROM pg_catalog.pg_namespace n, pg_catalog.aclexplode(n.nspacl) a
                     WHERE n.oid = '@extschema@'::regnamespace AND a.privilege_type = 'CREATE'
                       AND a.grantee <> n.nspowner);
BEGIN
    IF others IS NOT NULL THEN
        RAISE EXCEPTION 'other roles may create objects in schema @extschema@: %', others
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'REVOKE CREATE ON SCHEMA @extschema@ FROM them, and look for objects they made there.';
    END IF;
END
$$;

------------------------------------------------------------------------------
-- Tables
------------------------------------------------------------------------------

ALTER TABLE clients ADD COLUMN allowed_hosts text[] CHECK (cardinality(allowed_hosts) > 0);
-- plain http is each client's and each webhook's own choice (it was one global setting)
ALTER TABLE clients ADD COLUMN allow_insecure_http boolean NOT NULL DEFAULT false;

-- a refresh marked as sent before it is, so that a failover names the ones it lost
ALTER TABLE auths ADD COLUMN refresh_sent_at timestamptz,
    ADD COLUMN refresh_lost text CHECK (refresh_lost IN ('failover', 'restart', 'no answer'));

ALTER TABLE events ADD COLUMN client_id uuid;

-- a webhook added before 0.7.0 has no owner, and hears no private client's events
ALTER TABLE webhooks ADD COLUMN owner name;
ALTER TABLE webhooks ADD COLUMN previous_secret bytea, ADD COLUMN allow_insecure_http boolean NOT NULL DEFAULT false,
    ADD COLUMN failing_since timestamptz;
-- a claim reads the heads of the (webhook, auth) queues alone: those behind a head wait at infinity
CREATE INDEX webhook_deliveries_due_idx ON webhook_deliveries (next_attempt_at) WHERE delivered_at IS NULL;
UPDATE webhook_deliveries d SET next_attempt_at = 'infinity'
 WHERE d.delivered_at IS NULL
   AND EXISTS (SELECT FROM webhook_deliveries p
                WHERE p.webhook_id = d.webhook_id AND p.auth_id IS NOT DISTINCT FROM d.auth_id
                  AND p.delivered_at IS NULL AND p.id < d.id);
ALTER TYPE delivery ADD ATTRIBUTE previous_secret text, ADD ATTRIBUTE allow_insecure_http boolean;
UPDATE events e SET client_id = a.client_id FROM auths a WHERE a.id = e.auth_id;

-- grants become an append-only history, which outlives the user
ALTER TABLE user_token_grants ADD COLUMN revoked_at timestamptz, ADD COLUMN revoked_by name,
    ADD COLUMN grantee_name name,
    ADD CHECK ((revoked_at IS NULL) = (revoked_by IS NULL)),
    DROP CONSTRAINT user_token_grants_user_id_grantee_related_id_key,
    DROP CONSTRAINT user_token_grants_user_id_fkey;
CREATE UNIQUE INDEX user_token_grants_live_key ON user_token_grants (user_id, grantee, related_id) NULLS NOT DISTINCT
    WHERE revoked_at IS NULL;
-- a grant is for a role by OID and name; one whose role is gone names no one
UPDATE user_token_grants g SET grantee_name = r.rolname FROM pg_catalog.pg_roles r WHERE r.oid = g.grantee::oid;

CREATE TABLE admissions (
    role        regrole PRIMARY KEY,
    level       text NOT NULL CHECK (level IN ('app', 'admin')),
    admitted_by name NOT NULL,
    admitted_at timestamptz NOT NULL DEFAULT now()
);
SELECT pg_catalog.pg_extension_config_dump('admissions', '');

-- the provider catalogue (issue 19): its rows are loaded at the end
CREATE TABLE providers (
    key             text PRIMARY KEY CHECK (key ~ '^[a-z][a-z0-9_]{0,62}$'),
    name            text NOT NULL CHECK (name <> ''),
    auth_type       text NOT NULL CHECK (auth_type IN ('oauth2', 'api_key', 'basic')),
    grant_type      text CHECK (grant_type IN ('authorization_code', 'client_credentials')),
    auth_url        text,
    token_url       text,
    refresh_url     text,
    revoke_url      text,
    scopes          text[] NOT NULL DEFAULT '{}',
    required_scopes text[] NOT NULL DEFAULT '{}',
    scope_separator text NOT NULL DEFAULT ' ' CHECK (scope_separator IN (' ', ',')),
    client_auth     text NOT NULL DEFAULT 'basic' CHECK (client_auth IN ('basic', 'post')),
    body_format     text NOT NULL DEFAULT 'form' CHECK (body_format IN ('form', 'json')),
    token_path      text,
    token_lifetime  integer CHECK (token_lifetime > 0),
    never_expires   boolean NOT NULL DEFAULT false,
    pkce            boolean NOT NULL DEFAULT false,
    extra_params    jsonb NOT NULL DEFAULT '{}',
    rotates_refresh_token boolean NOT NULL DEFAULT false,
    refresh_scopes  boolean NOT NULL DEFAULT false,
    -- {"shop": {"from": "auth", "example": "acme", "description": "..."}}
    tenant_params   jsonb NOT NULL DEFAULT '{}',
    allowed_hosts   text[],
    settings        jsonb NOT NULL DEFAULT '{}',   -- further client settings (quirks)
    api_key_header  text,
    api_key_prefix  text,
    verify_url      text,
    verify_method   text NOT NULL DEFAULT 'GET' CHECK (verify_method IN ('GET', 'POST')),
    verify_ok_field text,
    docs_url        text NOT NULL,
    checked_on      date NOT NULL,
    added_by        name,           -- NULL: shipped with the extension
    CHECK ((auth_type = 'oauth2') = (token_url IS NOT NULL))
);
SELECT pg_catalog.pg_extension_config_dump('providers', 'WHERE added_by IS NOT NULL');

ALTER TABLE clients ADD COLUMN provider text, ADD COLUMN provider_params jsonb,
    ADD COLUMN required_scopes text[] NOT NULL DEFAULT '{}',
    ADD COLUMN refresh_scopes boolean NOT NULL DEFAULT false,
    ADD COLUMN never_expires boolean NOT NULL DEFAULT false,
    ADD COLUMN token_scheme text CHECK (token_scheme ~ '^[-A-Za-z0-9!#$%&''*+.^_`|~]{1,64}$'),
    ADD COLUMN token_path_exchange_only boolean NOT NULL DEFAULT false,
    ADD COLUMN token_header text CHECK (token_header ~ '^[-A-Za-z0-9!#$%&''*+.^_`|~]{1,64}$'),
    ADD COLUMN field_names jsonb,
    ADD COLUMN issued_at_unit text CHECK (issued_at_unit IN ('seconds', 'milliseconds')),
    ADD COLUMN error_field text, ADD COLUMN error_description_field text, ADD COLUMN reauth_errors text[],
    ADD COLUMN verify_url text,
    ADD COLUMN verify_method text NOT NULL DEFAULT 'GET' CHECK (verify_method IN ('GET', 'POST')),
    ADD COLUMN verify_ok_field text, ADD COLUMN verify_headers jsonb,
    ADD COLUMN check_every integer CHECK (check_every > 0);
-- health checks: the last one's time and outcome, the next one's time
ALTER TABLE auths ADD COLUMN last_checked_at timestamptz,
    ADD COLUMN last_check text CHECK (last_check IN ('ok', 'refused', 'failed')),
    ADD COLUMN check_at timestamptz;
CREATE INDEX auths_check_at_idx ON auths (check_at) WHERE check_at IS NOT NULL;
ALTER TABLE auth_states ADD COLUMN fields jsonb;

-- A health check's request (checks.sql): the auth's verify URL and headers.
-- Holds a credential: internal only.
CREATE TYPE check_request AS (
    auth_id  uuid,
    url      text,
    method   text,
    headers  text[],        -- "Name: value" lines
    ok_field text,          -- a boolean field of a 2xx answer that must be true, or NULL
    allow_insecure_http boolean
);

-- What a health check found: ok, refused (the credential is no longer
-- good: 401, 403, or the ok field false) or failed (no verdict: a network
-- failure, a 5xx, anything else).  The message quotes no answer.
CREATE TYPE check_verdict AS (
    outcome text,
    status  integer,        -- HTTP status, 0 when none came
    message text
);

------------------------------------------------------------------------------
-- Functions
------------------------------------------------------------------------------

-- replaced by exact-typed helpers, and by _publish with the event's client
DROP FUNCTION _require(anyelement, text);
DROP FUNCTION _publish(text, uuid, jsonb);
-- the stats view gains refreshes_unconfirmed: made again in the tail
DROP VIEW stats;
DROP FUNCTION _worker_stats();
DROP FUNCTION authorize_url(uuid, uuid, text, text, text[], uuid);
DROP FUNCTION add_webhook(text, text, text[]);
DROP FUNCTION _worker_start();
DROP FUNCTION _holds(name, regrole);

CREATE FUNCTION _refuse_null(missing boolean, what text) RETURNS void
    LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF missing THEN
        RAISE EXCEPTION '% must not be null', what USING ERRCODE = 'null_value_not_allowed';
    END IF;
END
$$;

CREATE FUNCTION _admit_app() RETURNS void
    LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'tv_admit_app';

CREATE FUNCTION _admit_admin() RETURNS void
    LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'tv_admit_admin';

CREATE FUNCTION _admitted_app() RETURNS boolean
    LANGUAGE c STABLE AS 'MODULE_PATHNAME', 'tv_admitted_app';

CREATE FUNCTION _admitted_admin() RETURNS boolean
    LANGUAGE c STABLE AS 'MODULE_PATHNAME', 'tv_admitted_admin';

CREATE FUNCTION _client_visible(client_id uuid) RETURNS boolean
    LANGUAGE c STABLE STRICT AS 'MODULE_PATHNAME', 'tv_client_visible';

CREATE FUNCTION _require_client_access(client_id uuid, auth_id uuid) RETURNS void
    LANGUAGE c STABLE AS 'MODULE_PATHNAME', 'tv_require_client_access_sql';

CREATE FUNCTION _table_changed() RETURNS trigger
    LANGUAGE c AS 'MODULE_PATHNAME', 'tv_table_changed';

CREATE OR REPLACE FUNCTION _restoring() RETURNS boolean
    LANGUAGE sql STABLE AS $$
    SELECT pg_catalog.current_setting('row_security') = 'off'
       AND pg_catalog.pg_has_role(tokenvault._caller(),
                                  (SELECT c.relowner FROM pg_catalog.pg_class c
                                    WHERE c.oid = 'tokenvault.instances'::pg_catalog.regclass),
                                  'USAGE')
$$;

CREATE FUNCTION admit(role regrole, level text DEFAULT 'app') RETURNS void
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    carrier name := CASE level WHEN 'app' THEN 'tokenvault_app' WHEN 'admin' THEN 'tokenvault_admin' END;
BEGIN
    PERFORM tokenvault._refuse_null(role IS NULL, 'role'::text);
    IF carrier IS NULL THEN
        RAISE EXCEPTION 'admission level must be app or admin'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'An app uses tokens; an admin also manages clients, keys, webhooks and solutions.';
    END IF;
    IF NOT pg_has_role(role::oid, carrier, 'USAGE') THEN
        EXECUTE format('GRANT %I TO %s', carrier, role);
    END IF;
    INSERT INTO tokenvault.admissions (role, level, admitted_by)
    VALUES (admit.role, admit.level, tokenvault._caller())
    ON CONFLICT ON CONSTRAINT admissions_pkey
        DO UPDATE SET level = EXCLUDED.level, admitted_by = EXCLUDED.admitted_by, admitted_at = now();
END
$$;

CREATE FUNCTION dismiss(role regrole) RETURNS boolean
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM tokenvault._refuse_null(role IS NULL, 'role'::text);
    DELETE FROM tokenvault.admissions a WHERE a.role = dismiss.role;
    RETURN FOUND;
END
$$;

CREATE FUNCTION _create_key_file() RETURNS bigint
    LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'tv_create_key_file_sql';

CREATE FUNCTION _wait_for_older_transactions() RETURNS void
    LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'tv_wait_for_older_transactions';

CREATE OR REPLACE FUNCTION create_user(external_user_id text, name text DEFAULT NULL) RETURNS uuid
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    new_id uuid;
BEGIN
    PERFORM tokenvault._admit_app();
    PERFORM tokenvault._refuse_null(external_user_id IS NULL, 'external_user_id'::text);
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

CREATE OR REPLACE FUNCTION find_user(external_user_id text) RETURNS uuid
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT tokenvault._admit_app();
    SELECT id FROM tokenvault.users u WHERE u.external_user_id = find_user.external_user_id
$$;

CREATE OR REPLACE FUNCTION _user_must_exist(user_id uuid) RETURNS void
    LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM tokenvault._admit_app();
    PERFORM tokenvault._refuse_null(user_id IS NULL, 'user id'::text);
    IF NOT EXISTS (SELECT FROM tokenvault.users WHERE id = user_id) THEN
        RAISE EXCEPTION 'user % does not exist', user_id
            USING ERRCODE = 'undefined_object',
                  HINT = 'Create it with tokenvault.create_user(), or look it up with tokenvault.find_user().';
    END IF;
END
$$;

CREATE FUNCTION _refuse_hidden_auths(user_id uuid) RETURNS void
    LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    hidden uuid := (SELECT a.client_id FROM tokenvault.auths a
                     WHERE a.user_id = _refuse_hidden_auths.user_id
                       AND NOT tokenvault._client_visible(a.client_id) LIMIT 1);
BEGIN
    IF hidden IS NOT NULL THEN
        RAISE EXCEPTION 'user % holds auths of client %, which is private to another role', user_id, hidden
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'A member of the client''s owner deletes them first, with tokenvault.delete_auth().';
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION delete_user(user_id uuid) RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM tokenvault._admit_app();
    PERFORM tokenvault._user_must_exist(user_id), tokenvault._refuse_hidden_auths(user_id);
    PERFORM tokenvault._user_token_access(user_id, r.related_id, 'write'::text)
       FROM (SELECT DISTINCT t.related_id FROM tokenvault.user_tokens t WHERE t.user_id = delete_user.user_id) r
      WHERE NOT (SELECT o.rolsuper FROM pg_catalog.pg_roles o WHERE o.rolname = tokenvault._caller());
    DELETE FROM tokenvault.instances i WHERE i.owner = delete_user.user_id;
    DELETE FROM tokenvault.auths a WHERE a.user_id = delete_user.user_id;
    DELETE FROM tokenvault.users WHERE id = user_id;
END
$$;

CREATE OR REPLACE FUNCTION user_auths(user_id uuid)
    RETURNS TABLE (id uuid, name text, service text, client_id uuid, scopes text[],
                   status text, expires_at timestamptz, created_at timestamptz)
    LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM tokenvault._admit_app();
    PERFORM tokenvault._user_must_exist(user_id);
    RETURN QUERY
        SELECT a.id, a.name, a.service, a.client_id, a.scopes, a.status, a.expires_at, a.created_at
          FROM tokenvault.auths a
         WHERE a.user_id = user_auths.user_id AND tokenvault._client_visible(a.client_id)
         ORDER BY a.created_at, a.id;
END
$$;

CREATE OR REPLACE FUNCTION delete_user_auths(user_id uuid, force boolean DEFAULT false) RETURNS integer
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    ids uuid[];
    n integer;
BEGIN
    PERFORM tokenvault._admit_app();
    PERFORM tokenvault._user_must_exist(user_id), tokenvault._refuse_hidden_auths(user_id);
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

CREATE FUNCTION _url_problem(setting text, url text, allowed_hosts text[], fields jsonb) RETURNS text
    LANGUAGE c IMMUTABLE PARALLEL SAFE AS 'MODULE_PATHNAME', 'tv_url_problem';

CREATE FUNCTION _host_pattern_problem(pattern text) RETURNS text
    LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'tv_host_pattern_problem_sql';

CREATE FUNCTION _client_url_problem(c tokenvault.clients, fields jsonb) RETURNS text
    LANGUAGE sql IMMUTABLE AS $$
    SELECT COALESCE(
        tokenvault._url_problem('token_url', c.token_url, c.allowed_hosts, fields),
        tokenvault._url_problem('refresh_url', c.refresh_url, c.allowed_hosts, fields),
        tokenvault._url_problem('revoke_url', c.revoke_url, c.allowed_hosts, fields),
        tokenvault._url_problem('verify_url', c.verify_url, c.allowed_hosts, fields),
        CASE WHEN c.auth_url LIKE '%{%' THEN tokenvault._url_problem('auth_url', c.auth_url, c.allowed_hosts, fields) END)
$$;

CREATE FUNCTION _missing_url_fields(c tokenvault.clients, fields jsonb) RETURNS text[]
    LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce(array_agg(DISTINCT m[1] ORDER BY m[1]), '{}')
      FROM regexp_matches(concat_ws(' ', c.auth_url, c.token_url, c.refresh_url, c.revoke_url, c.verify_url),
                          '\{([A-Za-z0-9_]+)\}', 'g') m
     WHERE coalesce(fields->>m[1], '') = ''
$$;

CREATE FUNCTION _check_client_urls(c tokenvault.clients) RETURNS void
    LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    problem text := tokenvault._client_url_problem(c, NULL);
    secret_field text := substring(concat_ws(' ', c.auth_url, c.token_url, c.refresh_url, c.revoke_url, c.verify_url)
                                   FROM '\{(access_token|refresh_token|id_token|password|api_key)\}');
BEGIN
    IF secret_field IS NOT NULL THEN
        RAISE EXCEPTION 'a URL of client "%" names the secret field "%"', c.name, secret_field
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'A URL may name only the auth''s plain fields, such as a tenant or domain label.';
    END IF;
    IF problem IS NOT NULL THEN
        RAISE EXCEPTION 'client "%": %', c.name, problem
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'A URL that names fields in braces needs "allowed_hosts", the hosts the URLs may have, '
                         'such as ["*.my.salesforce.com"], fixed hosts included; a field may fill a host label, '
                         'the path or the query.';
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION _client_settings(type text, settings jsonb, creating boolean) RETURNS jsonb
    LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    known constant text[] := ARRAY['grant', 'client_id', 'client_secret', 'auth_url', 'token_url',
        'refresh_url', 'revoke_url', 'scopes', 'client_auth', 'token_lifetime', 'extra_params',
        'body_format', 'token_path', 'expires_in_unit', 'scope_separator', 'pkce', 'refresh_every',
        'api_key_header', 'api_key_prefix', 'visibility', 'allowed_hosts', 'allow_insecure_http',
        'provider', 'params', 'required_scopes', 'refresh_scopes', 'never_expires', 'token_scheme', 'token_header', 'field_names', 'token_path_exchange_only',
        'issued_at_unit', 'error_field', 'error_description_field', 'reauth_errors',
        'verify_url', 'verify_method', 'verify_ok_field', 'verify_headers', 'check_every'];
    oauth2_only constant text[] := ARRAY['grant', 'client_id', 'client_secret', 'auth_url', 'token_url',
        'refresh_url', 'revoke_url', 'scopes', 'client_auth', 'token_lifetime', 'extra_params',
        'body_format', 'token_path', 'expires_in_unit', 'scope_separator', 'pkce', 'refresh_every',
        'required_scopes', 'refresh_scopes', 'never_expires', 'token_scheme', 'token_header', 'field_names', 'token_path_exchange_only', 'issued_at_unit',
        'error_field', 'error_description_field', 'reauth_errors'];
    -- the token answer's fields field_names may find under another name
    renamable constant text[] := ARRAY['access_token', 'refresh_token', 'expires_in', 'refresh_token_expires_in',
        'scope', 'token_type', 'id_token', 'issued_at'];
    choices constant jsonb := '{"client_auth": ["basic", "post"], "visibility": ["private", "shared"],
        "body_format": ["form", "json"], "expires_in_unit": ["seconds", "milliseconds"],
        "scope_separator": [" ", ","], "issued_at_unit": ["seconds", "milliseconds"],
        "verify_method": ["GET", "POST"]}';
    k text;
    g text;
    problem text;
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
        IF k IN ('scopes', 'required_scopes', 'reauth_errors') THEN
            IF jsonb_typeof(settings->k) <> 'array'
               OR EXISTS (SELECT FROM jsonb_array_elements(settings->k) e WHERE jsonb_typeof(e) <> 'string') THEN
                RAISE EXCEPTION 'setting "%" must be an array of strings', k USING ERRCODE = 'invalid_parameter_value';
            END IF;
        ELSIF k IN ('params', 'field_names', 'verify_headers') THEN
            IF jsonb_typeof(settings->k) <> 'object'
               OR EXISTS (SELECT FROM jsonb_each(settings->k) e WHERE jsonb_typeof(e.value) <> 'string' OR e.value #>> '{}' = '') THEN
                RAISE EXCEPTION 'setting "%" must be an object of non-empty strings', k USING ERRCODE = 'invalid_parameter_value';
            END IF;
            IF k = 'verify_headers' AND EXISTS (SELECT FROM jsonb_each_text(settings->k) h
                                                 WHERE NOT tokenvault._header_token_safe(h.key) OR h.value ~ '[\r\n]') THEN
                RAISE EXCEPTION 'setting "verify_headers" must map header names to values without line breaks'
                    USING ERRCODE = 'invalid_parameter_value', HINT = 'For example {"Notion-Version": "2022-06-28"}.';
            END IF;
            SELECT e INTO problem FROM jsonb_object_keys(settings->'field_names') e WHERE NOT e = ANY (renamable) LIMIT 1;
            IF problem IS NOT NULL THEN
                RAISE EXCEPTION 'setting "field_names" cannot rename "%"', problem
                    USING ERRCODE = 'invalid_parameter_value',
                          HINT = 'It maps these fields of a token answer to the provider''s names for them: '
                                 || array_to_string(renamable, ', ') || '.';
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
        ELSIF k IN ('token_lifetime', 'refresh_every', 'check_every') THEN
            IF jsonb_typeof(settings->k) <> 'number' OR (settings->>k)::numeric <= 0
               OR (settings->>k)::numeric <> trunc((settings->>k)::numeric) OR (settings->>k)::numeric > 2147483647 THEN
                RAISE EXCEPTION 'setting "%" must be a positive whole number of seconds', k
                    USING ERRCODE = 'invalid_parameter_value';
            END IF;
            IF k = 'check_every' AND (settings->>k)::numeric < 60 THEN
                RAISE EXCEPTION 'setting "check_every" must be at least 60 seconds' USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'A check is a request to the provider with a user''s credential; once a minute is the most often.';
            END IF;
        ELSIF k = 'allowed_hosts' THEN
            IF jsonb_typeof(settings->k) <> 'array' OR jsonb_array_length(settings->k) = 0
               OR EXISTS (SELECT FROM jsonb_array_elements(settings->k) e WHERE jsonb_typeof(e) <> 'string') THEN
                RAISE EXCEPTION 'setting "allowed_hosts" must be a non-empty array of host patterns'
                    USING ERRCODE = 'invalid_parameter_value',
                          HINT = 'For example ["login.salesforce.com", "*.my.salesforce.com"].';
            END IF;
            SELECT format('"%s": %s', e, tokenvault._host_pattern_problem(e)) INTO problem
              FROM jsonb_array_elements_text(settings->k) e WHERE tokenvault._host_pattern_problem(e) IS NOT NULL LIMIT 1;
            IF problem IS NOT NULL THEN
                RAISE EXCEPTION 'allowed_hosts entry %', problem
                    USING ERRCODE = 'invalid_parameter_value',
                          HINT = 'An entry is a host name in lower case, or "*." and one, where "*" stands for exactly one label.';
            END IF;
        ELSIF k IN ('pkce', 'allow_insecure_http', 'refresh_scopes', 'never_expires', 'token_path_exchange_only') THEN
            IF jsonb_typeof(settings->k) <> 'boolean' THEN
                RAISE EXCEPTION 'setting "%" must be true or false', k USING ERRCODE = 'invalid_parameter_value';
            END IF;
        ELSIF jsonb_typeof(settings->k) <> 'string' OR settings->>k = '' THEN
            RAISE EXCEPTION 'setting "%" must be a non-empty string', k USING ERRCODE = 'invalid_parameter_value';
        ELSIF k IN ('error_field', 'error_description_field')
              AND substring(settings->>k FROM '[^.]*$') IN ('access_token', 'refresh_token', 'id_token', 'password', 'api_key') THEN
            RAISE EXCEPTION 'setting "%" cannot name a token field', k USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'An error''s code and message are quoted in last_error and in events; a token must not be.';
        ELSIF k IN ('token_scheme', 'token_header') AND NOT tokenvault._header_token_safe(settings->>k) THEN
            RAISE EXCEPTION 'setting "%" is not an HTTP token', k USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'token_scheme is the Authorization header''s scheme whatever token_type the provider sends ("Bearer"); '
                         'token_header the header an API takes the token in instead ("X-Shopify-Access-Token").';
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
    FOR k IN SELECT unnest(ARRAY['auth_url', 'token_url', 'refresh_url', 'revoke_url', 'verify_url']) LOOP
        IF settings ? k AND settings->>k !~* '^https?://[^/?#[:space:]]+' THEN
            RAISE EXCEPTION 'setting "%" must be an http or https URL', k
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'A URL may name the auth''s own fields in braces, as in https://{subdomain}.example.com/token '
                             'with "allowed_hosts": ["*.example.com"].';
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

CREATE OR REPLACE FUNCTION create_client(name text, service text, type text, settings jsonb DEFAULT '{}')
    RETURNS uuid
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    s jsonb;
    t tokenvault.clients;
    new_id uuid := gen_random_uuid();
BEGIN
    PERFORM tokenvault._admit_admin();
    PERFORM tokenvault._refuse_null(name IS NULL, 'name'::text), tokenvault._refuse_null(service IS NULL, 'service'::text),
            tokenvault._refuse_null(type IS NULL, 'type'::text);
    IF type NOT IN ('oauth2', 'basic', 'api_key', 'noauth') THEN
        RAISE EXCEPTION 'unknown client type "%"', type
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use oauth2, basic, api_key or noauth.';
    END IF;
    IF name = '' OR service = '' THEN
        RAISE EXCEPTION 'name and service must not be empty' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF jsonb_typeof(settings) = 'object' AND settings ? 'provider' THEN
        settings := tokenvault._provider_settings(settings->>'provider', type, settings);
    ELSIF jsonb_typeof(settings) = 'object' AND settings ? 'params' THEN
        RAISE EXCEPTION 'setting "params" fills a provider''s URLs: it needs "provider"' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    s := tokenvault._client_settings(type, settings, true);
    t := tokenvault._client_quirks(s, t);
    INSERT INTO tokenvault.clients (id, name, service, type, grant_type, client_id, auth_url, token_url,
            refresh_url, revoke_url, scopes, client_auth, token_lifetime, extra_params,
            api_key_header, api_key_prefix, secret, owner, visibility,
            body_format, token_path, expires_in_unit, scope_separator, pkce, refresh_every, allowed_hosts,
            allow_insecure_http, provider, provider_params, required_scopes, refresh_scopes, never_expires, token_scheme, token_header,
            token_path_exchange_only,
            field_names, issued_at_unit, error_field, error_description_field, reauth_errors,
            verify_url, verify_method, verify_ok_field, verify_headers, check_every)
    VALUES (new_id, name, service, type, coalesce(s->>'grant', 'none'), s->>'client_id',
            s->>'auth_url', s->>'token_url', s->>'refresh_url', s->>'revoke_url',
            coalesce(ARRAY(SELECT jsonb_array_elements_text(s->'scopes')), '{}'),
            coalesce(s->>'client_auth', 'basic'), (s->>'token_lifetime')::integer,
            coalesce(s->'extra_params', '{}'), s->>'api_key_header', s->>'api_key_prefix',
            CASE WHEN s ? 'client_secret'
                 THEN tokenvault._seal_client(jsonb_build_object('client_secret', s->'client_secret'), new_id) END,
            tokenvault._caller(), coalesce(s->>'visibility', 'shared'),
            t.body_format, t.token_path, t.expires_in_unit, t.scope_separator, t.pkce, t.refresh_every,
            CASE WHEN s ? 'allowed_hosts' THEN ARRAY(SELECT jsonb_array_elements_text(s->'allowed_hosts')) END,
            coalesce((s->>'allow_insecure_http')::boolean, false), s->>'provider', s->'params',
            t.required_scopes, t.refresh_scopes, t.never_expires, t.token_scheme, t.token_header, t.token_path_exchange_only,
            t.field_names, t.issued_at_unit, t.error_field,
            t.error_description_field, t.reauth_errors, t.verify_url, t.verify_method, t.verify_ok_field, t.verify_headers, t.check_every)
    RETURNING * INTO t;
    PERFORM tokenvault._check_client_urls(t);
    RETURN new_id;
END
$$;

CREATE OR REPLACE FUNCTION _client_must_exist(client_id uuid) RETURNS tokenvault.clients
    LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    c tokenvault.clients;
BEGIN
    PERFORM tokenvault._admit_app();
    PERFORM tokenvault._refuse_null(client_id IS NULL, 'client id'::text);
    SELECT * INTO c FROM tokenvault.clients t WHERE t.id = _client_must_exist.client_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'client % does not exist', client_id
            USING ERRCODE = 'undefined_object',
                  HINT = 'List clients with: SELECT id, name, service FROM tokenvault.clients;';
    END IF;
    RETURN c;
END
$$;

CREATE OR REPLACE FUNCTION update_client(client_id uuid, settings jsonb) RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    c tokenvault.clients := tokenvault._client_must_exist(client_id);
    s jsonb;
    q tokenvault.clients;
    n tokenvault.clients;
    cleared text[];
BEGIN
    PERFORM tokenvault._admit_admin(), tokenvault._require_client_access(c.id, NULL::uuid);
    PERFORM tokenvault._refuse_null(settings IS NULL, 'settings'::text);
    -- a catalogue row (again, or another): its settings replace the
    -- client's, and those it no longer holds are cleared
    IF jsonb_typeof(settings) = 'object' AND settings ? 'provider' THEN
        settings := tokenvault._provider_settings(settings->>'provider', c.type,
                        settings || jsonb_build_object('params', coalesce(settings->'params', c.provider_params, '{}')));
        settings := (SELECT jsonb_object_agg(k, 'null'::jsonb) FROM unnest(tokenvault._provider_managed()) k
                      WHERE NOT settings ? k) || settings;
    ELSIF jsonb_typeof(settings) = 'object' AND settings ? 'params' THEN
        RAISE EXCEPTION 'setting "params" fills a provider''s URLs: give it with "provider"' USING ERRCODE = 'invalid_parameter_value';
    END IF;
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
        required_scopes = q.required_scopes, refresh_scopes = q.refresh_scopes, never_expires = q.never_expires,
        token_scheme = q.token_scheme, token_header = q.token_header, verify_headers = q.verify_headers,
        token_path_exchange_only = q.token_path_exchange_only,
        field_names = q.field_names, issued_at_unit = q.issued_at_unit, error_field = q.error_field,
        error_description_field = q.error_description_field, reauth_errors = q.reauth_errors,
        verify_url = q.verify_url, verify_method = q.verify_method, verify_ok_field = q.verify_ok_field,
        check_every = q.check_every,
        provider = CASE WHEN s ? 'provider' THEN s->>'provider' ELSE t.provider END,
        provider_params = CASE WHEN s ? 'provider' THEN s->'params' ELSE t.provider_params END,
        allowed_hosts  = CASE WHEN s ? 'allowed_hosts' THEN ARRAY(SELECT jsonb_array_elements_text(s->'allowed_hosts'))
                              WHEN 'allowed_hosts' = ANY (cleared) THEN NULL ELSE t.allowed_hosts END,
        allow_insecure_http = CASE WHEN 'allow_insecure_http' = ANY (cleared) THEN false
                                   ELSE coalesce((s->>'allow_insecure_http')::boolean, t.allow_insecure_http) END,
        updated_at     = now()
     WHERE t.id = c.id
    RETURNING t.* INTO n;
    PERFORM tokenvault._check_client_urls(n);
    PERFORM tokenvault._check_url_move(c, n, s ? 'client_secret');
END
$$;

CREATE FUNCTION _url_origin(url text) RETURNS text
    LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT lower(m[1]) || '://' || lower(m[2]) || ':'
           || coalesce(nullif(m[3], ''), CASE lower(m[1]) WHEN 'https' THEN '443' ELSE '80' END)
      FROM regexp_match(url, '^([a-z][a-z0-9+.-]*)://(?:[^/?#@]*@)?(\[[^]]*\]|[^:/?#]*)(?::([^/?#]*))?', 'i') m
$$;

CREATE FUNCTION _check_url_move(old tokenvault.clients, new tokenvault.clients, secret_given boolean) RETURNS void
    LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    known text[] := ARRAY(SELECT tokenvault._url_origin(u)
                            FROM unnest(ARRAY[old.token_url, old.refresh_url, old.revoke_url, old.verify_url]) u
                           WHERE u IS NOT NULL);
    moved text;
    changed jsonb;
BEGIN
    SELECT x.setting INTO moved
      FROM (VALUES (1, 'token_url', new.token_url), (2, 'refresh_url', new.refresh_url),
                   (3, 'revoke_url', new.revoke_url), (4, 'verify_url', new.verify_url)) x(n, setting, url)
     WHERE x.url IS NOT NULL AND NOT tokenvault._url_origin(x.url) = ANY (known)
     ORDER BY x.n LIMIT 1;
    -- a host allowed for templates that was neither allowed nor used before
    -- is a new place for the secret too
    IF moved IS NULL AND EXISTS (
            SELECT FROM unnest(new.allowed_hosts) h
             WHERE NOT h = ANY (coalesce(old.allowed_hosts, '{}'))
               AND NOT ('https://' || h || ':443') = ANY (known) AND NOT ('http://' || h || ':80') = ANY (known)) THEN
        moved := 'allowed_hosts';
    END IF;
    -- The revoke and verify URLs receive users' access tokens (and API keys,
    -- basic pairs), which are good without the client secret: no secret
    -- given proves anything there.  With users' credentials at stake, only
    -- a superuser sends them to a new place.
    IF (SELECT x.setting FROM (VALUES ('revoke_url', new.revoke_url), ('verify_url', new.verify_url)) x(setting, url)
         WHERE x.url IS NOT NULL AND (NOT tokenvault._url_origin(x.url) = ANY (known)
                                      OR (x.url LIKE '%{%' AND moved = 'allowed_hosts')) LIMIT 1) IS NOT NULL
       AND EXISTS (SELECT FROM tokenvault.auths a WHERE a.client_id = old.id)
       AND NOT (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = tokenvault._caller()) THEN
        RAISE EXCEPTION 'client % has auths: its revoke and verify URLs cannot go to another host', old.id
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'They receive users'' access tokens and keys, which are good without the client secret. '
                         'Create a new client for the new host (its users authorize again), or have a superuser make the change.';
    END IF;
    IF moved IS NOT NULL AND old.secret IS NULL THEN
        RAISE EXCEPTION 'the % of client % cannot move to another host: the client has no secret', moved, old.id
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'Its users'' refresh tokens would go there, and they are good without a secret. '
                         'Create a new client for the new host, and have its users authorize again.';
    ELSIF moved IS NOT NULL AND NOT secret_given THEN
        RAISE EXCEPTION 'moving the % of client % to another host needs the client secret', moved, old.id
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'Give "client_secret" again in the same call: the new host receives it, and the users'' tokens.';
    END IF;
    SELECT jsonb_object_agg(x.setting, jsonb_build_object('old', x.was, 'new', x.now)) INTO changed
      FROM (VALUES ('auth_url', old.auth_url, new.auth_url), ('token_url', old.token_url, new.token_url),
                   ('refresh_url', old.refresh_url, new.refresh_url), ('revoke_url', old.revoke_url, new.revoke_url),
                   ('verify_url', old.verify_url, new.verify_url),
                   ('allowed_hosts', array_to_string(old.allowed_hosts, ' '), array_to_string(new.allowed_hosts, ' '))
           ) x(setting, was, now)
     WHERE x.was IS DISTINCT FROM x.now;
    IF changed IS NOT NULL THEN
        PERFORM tokenvault._publish('client.urls_changed'::text, NULL::uuid, jsonb_build_object(
            'event', 'client.urls_changed',
            'client_id', new.id,
            'client_name', left(new.name, 400),
            'service_name', left(new.service, 400),
            'urls', changed,
            'new_host', moved IS NOT NULL,
            'by', tokenvault._caller()), new.id);
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION delete_client(client_id uuid, force boolean DEFAULT false) RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    c tokenvault.clients := tokenvault._client_must_exist(client_id);
    n bigint;
    slots text;
BEGIN
    PERFORM tokenvault._admit_admin(), tokenvault._require_client_access(c.id, NULL::uuid);
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

CREATE OR REPLACE FUNCTION _client_quirks(s jsonb, t tokenvault.clients) RETURNS tokenvault.clients
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
    t.required_scopes := CASE WHEN 'required_scopes' = ANY (cleared) THEN '{}'
                              WHEN jsonb_typeof(s->'required_scopes') = 'array' THEN ARRAY(SELECT jsonb_array_elements_text(s->'required_scopes'))
                              ELSE coalesce(t.required_scopes, '{}') END;
    t.refresh_scopes  := CASE WHEN 'refresh_scopes' = ANY (cleared) THEN false ELSE coalesce((s->>'refresh_scopes')::boolean, t.refresh_scopes, false) END;
    t.never_expires   := CASE WHEN 'never_expires' = ANY (cleared) THEN false ELSE coalesce((s->>'never_expires')::boolean, t.never_expires, false) END;
    t.token_scheme    := CASE WHEN 'token_scheme' = ANY (cleared) THEN NULL ELSE coalesce(s->>'token_scheme', t.token_scheme) END;
    t.token_path_exchange_only := CASE WHEN 'token_path_exchange_only' = ANY (cleared) THEN false
                                       ELSE coalesce((s->>'token_path_exchange_only')::boolean, t.token_path_exchange_only, false) END;
    t.token_header    := CASE WHEN 'token_header' = ANY (cleared) THEN NULL ELSE coalesce(s->>'token_header', t.token_header) END;
    t.verify_headers  := CASE WHEN 'verify_headers' = ANY (cleared) THEN NULL ELSE coalesce(s->'verify_headers', t.verify_headers) END;
    t.field_names     := CASE WHEN 'field_names' = ANY (cleared) THEN NULL ELSE coalesce(s->'field_names', t.field_names) END;
    t.issued_at_unit  := CASE WHEN 'issued_at_unit' = ANY (cleared) THEN NULL ELSE coalesce(s->>'issued_at_unit', t.issued_at_unit) END;
    t.error_field     := CASE WHEN 'error_field' = ANY (cleared) THEN NULL ELSE coalesce(s->>'error_field', t.error_field) END;
    t.error_description_field := CASE WHEN 'error_description_field' = ANY (cleared) THEN NULL
                                      ELSE coalesce(s->>'error_description_field', t.error_description_field) END;
    t.reauth_errors   := CASE WHEN 'reauth_errors' = ANY (cleared) THEN NULL
                              WHEN jsonb_typeof(s->'reauth_errors') = 'array' THEN ARRAY(SELECT jsonb_array_elements_text(s->'reauth_errors'))
                              ELSE t.reauth_errors END;
    t.verify_url      := CASE WHEN 'verify_url' = ANY (cleared) THEN NULL ELSE coalesce(s->>'verify_url', t.verify_url) END;
    t.verify_method   := CASE WHEN 'verify_method' = ANY (cleared) THEN 'GET' ELSE coalesce(s->>'verify_method', t.verify_method, 'GET') END;
    t.verify_ok_field := CASE WHEN 'verify_ok_field' = ANY (cleared) THEN NULL ELSE coalesce(s->>'verify_ok_field', t.verify_ok_field) END;
    t.check_every     := CASE WHEN 'check_every' = ANY (cleared) THEN NULL ELSE coalesce((s->>'check_every')::integer, t.check_every) END;
    RETURN t;
END
$$;

CREATE FUNCTION _header_token_safe(value text) RETURNS boolean
    LANGUAGE sql IMMUTABLE STRICT SET search_path = pg_catalog, pg_temp AS $$
    SELECT value ~ '^[-A-Za-z0-9!#$%&''*+.^_`|~]{1,64}$'
$$;

CREATE OR REPLACE FUNCTION _auth_fields(c tokenvault.clients, data jsonb, scopes text[]) RETURNS jsonb
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
    IF c.never_expires THEN
        expires_at := NULL;
    ELSIF expires_at IS NULL AND c.type = 'oauth2' AND data ? 'access_token' AND c.token_lifetime IS NOT NULL THEN
        expires_at := now() + c.token_lifetime * interval '1 second';
    END IF;
    refresh_expires_at := coalesce(
        tokenvault._json_timestamp(data->'refresh_expires_at', 'refresh_expires_at'),
        now() + tokenvault._json_seconds(data->'refresh_token_expires_in', 'refresh_token_expires_in'));
    scope_list := coalesce(scopes,
                           regexp_split_to_array(nullif(btrim(data->>'scope'), ''), '[\s,]+'),
                           c.scopes);

    secret := data - plain_keys;
    -- Fields that fill the client's URL templates are judged as they are
    -- stored, whoever wrote them: an application, or a provider's token
    -- response (a refresh's then fails as a token that cannot be stored).
    -- The request judges them again, against the settings of its moment.
    IF c.allowed_hosts IS NOT NULL OR concat(c.auth_url, c.token_url, c.refresh_url, c.revoke_url, c.verify_url) LIKE '%{%' THEN
        k := (tokenvault._missing_url_fields(c, secret))[1];
        IF k IS NOT NULL THEN
            RAISE EXCEPTION 'an auth of client "%" needs the field "%"', c.name, k
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = format('The client''s URLs name {%s}: give it with the auth''s data, as in {"%s": "…"}.', k, k);
        END IF;
        k := tokenvault._client_url_problem(c, secret);
        IF k IS NOT NULL THEN
            RAISE EXCEPTION '%', k
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'A field that fills a URL of the client may only make a host its allowed_hosts lists.';
        END IF;
    END IF;
    IF c.type = 'oauth2' AND NOT tokenvault._header_token_safe(coalesce(c.token_scheme, data->>'token_type', 'Bearer')) THEN
        RAISE EXCEPTION 'token_type is not an HTTP authentication scheme'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'It becomes the scheme of the Authorization header: 1 to 64 letters, digits or !#$%&''*+.^_`|~- .';
    END IF;
    RETURN jsonb_build_object(
        'secret', secret,
        'token_type', CASE WHEN c.type = 'oauth2' THEN coalesce(c.token_scheme, data->>'token_type', 'Bearer') END,
        'expires_at', expires_at,
        'refresh_expires_at', refresh_expires_at,
        'scopes', to_jsonb(scope_list));
END
$$;

CREATE OR REPLACE FUNCTION create_auth(user_id uuid, client_id uuid, name text DEFAULT NULL,
                                       data jsonb DEFAULT '{}', scopes text[] DEFAULT NULL) RETURNS uuid
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    c tokenvault.clients := tokenvault._client_must_exist(client_id);
    f jsonb;
    new_id uuid := gen_random_uuid();
BEGIN
    PERFORM tokenvault._admit_app();
    PERFORM tokenvault._user_must_exist(user_id);
    PERFORM tokenvault._require_client_access(c.id, NULL::uuid);
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

CREATE OR REPLACE FUNCTION _auth_must_exist(auth_id uuid) RETURNS tokenvault.auths
    LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    a tokenvault.auths;
BEGIN
    PERFORM tokenvault._admit_app();
    PERFORM tokenvault._refuse_null(auth_id IS NULL, 'auth id'::text);
    SELECT * INTO a FROM tokenvault.auths WHERE id = auth_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'auth % does not exist', auth_id
            USING ERRCODE = 'undefined_object',
                  HINT = 'List a user''s auths with tokenvault.user_auths().';
    END IF;
    PERFORM tokenvault._require_client_access(a.client_id, a.id);
    RETURN a;
END
$$;

CREATE OR REPLACE FUNCTION update_auth(auth_id uuid, name text DEFAULT NULL, data jsonb DEFAULT NULL) RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    a tokenvault.auths := tokenvault._auth_must_exist(auth_id);
    c tokenvault.clients := tokenvault._client_must_exist(a.client_id);
    f jsonb;
BEGIN
    PERFORM tokenvault._admit_app();
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

CREATE OR REPLACE FUNCTION delete_auth(auth_id uuid, revoke boolean DEFAULT false, force boolean DEFAULT false) RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    a tokenvault.auths := tokenvault._auth_must_exist(auth_id);
    c tokenvault.clients;
    cred jsonb;
    v tokenvault.verdict;
BEGIN
    PERFORM tokenvault._admit_app();
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

CREATE OR REPLACE FUNCTION credentials(auth_id uuid) RETURNS jsonb
    LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    a tokenvault.auths := tokenvault._auth_must_exist(auth_id);
BEGIN
    PERFORM tokenvault._admit_app();
    RETURN tokenvault._open_auth(a.secret, a.id)
        || jsonb_strip_nulls(jsonb_build_object(
               'token_type', a.token_type,
               'expires_at', a.expires_at,
               'refresh_expires_at', a.refresh_expires_at,
               'scope', nullif(array_to_string(a.scopes, ' '), '')));
END
$$;

CREATE OR REPLACE FUNCTION http_headers(auth_id uuid) RETURNS jsonb
    LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    a tokenvault.auths := tokenvault._auth_must_exist(auth_id);
    c tokenvault.clients := tokenvault._client_must_exist(a.client_id);
BEGIN
    PERFORM tokenvault._admit_app();
    RETURN tokenvault._auth_headers(a, c, CASE WHEN c.type IN ('oauth2', 'api_key') THEN tokenvault.access_token(a.id) END,
                                    CASE WHEN c.type = 'basic' THEN tokenvault._open_auth(a.secret, a.id) END);
END
$$;

CREATE FUNCTION _auth_headers(a tokenvault.auths, c tokenvault.clients, token text, cred jsonb) RETURNS jsonb
    LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    CASE c.type
        WHEN 'oauth2' THEN
            -- one stored before 0.7.0 checked no token type
            IF NOT tokenvault._header_token_safe(a.token_type) THEN
                RAISE EXCEPTION 'auth % has a token type that is not an HTTP authentication scheme', a.id
                    USING ERRCODE = 'invalid_parameter_value',
                          HINT = 'Import the token again with tokenvault.update_auth(), or refresh it.';
            END IF;
            -- an API that takes the token alone in a header of its own
            IF c.token_header IS NOT NULL THEN
                RETURN jsonb_build_object(c.token_header, token);
            END IF;
            -- RFC 6750 scheme names are case-insensitive, but many APIs insist on "Bearer".
            RETURN jsonb_build_object('Authorization',
                CASE WHEN lower(a.token_type) = 'bearer' THEN 'Bearer' ELSE a.token_type END || ' ' || token);
        WHEN 'api_key' THEN
            RETURN jsonb_build_object(coalesce(c.api_key_header, 'X-API-Key'), coalesce(c.api_key_prefix || ' ', '') || token);
        WHEN 'basic' THEN
            RETURN jsonb_build_object('Authorization', 'Basic ' ||
                translate(encode(convert_to((cred->>'username') || ':' || (cred->>'password'), 'UTF8'), 'base64'), E'\n', ''));
        ELSE
            RETURN '{}'::jsonb;
    END CASE;
END
$$;

CREATE FUNCTION address_class(address inet) RETURNS text
    LANGUAGE c IMMUTABLE STRICT AS 'MODULE_PATHNAME', 'tv_address_class_sql';

CREATE FUNCTION host_policy(host text, address inet) RETURNS text
    LANGUAGE c STABLE STRICT AS 'MODULE_PATHNAME', 'tv_host_policy_sql';

CREATE OR REPLACE FUNCTION _client_config(c tokenvault.clients, credential jsonb DEFAULT NULL) RETURNS jsonb
    LANGUAGE sql STABLE AS $$
    SELECT pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
        'token_url', c.token_url, 'refresh_url', c.refresh_url, 'revoke_url', c.revoke_url, 'client_id', c.client_id,
        'client_secret', CASE WHEN c.secret IS NOT NULL
                              THEN tokenvault._open_client(c.secret, c.id)
                                   OPERATOR(pg_catalog.->>) 'client_secret' END,
        'client_auth', c.client_auth, 'body_format', c.body_format, 'token_path', c.token_path,
        'extra_params', c.extra_params, 'template_values', credential, 'allowed_hosts', c.allowed_hosts,
        'allow_insecure_http', c.allow_insecure_http, 'error_field', c.error_field,
        'error_description_field', c.error_description_field, 'reauth_errors', c.reauth_errors,
        'access_token_field', c.field_names OPERATOR(pg_catalog.->>) 'access_token',
        -- what the answer's tokens are called there, never to be quoted
        -- (no subquery: it would keep this function from being inlined)
        'token_field_names', CASE WHEN c.field_names IS NOT NULL THEN pg_catalog.jsonb_build_array(
            c.field_names OPERATOR(pg_catalog.->) 'access_token', c.field_names OPERATOR(pg_catalog.->) 'refresh_token',
            c.field_names OPERATOR(pg_catalog.->) 'id_token') END))
$$;

CREATE OR REPLACE FUNCTION _raise_refusal(c tokenvault.clients, v tokenvault.verdict, what text DEFAULT 'token request') RETURNS void
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
                      HINT = CASE WHEN v.message LIKE 'refused by the host policy:%'
                                  THEN 'A loopback, private or link-local host is reached only when tokenvault.allowed_internal_hosts '
                                       '(postgresql.conf, a superuser''s) lists its name or a network holding its address.'
                                  ELSE 'Check the client''s settings (tokenvault.update_client) against the provider''s documentation.' END;
    END CASE;
END
$$;

CREATE OR REPLACE FUNCTION _normalize_token(c tokenvault.clients, t jsonb) RETURNS jsonb
    LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    k text;
    n numeric;
    issued numeric;
BEGIN
    -- fields the provider names otherwise (field_names: ours -> its)
    IF c.field_names IS NOT NULL THEN
        FOR k IN SELECT jsonb_object_keys(c.field_names) LOOP
            IF t ? (c.field_names->>k) AND c.field_names->>k <> k THEN
                t := (t - (c.field_names->>k)) || jsonb_build_object(k, t->(c.field_names->>k));
            END IF;
        END LOOP;
    END IF;
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
    IF c.never_expires THEN
        t := t - 'expires_in' - 'expires_at';
    -- a lifetime that counts from the answer's issued_at (an epoch time), not from now
    ELSIF c.issued_at_unit IS NOT NULL AND t->>'issued_at' ~ '^\s*[0-9]+(\.[0-9]+)?\s*$' THEN
        issued := (t->>'issued_at')::numeric / CASE c.issued_at_unit WHEN 'milliseconds' THEN 1000 ELSE 1 END;
        n := coalesce((t->>'expires_in')::numeric, c.token_lifetime);
        -- an issued_at more than a day off this server's clock is not believed
        IF n IS NOT NULL AND abs(issued - extract(epoch FROM now())) < 86400 THEN
            t := jsonb_set(t, '{expires_in}',
                           to_jsonb(least(3153600000, greatest(1, round(issued + n - extract(epoch FROM now()))))));
        END IF;
    END IF;
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

CREATE FUNCTION _redirect_uri_safe(redirect_uri text) RETURNS boolean
    LANGUAGE sql IMMUTABLE STRICT SET search_path = pg_catalog, pg_temp AS $$
    SELECT redirect_uri ~* '^https://[^/?#@[:space:]]'
        OR redirect_uri ~* ('^http://(localhost|127(\.' || octet || '){3}|\[::1\])(:[0-9]{1,5})?([/?#][^[:space:]]*)?$')
      FROM (VALUES ('(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])')) o (octet)
$$;

CREATE FUNCTION authorize_url(client_id uuid, user_id uuid, redirect_uri text, name text DEFAULT NULL,
                              scopes text[] DEFAULT NULL, auth_id uuid DEFAULT NULL, fields jsonb DEFAULT NULL) RETURNS text
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    c tokenvault.clients := tokenvault._client_must_exist(client_id);
    a tokenvault.auths;
    st text := tokenvault._random_token(24);
    verifier text;
    params jsonb;
    url text;
BEGIN
    PERFORM tokenvault._admit_app();
    PERFORM tokenvault._user_must_exist(user_id), tokenvault._refuse_null(redirect_uri IS NULL, 'redirect_uri'::text);
    IF c.grant_type <> 'authorization_code' THEN
        RAISE EXCEPTION 'client % does not use the authorization_code grant', c.id
            USING ERRCODE = 'wrong_object_type',
                  HINT = 'Create auths of client_credentials and password clients with tokenvault.create_auth().';
    END IF;
    IF redirect_uri !~* '^[a-z][a-z0-9+.-]*://[^[:space:]]+$' THEN
        RAISE EXCEPTION 'redirect_uri must be an absolute URL' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF NOT tokenvault._redirect_uri_safe(redirect_uri) THEN
        RAISE EXCEPTION 'redirect_uri must use https, or http to a loopback host'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'The provider sends the authorization code to the redirect_uri: use https, or http only '
                         'to 127.0.0.0/8, [::1] or localhost (an app on the user''s own machine, RFC 8252).';
    END IF;
    PERFORM tokenvault._require_client_access(c.id, NULL::uuid);
    IF auth_id IS NOT NULL THEN
        a := tokenvault._auth_must_exist(auth_id);
        IF a.client_id <> c.id OR a.user_id <> authorize_url.user_id THEN
            RAISE EXCEPTION 'auth % belongs to another user or client', auth_id
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
    END IF;
    IF fields IS NOT NULL AND (jsonb_typeof(fields) <> 'object'
       OR EXISTS (SELECT FROM jsonb_each(fields) f WHERE jsonb_typeof(f.value) <> 'string')) THEN
        RAISE EXCEPTION 'fields must be a JSON object of strings' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- an auth being authorized again keeps its fields; those given win
    IF a.id IS NOT NULL THEN
        fields := (SELECT jsonb_object_agg(f.key, f.value) FROM jsonb_each(tokenvault._open_auth(a.secret, a.id)) f
                    WHERE f.key = ANY (tokenvault._missing_url_fields(c, NULL))) || coalesce(fields, '{}');
    END IF;
    fields := (SELECT jsonb_object_agg(f.key, f.value) FROM jsonb_each(fields) f
                WHERE f.key = ANY (tokenvault._missing_url_fields(c, NULL)));
    url := tokenvault._url_filled('auth_url', c, fields);
    scopes := coalesce(scopes, a.scopes, c.scopes);
    -- scopes without which the provider issues no refresh token (offline_access)
    scopes := scopes || ARRAY(SELECT r FROM unnest(c.required_scopes) r WHERE NOT r = ANY (scopes));
    IF c.pkce THEN
        verifier := tokenvault._random_token(48);
    END IF;
    DELETE FROM tokenvault.auth_states s WHERE s.expires_at < now();
    INSERT INTO tokenvault.auth_states (state, client_id, user_id, auth_id, name, scopes, redirect_uri,
                                        verifier, fields, expires_at)
    VALUES (st, c.id, user_id, auth_id, name, scopes, redirect_uri,
            tokenvault._seal_state(verifier, st), fields, now() + interval '10 minutes');

    params := jsonb_strip_nulls(jsonb_build_object(
        'response_type', 'code', 'client_id', c.client_id, 'redirect_uri', redirect_uri,
        'scope', nullif(array_to_string(scopes, c.scope_separator), ''), 'state', st,
        'code_challenge', CASE WHEN c.pkce THEN
            rtrim(translate(encode(sha256(convert_to(verifier, 'UTF8')), 'base64'), E'+/\n', '-_'), '=') END,
        'code_challenge_method', CASE WHEN c.pkce THEN 'S256' END))
        || coalesce(c.extra_params->'authorize', '{}');
    RETURN url || CASE WHEN position('?' IN url) > 0 THEN '&' ELSE '?' END ||
        (SELECT string_agg(key || '=' || tokenvault._form_encode(value), '&' ORDER BY key)
           FROM jsonb_each_text(params));
END
$$;

CREATE FUNCTION _url_filled(setting text, c tokenvault.clients, fields jsonb) RETURNS text
    LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    url text := CASE setting WHEN 'auth_url' THEN c.auth_url WHEN 'verify_url' THEN c.verify_url END;
    missing text;
BEGIN
    IF setting = 'auth_url' AND url NOT LIKE '%{%' THEN
        RETURN url;
    END IF;
    SELECT m INTO missing FROM unnest(tokenvault._missing_url_fields(c, fields)) m
     WHERE position('{' || m || '}' IN url) > 0 LIMIT 1;
    IF missing IS NOT NULL THEN
        RAISE EXCEPTION 'client "%" needs the field "%" for its %', c.name, missing, setting
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = CASE setting WHEN 'auth_url' THEN format('Give it to authorize_url in "fields", as in {"%s": "…"}.', missing)
                                      ELSE format('Give the auth the field with tokenvault.update_auth(), as in {"%s": "…"}.', missing) END;
    END IF;
    RETURN tokenvault._url_fill(setting, url, c.allowed_hosts, fields);
END
$$;

CREATE FUNCTION _url_fill(setting text, url text, allowed_hosts text[], fields jsonb) RETURNS text
    LANGUAGE c IMMUTABLE AS 'MODULE_PATHNAME', 'tv_url_fill_sql';

CREATE FUNCTION _consume_state(state text, made_by xid) RETURNS boolean
    LANGUAGE c STRICT VOLATILE AS 'MODULE_PATHNAME', 'tv_consume_state';

CREATE OR REPLACE FUNCTION complete_authorization(state text, code text) RETURNS uuid
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r record;
    s tokenvault.auth_states;
    c tokenvault.clients;
    t jsonb;
    taken boolean := false;
    new_id uuid;
BEGIN
    PERFORM tokenvault._admit_app();
    PERFORM tokenvault._refuse_null(state IS NULL, 'state'::text), tokenvault._refuse_null(code IS NULL, 'code'::text);
    SELECT x AS state_row, x.xmin AS made_by INTO r
      FROM tokenvault.auth_states x WHERE x.state = complete_authorization.state;
    -- single use: the state is gone for good before the code is exchanged,
    -- whether the exchange succeeds, fails or is rolled back
    IF FOUND THEN
        -- a state of a private client is its owner's to complete (and to use up)
        PERFORM tokenvault._require_client_access((r.state_row).client_id, NULL::uuid);
        taken := tokenvault._consume_state(complete_authorization.state, r.made_by);
    END IF;
    IF NOT taken THEN
        RAISE EXCEPTION 'unknown or already used authorization state'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Start again with tokenvault.authorize_url().';
    END IF;
    s := r.state_row;
    IF s.expires_at < now() THEN
        RAISE EXCEPTION 'authorization state expired at %', s.expires_at
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'A state lasts ten minutes; start again with tokenvault.authorize_url().';
    END IF;
    c := tokenvault._client_must_exist(s.client_id);
    t := tokenvault._fetch_token(c, 'token', jsonb_strip_nulls(jsonb_build_object(
             'grant_type', 'authorization_code', 'code', code, 'redirect_uri', s.redirect_uri,
             'code_verifier', CASE WHEN s.verifier IS NOT NULL
                                   THEN tokenvault._open_state(s.verifier, s.state) END)), s.fields);
    -- the fields the URLs were filled with stay the auth's (a provider's answer may not replace them)
    t := t || coalesce(s.fields, '{}');
    -- the caller's transaction stores the provider's answer: it commits at
    -- least as synchronously as a refresher's would
    PERFORM tokenvault._durable_commit();
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

CREATE OR REPLACE FUNCTION _refresh_plan(auth_id uuid, force boolean, min_validity integer) RETURNS tokenvault.refresh_plan
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
    -- valid for min_validity, or for half its life if that is shorter (as
    -- access_token() asks): no setting has every call send a request
    IF NOT force AND a.expires_at > now() + least(min_validity * interval '1 second',
                                                   (a.expires_at - coalesce(a.last_refreshed_at, a.created_at)) / 2) THEN
        plan.outcome := 'done';
        RETURN plan;
    END IF;
    cred := tokenvault._open_auth(a.secret, a.id);
    IF cred ? 'refresh_token' THEN
        plan.kind := 'refresh';
        plan.params := jsonb_build_object('grant_type', 'refresh_token', 'refresh_token', cred->>'refresh_token');
        -- a provider that wants the scopes again with each refresh (Microsoft)
        IF c.refresh_scopes AND a.scopes <> '{}' THEN
            plan.params := plan.params || jsonb_build_object('scope', array_to_string(a.scopes, c.scope_separator));
        END IF;
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
    IF plan.kind = 'refresh' THEN
        -- Marked before the request goes (the refresher commits this with
        -- tokenvault.synchronous_commit): a refresh token the provider may
        -- rotate is about to be spent.  A mark still there is an answer
        -- that was never stored.
        UPDATE tokenvault.auths SET refresh_sent_at = now(),
               refresh_lost = CASE WHEN a.refresh_sent_at IS NULL THEN a.refresh_lost
                                   ELSE coalesce(a.refresh_lost, 'restart') END
         WHERE id = a.id;
    END IF;
    plan.version := a.version;
    plan.config := tokenvault._client_config(c, cred);
    -- a provider that nests the token in the code exchange's answer only (Slack)
    IF c.token_path_exchange_only THEN
        plan.config := plan.config - 'token_path';
    END IF;
    -- the old token's own fields go; credentials (username, password) and
    -- an unrotated refresh token stay
    plan.keep := cred - ARRAY['access_token', 'id_token'];
    RETURN plan;
END
$$;

CREATE OR REPLACE FUNCTION _refresh_apply(auth_id uuid, version bigint, keep jsonb, v tokenvault.verdict,
                               OUT outcome tokenvault.outcome, OUT message text)
    LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r record;
    a tokenvault.auths;
    c tokenvault.clients;
    t jsonb;
    f jsonb;
    failures integer;
    lost text;
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
        -- a new credential was stored: what was sent and lost spent the old one
        IF a.refresh_sent_at IS NOT NULL OR a.refresh_lost IS NOT NULL THEN
            UPDATE tokenvault.auths SET refresh_sent_at = NULL, refresh_lost = NULL WHERE id = a.id;
        END IF;
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
        lost := a.refresh_lost;
        -- the first refresh since a promotion: the old primary may have
        -- rotated the token in a commit that never came here
        IF lost IS NULL AND coalesce(a.last_refreshed_at, a.created_at) < tokenvault._promoted_at() THEN
            lost := 'promotion';
        END IF;
        IF v.outcome = 'needs_reauth' AND lost IS NOT NULL THEN
            -- not a bare invalid_grant: the provider most likely revoked the
            -- grant because the refresh token whose answer was lost came again
            v.message := tokenvault._lost_refresh_message(lost) || ' (' || v.message || ')';
            PERFORM tokenvault._emit('auth.refresh_lost', a, NULL, v.message);
        END IF;
        UPDATE tokenvault.auths SET
            status = CASE v.outcome WHEN 'needs_reauth' THEN 'needs_reauth'
                                    WHEN 'error' THEN 'error' ELSE status END,
            failure_count = failure_count + 1,
            last_error = v.message,
            refresh_at = CASE WHEN v.outcome <> 'needs_reauth'
                              THEN tokenvault._backoff(failure_count + 1, v.retry_after) END,
            refresh_sent_at = NULL,
            -- no answer at all: the provider may have rotated the token all the same
            refresh_lost = CASE WHEN v.outcome = 'needs_reauth' THEN NULL
                                WHEN v.status = 0 AND a.refresh_sent_at IS NOT NULL
                                THEN coalesce(refresh_lost, 'no answer')
                                ELSE refresh_lost END,
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
        refresh_sent_at = NULL, refresh_lost = NULL,
        refresh_at = tokenvault._schedule(c, f->'secret' ? 'refresh_token', (f->>'expires_at')::timestamptz, now())
     WHERE id = a.id RETURNING * INTO a;
    PERFORM tokenvault._emit(CASE WHEN failures > 0 THEN 'auth.recovered' ELSE 'auth.refreshed' END, a);
END
$$;

CREATE FUNCTION _promoted_at() RETURNS timestamptz
    LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'tv_promoted_at';

CREATE FUNCTION _durable_commit() RETURNS void
    LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'tv_durable_commit';

CREATE FUNCTION _lost_refresh_message(why text) RETURNS text
    LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE why
        WHEN 'failover' THEN 'a refresh was in flight when the server failed over, and its answer was lost with the old primary; the provider refused the refresh token it had replaced'
        WHEN 'promotion' THEN 'the provider refused the refresh token at its first refresh since this server was promoted: with asynchronous replication, a refresh the old primary committed may never have reached this server'
        WHEN 'restart' THEN 'a refresh was in flight when the server or its refresher stopped, and its answer was never stored; the provider refused the refresh token it had replaced'
        ELSE 'a refresh got no answer (the connection failed after the request was sent); the provider refused the refresh token, which that request may have spent' END
$$;

CREATE OR REPLACE FUNCTION _emit(kind text, a tokenvault.auths, expires timestamptz DEFAULT NULL, error text DEFAULT NULL)
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
        || CASE WHEN error IS NULL THEN '{}' ELSE jsonb_build_object('error', left(error, 400)) END,
        a.client_id);
END
$$;

CREATE OR REPLACE FUNCTION _event_kinds() RETURNS text[]
    LANGUAGE sql IMMUTABLE AS $$
    SELECT ARRAY['auth.refreshed', 'auth.refresh_failed', 'auth.needs_reauth', 'auth.recovered',
                 'auth.expiring', 'auth.expired', 'auth.deleted', 'instance.disabled',
                 'client.urls_changed', 'user_tokens.granted', 'user_tokens.revoked', 'auth.refresh_lost',
                 'auth.check_failed']
$$;

CREATE FUNCTION _publish(kind text, auth_id uuid, payload jsonb, client_id uuid DEFAULT NULL) RETURNS void
    LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    event_id bigint;
    delivered timestamptz;
    private_to name := (SELECT c.owner FROM tokenvault.clients c
                         WHERE c.id = _publish.client_id AND c.visibility = 'private');
    -- the webhooks that want it; a private client's events only those its owner added
    hearers uuid[] := ARRAY(
        SELECT w.id FROM tokenvault.webhooks w
         WHERE w.enabled AND (w.kinds IS NULL OR kind = ANY (w.kinds))
           AND (private_to IS NULL
                OR EXISTS (SELECT FROM pg_catalog.pg_roles o, pg_catalog.pg_roles p
                            WHERE o.rolname = w.owner AND p.rolname = private_to
                              AND pg_catalog.pg_has_role(o.oid, p.oid, 'MEMBER'))));
BEGIN
    INSERT INTO tokenvault.events (kind, auth_id, client_id, payload, delivered_at)
    VALUES (kind, auth_id, client_id, payload,
            -- no webhook wants it: delivered by the NOTIFY alone
            CASE WHEN cardinality(hearers) = 0 THEN now() END)
    RETURNING id, delivered_at INTO event_id, delivered;
    IF delivered IS NULL THEN
        -- due now, all of them: which one heads its (webhook, auth) queue
        -- the worker decides (_webhook_claim), under its own snapshot; this
        -- transaction's may be older than a delivery it would wait behind
        INSERT INTO tokenvault.webhook_deliveries (webhook_id, event_id, auth_id)
            SELECT h, event_id, _publish.auth_id FROM unnest(hearers) h;
        PERFORM tokenvault._wake_worker(now());
    END IF;
    PERFORM tokenvault._notify(event_id, kind);
END
$$;

CREATE FUNCTION _notify(event_id bigint, kind text) RETURNS void
    LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    IF pg_catalog.pg_notification_queue_usage()
       <= pg_catalog.current_setting('tokenvault.notify_max_queue_usage')::float8 THEN
        PERFORM pg_catalog.pg_notify('tokenvault', pg_catalog.jsonb_build_object('id', event_id, 'kind', kind)::text);
    END IF;
END
$$;

CREATE FUNCTION _publish_local(kind text, payload jsonb) RETURNS void
    LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    event_id bigint;
BEGIN
    INSERT INTO tokenvault.events (kind, payload, delivered_at)
    VALUES (kind, payload || jsonb_build_object('event', kind), now())
    RETURNING id INTO event_id;
    PERFORM tokenvault._notify(event_id, kind);
END
$$;

CREATE FUNCTION _check_webhook_secret(secret text) RETURNS void
    LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF secret IS NULL THEN
        RAISE EXCEPTION 'webhook secret must not be null'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'Leave it out to have one generated: SELECT * FROM tokenvault.add_webhook(url).';
    ELSIF length(secret) < 32 OR (SELECT count(DISTINCT c) FROM regexp_split_to_table(secret, '') c) < 8 THEN
        RAISE EXCEPTION 'webhook secret must be at least 32 characters, of at least 8 different ones'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Leave it out to have one generated, or make one with: openssl rand -hex 32.';
    END IF;
END
$$;

CREATE FUNCTION _add_webhook(url text, secret text, kinds text[], allow_insecure_http boolean) RETURNS uuid
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    new_id uuid := gen_random_uuid();
BEGIN
    IF url IS NULL OR url !~* '^https?://.' THEN
        RAISE EXCEPTION 'webhook URL must be an http or https URL'
            USING ERRCODE = 'invalid_parameter_value';
    ELSIF url ~* '^http://' AND NOT coalesce(allow_insecure_http, false) THEN
        RAISE EXCEPTION 'plain http is not allowed for webhooks'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use an https URL, or pass allow_insecure_http => true (tests and private networks only).';
    ELSIF kinds IS NOT NULL AND NOT kinds <@ tokenvault._event_kinds() THEN
        RAISE EXCEPTION 'unknown event kind in %', kinds
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Event kinds are ' || array_to_string(tokenvault._event_kinds(), ', ') || '.';
    END IF;
    PERFORM tokenvault._check_webhook_secret(secret);
    INSERT INTO tokenvault.webhooks (id, url, secret, kinds, owner, allow_insecure_http)
    VALUES (new_id, url, tokenvault._seal_webhook(secret, new_id), kinds, tokenvault._caller(),
            coalesce(allow_insecure_http, false));
    RETURN new_id;
END
$$;

CREATE FUNCTION add_webhook(url text, secret text, kinds text[] DEFAULT NULL,
                            allow_insecure_http boolean DEFAULT false) RETURNS uuid
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM tokenvault._admit_admin();
    RETURN tokenvault._add_webhook(url, secret, kinds, allow_insecure_http);
END
$$;

CREATE FUNCTION add_webhook(url text, kinds text[] DEFAULT NULL, OUT webhook_id uuid, OUT secret text)
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM tokenvault._admit_admin();
    secret := tokenvault._random_token(32);
    webhook_id := tokenvault._add_webhook(url, secret, kinds, false);
END
$$;

CREATE FUNCTION _webhook_must_exist(webhook_id uuid) RETURNS tokenvault.webhooks
    LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    w tokenvault.webhooks;
BEGIN
    SELECT * INTO w FROM tokenvault.webhooks WHERE id = webhook_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'webhook % does not exist', webhook_id
            USING ERRCODE = 'undefined_object',
                  HINT = 'List them with: SELECT id, url, kinds FROM tokenvault.webhooks.';
    END IF;
    RETURN w;
END
$$;

CREATE FUNCTION rotate_webhook_secret(webhook_id uuid, new_secret text DEFAULT NULL) RETURNS text
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    w tokenvault.webhooks;
    fresh text := coalesce(new_secret, tokenvault._random_token(32));
BEGIN
    PERFORM tokenvault._admit_admin();
    w := tokenvault._webhook_must_exist(webhook_id);
    IF w.previous_secret IS NOT NULL THEN
        RAISE EXCEPTION 'webhook % is already in a rotation', webhook_id
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Finish it with tokenvault.finish_webhook_rotation() once receivers have the newer secret.';
    END IF;
    PERFORM tokenvault._check_webhook_secret(fresh);
    UPDATE tokenvault.webhooks t SET previous_secret = t.secret, secret = tokenvault._seal_webhook(fresh, t.id)
     WHERE t.id = webhook_id;
    RETURN CASE WHEN new_secret IS NULL THEN fresh END;
END
$$;

CREATE FUNCTION finish_webhook_rotation(webhook_id uuid) RETURNS boolean
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    w tokenvault.webhooks;
BEGIN
    PERFORM tokenvault._admit_admin();
    w := tokenvault._webhook_must_exist(webhook_id);
    UPDATE tokenvault.webhooks t SET previous_secret = NULL WHERE t.id = webhook_id;
    RETURN w.previous_secret IS NOT NULL;
END
$$;

CREATE OR REPLACE FUNCTION delete_webhook(webhook_id uuid) RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM tokenvault._admit_admin();
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

CREATE FUNCTION _webhook_behind(webhook_id uuid, auth_id uuid, id bigint) RETURNS boolean
    LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF auth_id IS NULL THEN
        RETURN EXISTS (SELECT FROM tokenvault.webhook_deliveries p
                        WHERE p.webhook_id = _webhook_behind.webhook_id AND p.auth_id IS NULL
                          AND p.delivered_at IS NULL AND p.id < _webhook_behind.id);
    END IF;
    RETURN EXISTS (SELECT FROM tokenvault.webhook_deliveries p
                    WHERE p.webhook_id = _webhook_behind.webhook_id AND p.auth_id = _webhook_behind.auth_id
                      AND p.delivered_at IS NULL AND p.id < _webhook_behind.id);
END
$$;

CREATE OR REPLACE FUNCTION _webhook_claim(n integer, OUT deliveries tokenvault.delivery[], OUT next_at timestamptz)
    LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    walk constant integer := 4 * greatest(n, 1);
    walked integer;
    behind bigint[];
    heads bigint[];
BEGIN
    SELECT count(*), coalesce(array_agg(x.id) FILTER (WHERE x.behind), '{}'),
           coalesce(array_agg(x.id ORDER BY x.next_attempt_at) FILTER (WHERE NOT x.behind), '{}')
      INTO walked, behind, heads
      FROM (SELECT d.id, d.next_attempt_at, tokenvault._webhook_behind(d.webhook_id, d.auth_id, d.id) AS behind
              FROM tokenvault.webhook_deliveries d
             WHERE d.delivered_at IS NULL AND d.next_attempt_at <= now()
             ORDER BY d.next_attempt_at LIMIT walk) x;
    UPDATE tokenvault.webhook_deliveries SET next_attempt_at = 'infinity' WHERE id = ANY (behind);
    WITH claimed AS (
        UPDATE tokenvault.webhook_deliveries d
           SET attempts = attempts + 1, next_attempt_at = now() + tokenvault._lease()
         WHERE d.id = ANY (heads[1:n])
        RETURNING d.id, d.webhook_id, d.event_id
    )
    -- the body names its delivery and event, so that the signature covers
    -- them: a receiver that keeps the ids it has seen refuses a replay, and
    -- a body cannot pass for another event's
    SELECT coalesce(array_agg(ROW(c.id, w.url, e.kind,
                                  (e.payload || jsonb_build_object('delivery_id', c.id, 'event_id', c.event_id))::text,
                                  tokenvault._open_webhook(w.secret, w.id),
                                  CASE WHEN w.previous_secret IS NOT NULL
                                       THEN tokenvault._open_webhook(w.previous_secret, w.id) END,
                                  w.allow_insecure_http)::tokenvault.delivery), '{}')
      INTO deliveries
      FROM claimed c JOIN tokenvault.webhooks w ON w.id = c.webhook_id
      JOIN tokenvault.events e ON e.id = c.event_id;
    -- a walk cut short may have left due ones unseen: claim again at once
    next_at := CASE WHEN walked = walk THEN now()
                    ELSE (SELECT min(next_attempt_at) FROM tokenvault.webhook_deliveries
                           WHERE delivered_at IS NULL AND next_attempt_at > now() AND next_attempt_at < 'infinity') END;
END
$$;

CREATE FUNCTION _webhook_next(webhook_id uuid, auth_id uuid) RETURNS void
    LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF auth_id IS NULL THEN
        UPDATE tokenvault.webhook_deliveries SET next_attempt_at = now()
         WHERE id = (SELECT min(p.id) FROM tokenvault.webhook_deliveries p
                      WHERE p.webhook_id = _webhook_next.webhook_id AND p.auth_id IS NULL AND p.delivered_at IS NULL)
           AND next_attempt_at = 'infinity';
    ELSE
        UPDATE tokenvault.webhook_deliveries SET next_attempt_at = now()
         WHERE id = (SELECT min(p.id) FROM tokenvault.webhook_deliveries p
                      WHERE p.webhook_id = _webhook_next.webhook_id AND p.auth_id = _webhook_next.auth_id
                        AND p.delivered_at IS NULL)
           AND next_attempt_at = 'infinity';
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION _webhook_result(delivery_id bigint, status integer, error text) RETURNS void
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
        UPDATE tokenvault.webhooks SET failing_since = NULL WHERE id = d.webhook_id AND failing_since IS NOT NULL;
        -- the auth's next event for this webhook may go now
        PERFORM tokenvault._webhook_next(d.webhook_id, d.auth_id);
        PERFORM tokenvault._wake_worker(now());
    ELSE
        UPDATE tokenvault.webhook_deliveries SET
            last_status = nullif(status, 0), last_error = left(error, 400),
            next_attempt_at = now() + least(3600, 2 * 2 ^ least(greatest(attempts - 1, 0), 20))
                                      * (0.5 + random() / 2) * interval '1 second'
         WHERE id = delivery_id RETURNING * INTO d;
        UPDATE tokenvault.webhooks SET failing_since = now() WHERE id = d.webhook_id AND failing_since IS NULL;
        PERFORM tokenvault._wake_worker(d.next_attempt_at);
    END IF;
END
$$;

CREATE FUNCTION _worker_start(promoted boolean) RETURNS bigint
    LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
    WITH lost AS (
        UPDATE tokenvault.auths SET refresh_sent_at = NULL, refresh_at = now(),
               refresh_lost = coalesce(refresh_lost, CASE WHEN promoted THEN 'failover' ELSE 'restart' END)
         WHERE refresh_sent_at IS NOT NULL AND refresh_at IS NOT NULL
        RETURNING id
    ), released AS (
        UPDATE tokenvault.auths SET refresh_at = tokenvault._refresh_at(auths)
         WHERE refresh_at > now() AND refresh_at <= now() + tokenvault._lease() AND failure_count = 0
           AND id NOT IN (SELECT id FROM lost)
        RETURNING 1
    )
    SELECT (SELECT count(*) FROM released) + (SELECT count(*) FROM lost)
$$;

CREATE OR REPLACE FUNCTION _worker_tick() RETURNS timestamptz
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
    PERFORM tokenvault._purge_dropped_roles(1000);
    PERFORM tokenvault._bound_webhooks(1000);
    -- authorizations never completed: their states, a day after they expired
    DELETE FROM tokenvault.auth_states
     WHERE ctid IN (SELECT s.ctid FROM tokenvault.auth_states s
                     WHERE s.expires_at < now() - interval '1 day' LIMIT 1000);
    RETURN least(
        (SELECT min(d) FROM (SELECT tokenvault._dies_at(auths) AS d FROM tokenvault.auths) x WHERE d > now()),
        (SELECT min(tokenvault._dies_at(auths) - notice) FROM tokenvault.auths
          WHERE expiry_notified_at IS NULL AND tokenvault._dies_at(auths) - notice > now()),
        (SELECT min(delivered_at) + tokenvault._setting_interval('tokenvault.event_retention')
           FROM tokenvault.events WHERE delivered_at IS NOT NULL),
        now() + interval '1 hour');
END
$$;

CREATE FUNCTION _purge_dropped_roles(n integer) RETURNS void
    LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
    DELETE FROM tokenvault.private_tokens
     WHERE ctid IN (SELECT t.ctid FROM tokenvault.private_tokens t
                     WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_roles r WHERE r.oid = t.owner::pg_catalog.oid)
                     LIMIT n);
    UPDATE tokenvault.user_token_grants SET revoked_at = now(), revoked_by = 'tokenvault: role dropped'
     WHERE ctid IN (SELECT g.ctid FROM tokenvault.user_token_grants g
                     WHERE g.revoked_at IS NULL
                       AND NOT EXISTS (SELECT FROM pg_catalog.pg_roles r WHERE r.oid = g.grantee::pg_catalog.oid)
                     LIMIT n);
$$;

CREATE FUNCTION _drop_deliveries(w uuid, ids bigint[], reason text) RETURNS void
    LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    dropped bigint[];
    queues uuid[];
    a uuid;
BEGIN
    WITH gone AS (DELETE FROM tokenvault.webhook_deliveries WHERE id = ANY (ids) RETURNING event_id, auth_id)
    SELECT array_agg(event_id), array_agg(DISTINCT auth_id) INTO dropped, queues FROM gone;
    IF dropped IS NULL THEN
        RETURN;
    END IF;
    UPDATE tokenvault.events e SET delivered_at = now()
     WHERE e.id = ANY (dropped) AND e.delivered_at IS NULL
       AND NOT EXISTS (SELECT FROM tokenvault.webhook_deliveries x WHERE x.event_id = e.id AND x.delivered_at IS NULL);
    FOREACH a IN ARRAY queues LOOP
        PERFORM tokenvault._webhook_next(w, a);
    END LOOP;
    IF EXISTS (SELECT FROM unnest(queues) q WHERE q IS NULL) THEN
        PERFORM tokenvault._webhook_next(w, NULL);
    END IF;
    PERFORM tokenvault._publish_local('webhook.events_dropped',
        jsonb_build_object('webhook_id', w, 'dropped', cardinality(dropped), 'reason', reason));
END
$$;

CREATE FUNCTION _bound_webhooks(n integer) RETURNS void
    LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    w tokenvault.webhooks;
    ids bigint[];
    max_backlog constant integer := current_setting('tokenvault.webhook_max_backlog')::integer;
BEGIN
    FOR w IN UPDATE tokenvault.webhooks SET enabled = false
              WHERE enabled AND failing_since < now() - tokenvault._setting_interval('tokenvault.webhook_disable_after')
             RETURNING * LOOP
        PERFORM tokenvault._publish_local('webhook.disabled',
            -- not its URL: events are every application's to read, and a URL may hold a token
            jsonb_build_object('webhook_id', w.id, 'failing_since', w.failing_since));
    END LOOP;
    FOR w IN SELECT * FROM tokenvault.webhooks LOOP
        ids := ARRAY(SELECT d.id FROM tokenvault.webhook_deliveries d
                      WHERE d.webhook_id = w.id AND d.delivered_at IS NULL AND NOT w.enabled LIMIT n);
        PERFORM tokenvault._drop_deliveries(w.id, ids, 'webhook disabled');
        -- of the oldest waiting (ids grow with time), those past the age
        ids := ARRAY(SELECT x.id FROM (SELECT d.id, d.event_id FROM tokenvault.webhook_deliveries d
                                        WHERE d.webhook_id = w.id AND d.delivered_at IS NULL
                                        ORDER BY d.id LIMIT n) x
                       JOIN tokenvault.events e ON e.id = x.event_id
                      WHERE e.created_at < now() - tokenvault._setting_interval('tokenvault.webhook_max_age'));
        PERFORM tokenvault._drop_deliveries(w.id, ids, 'older than tokenvault.webhook_max_age');
        ids := ARRAY(SELECT x.id FROM (SELECT d.id FROM tokenvault.webhook_deliveries d
                                        WHERE d.webhook_id = w.id AND d.delivered_at IS NULL
                                        ORDER BY d.id DESC OFFSET max_backlog LIMIT n) x);
        PERFORM tokenvault._drop_deliveries(w.id, ids, 'more than tokenvault.webhook_max_backlog waiting');
    END LOOP;
END
$$;

CREATE OR REPLACE FUNCTION _worker_stats(OUT worker_pid integer, OUT worker_state text, OUT last_loop_at timestamptz,
                              OUT refreshes_succeeded bigint, OUT refreshes_failed bigint,
                              OUT http_p50_ms double precision, OUT http_p90_ms double precision,
                              OUT http_p99_ms double precision, OUT refreshes_unconfirmed bigint)
    LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'tv_worker_stats';

CREATE OR REPLACE FUNCTION _solution_must_exist(solution_id uuid) RETURNS tokenvault.solutions
    LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    s tokenvault.solutions;
BEGIN
    PERFORM tokenvault._admit_app();
    PERFORM tokenvault._refuse_null(solution_id IS NULL, 'solution id'::text);
    SELECT * INTO s FROM tokenvault.solutions t WHERE t.id = _solution_must_exist.solution_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'solution % does not exist', solution_id
            USING ERRCODE = 'undefined_object',
                  HINT = 'List solutions with: SELECT id, title FROM tokenvault.solutions;';
    END IF;
    RETURN s;
END
$$;

CREATE OR REPLACE FUNCTION _instance_must_exist(instance_id uuid) RETURNS tokenvault.instances
    LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    i tokenvault.instances;
BEGIN
    PERFORM tokenvault._admit_app();
    PERFORM tokenvault._refuse_null(instance_id IS NULL, 'instance id'::text);
    SELECT * INTO i FROM tokenvault.instances t WHERE t.id = _instance_must_exist.instance_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'instance % does not exist', instance_id
            USING ERRCODE = 'undefined_object',
                  HINT = 'A user''s instances are listed by tokenvault.user_instances(user_id).';
    END IF;
    RETURN i;
END
$$;

CREATE OR REPLACE FUNCTION _slot_must_exist(solution_id uuid, external_id text, kind text) RETURNS tokenvault.slots
    LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    s tokenvault.slots;
    known text;
BEGIN
    PERFORM tokenvault._admit_app();
    PERFORM tokenvault._refuse_null(external_id IS NULL, 'externalId'::text);
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

CREATE OR REPLACE FUNCTION _instance_auth_values_check() RETURNS trigger
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
    END IF;
    PERFORM tokenvault._require_client_access(a.client_id, a.id);
    IF a.user_id <> i.owner THEN
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

CREATE OR REPLACE FUNCTION _release_auths(auth_ids uuid[]) RETURNS void
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
            'service_name', left((r.a).service, 400)), (r.a).client_id);
    END LOOP;
END
$$;

CREATE OR REPLACE FUNCTION create_solution(title text, description text DEFAULT '') RETURNS uuid
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    new_id uuid;
BEGIN
    PERFORM tokenvault._admit_admin();
    PERFORM tokenvault._check_solution_text(coalesce(title, ''), description);
    INSERT INTO tokenvault.solutions (title, description)
    VALUES (title, coalesce(description, ''))
    RETURNING id INTO new_id;
    RETURN new_id;
END
$$;

CREATE OR REPLACE FUNCTION update_solution(solution_id uuid, title text DEFAULT NULL, description text DEFAULT NULL)
    RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    s tokenvault.solutions := tokenvault._solution_must_exist(solution_id);
BEGIN
    PERFORM tokenvault._admit_admin();
    PERFORM tokenvault._check_solution_text(title, description);
    UPDATE tokenvault.solutions t
       SET title = coalesce(update_solution.title, t.title),
           description = coalesce(update_solution.description, t.description),
           updated_at = now()
     WHERE t.id = s.id;
END
$$;

CREATE OR REPLACE FUNCTION delete_solution(solution_id uuid, force boolean DEFAULT false) RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    s tokenvault.solutions := tokenvault._solution_must_exist(solution_id);
    n bigint;
BEGIN
    PERFORM tokenvault._admit_admin();
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

CREATE OR REPLACE FUNCTION add_slot(solution_id uuid, external_id text, kind text, settings jsonb DEFAULT '{}')
    RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r tokenvault.slots;
BEGIN
    PERFORM tokenvault._admit_admin();
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

CREATE OR REPLACE FUNCTION update_slot(solution_id uuid, external_id text, settings jsonb) RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    s tokenvault.slots;
    r tokenvault.slots;
BEGIN
    PERFORM tokenvault._admit_admin();
    PERFORM tokenvault._solution_must_exist(solution_id), tokenvault._refuse_null(settings IS NULL, 'settings'::text);
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

CREATE OR REPLACE FUNCTION delete_slot(solution_id uuid, external_id text) RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM tokenvault._admit_admin();
    PERFORM tokenvault._solution_must_exist(solution_id), tokenvault._slot_must_exist(solution_id, external_id, NULL);
    DELETE FROM tokenvault.slots s
     WHERE s.solution_id = delete_slot.solution_id AND s.external_id = delete_slot.external_id;
END
$$;

CREATE OR REPLACE FUNCTION create_instance(solution_id uuid, owner uuid, name text,
                                auth_values jsonb DEFAULT '[]', config_values jsonb DEFAULT '[]') RETURNS uuid
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    i tokenvault.instances;
BEGIN
    PERFORM tokenvault._admit_app();
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

CREATE OR REPLACE FUNCTION update_instance(instance_id uuid, name text DEFAULT NULL, enabled boolean DEFAULT NULL,
                                auth_values jsonb DEFAULT NULL, config_values jsonb DEFAULT NULL) RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    i tokenvault.instances := tokenvault._instance_must_exist(instance_id);
BEGIN
    PERFORM tokenvault._admit_app();
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

CREATE OR REPLACE FUNCTION delete_instance(instance_id uuid) RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM tokenvault._admit_app();
    DELETE FROM tokenvault.instances WHERE id = (tokenvault._instance_must_exist(instance_id)).id;
END
$$;

CREATE OR REPLACE FUNCTION instance(instance_id uuid) RETURNS jsonb
    LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    i tokenvault.instances := tokenvault._instance_must_exist(instance_id);
BEGIN
    PERFORM tokenvault._admit_app();
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

CREATE OR REPLACE FUNCTION user_instances(user_id uuid) RETURNS jsonb
    LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM tokenvault._admit_app();
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
              FROM tokenvault.auths a
             WHERE a.user_id = user_instances.user_id AND tokenvault._client_visible(a.client_id)), '[]'));
END
$$;

CREATE OR REPLACE FUNCTION authorize_url_for_slot(solution_id uuid, external_id text, user_id uuid, redirect_uri text,
                              name text DEFAULT NULL, auth_id uuid DEFAULT NULL) RETURNS text
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    s tokenvault.slots;
    c uuid[];
BEGIN
    PERFORM tokenvault._admit_app();
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

CREATE OR REPLACE FUNCTION _check_token(related_id text, key text, value text DEFAULT '') RETURNS void
    LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM tokenvault._refuse_null(related_id IS NULL, 'related_id'::text), tokenvault._refuse_null(key IS NULL, 'key'::text),
            tokenvault._refuse_null(value IS NULL, 'value'::text);
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

CREATE OR REPLACE FUNCTION put_private_token(related_id text, key text, value text) RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    me name := tokenvault._caller();
BEGIN
    PERFORM tokenvault._admit_app();
    PERFORM tokenvault._check_token(related_id, key, value);
    INSERT INTO tokenvault.private_tokens AS t (owner, owner_name, related_id, key, value)
    VALUES (tokenvault._role(me), me, related_id, key,
            tokenvault._seal_private(value, me, related_id, key))
    ON CONFLICT ON CONSTRAINT private_tokens_pkey
        DO UPDATE SET owner_name = EXCLUDED.owner_name, value = EXCLUDED.value, updated_at = now();
END
$$;

CREATE OR REPLACE FUNCTION delete_private_token(related_id text, key text) RETURNS boolean
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM tokenvault._admit_app();
    DELETE FROM tokenvault.private_tokens t
     WHERE t.owner = tokenvault._role(tokenvault._caller()) AND t.owner_name = tokenvault._caller()
       AND t.related_id = delete_private_token.related_id
       AND t.key = delete_private_token.key;
    RETURN FOUND;
END
$$;

CREATE FUNCTION _holds(member name, grantee regrole, grantee_name name) RETURNS boolean
    LANGUAGE sql STABLE AS $$
    SELECT EXISTS (SELECT FROM pg_catalog.pg_roles r
                    WHERE r.oid = grantee::pg_catalog.oid AND r.rolname = grantee_name
                      AND pg_catalog.pg_has_role(member, r.oid, 'USAGE'))
$$;

CREATE OR REPLACE FUNCTION _user_token_access(user_id uuid, related_id text, need text) RETURNS void
    LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM tokenvault._user_must_exist(user_id);
    IF NOT EXISTS (SELECT FROM tokenvault.user_token_grants g
                    WHERE g.user_id = _user_token_access.user_id AND g.revoked_at IS NULL
                      AND (g.related_id IS NULL OR g.related_id = _user_token_access.related_id)
                      AND (g.privilege = 'write' OR need = 'read')
                      AND tokenvault._holds(tokenvault._caller(), g.grantee, g.grantee_name)) THEN
        RAISE EXCEPTION 'role % may not % the tokens of user %', tokenvault._caller(), need,
                user_id || CASE WHEN related_id IS NULL THEN '' ELSE format(' with related id "%s"', related_id) END
            USING ERRCODE = 'insufficient_privilege',
                  HINT = format('An administrator shares them with tokenvault.grant_user_tokens(user_id, role, ''%s'').', need);
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION put_user_token(user_id uuid, related_id text, key text, value text) RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM tokenvault._admit_app();
    PERFORM tokenvault._check_token(related_id, key, value),
            tokenvault._user_token_access(user_id, related_id, 'write');
    INSERT INTO tokenvault.user_tokens AS t (user_id, related_id, key, value)
    VALUES (user_id, related_id, key,
            tokenvault._seal_user_token(value, user_id, related_id, key))
    ON CONFLICT ON CONSTRAINT user_tokens_pkey DO UPDATE SET value = EXCLUDED.value, updated_at = now();
END
$$;

CREATE OR REPLACE FUNCTION get_user_token(user_id uuid, related_id text, key text) RETURNS text
    LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM tokenvault._admit_app();
    PERFORM tokenvault._check_token(related_id, key), tokenvault._user_token_access(user_id, related_id, 'read');
    RETURN (SELECT tokenvault._open_user_token(t.value, t.user_id, t.related_id, t.key)
              FROM tokenvault.user_tokens t
             WHERE t.user_id = get_user_token.user_id AND t.related_id = get_user_token.related_id
               AND t.key = get_user_token.key);
END
$$;

CREATE OR REPLACE FUNCTION _user_token_list_access(user_id uuid, related_id text) RETURNS void
    LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM tokenvault._admit_app();
    IF related_id IS NOT NULL OR NOT EXISTS (
            SELECT FROM tokenvault.user_token_grants g
             WHERE g.user_id = _user_token_list_access.user_id AND g.revoked_at IS NULL
               AND tokenvault._holds(tokenvault._caller(), g.grantee, g.grantee_name)) THEN
        PERFORM tokenvault._user_token_access(user_id, related_id, 'read');
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION list_user_tokens(user_id uuid, related_id text DEFAULT NULL)
    RETURNS TABLE (related_id text, key text, value text)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT tokenvault._user_token_list_access($1, $2);
    SELECT t.related_id, t.key, tokenvault._open_user_token(t.value, t.user_id, t.related_id, t.key)
      FROM tokenvault.user_tokens t
     WHERE t.user_id = $1 AND ($2 IS NULL OR t.related_id = $2)
       AND EXISTS (SELECT FROM tokenvault.user_token_grants g
                    WHERE g.user_id = t.user_id AND g.revoked_at IS NULL
                      AND (g.related_id IS NULL OR g.related_id = t.related_id)
                      AND tokenvault._holds(tokenvault._caller(), g.grantee, g.grantee_name))
     ORDER BY t.related_id, t.key
$$;

CREATE OR REPLACE FUNCTION delete_user_token(user_id uuid, related_id text, key text) RETURNS boolean
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM tokenvault._admit_app();
    PERFORM tokenvault._check_token(related_id, key), tokenvault._user_token_access(user_id, related_id, 'write');
    DELETE FROM tokenvault.user_tokens t
     WHERE t.user_id = delete_user_token.user_id AND t.related_id = delete_user_token.related_id
       AND t.key = delete_user_token.key;
    RETURN FOUND;
END
$$;

CREATE OR REPLACE FUNCTION grant_user_tokens(user_id uuid, role name, privilege text, related_id text DEFAULT NULL)
    RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    me name := tokenvault._caller();
    replaced text;
BEGIN
    PERFORM tokenvault._admit_admin();
    PERFORM tokenvault._user_must_exist(user_id), tokenvault._refuse_null(role IS NULL, 'role'::text);
    IF privilege IS NULL OR privilege NOT IN ('read', 'write') THEN
        RAISE EXCEPTION 'unknown privilege "%"', privilege
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Grant read, or write (which reads too).';
    ELSIF tokenvault._role(role) IS NULL THEN
        RAISE EXCEPTION 'role "%" does not exist', role USING ERRCODE = 'undefined_object';
    ELSIF related_id = '' THEN
        RAISE EXCEPTION 'related_id must not be empty (NULL grants all of the user''s tokens)'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    replaced := tokenvault._end_user_token_grant(user_id, role, related_id, me);
    INSERT INTO tokenvault.user_token_grants (user_id, grantee, privilege, related_id, granted_by, grantee_name)
    VALUES (user_id, tokenvault._role(role), privilege, related_id, me, role);
    PERFORM tokenvault._user_token_grant_event('user_tokens.granted'::text, user_id, role, privilege, related_id, me, replaced);
END
$$;

CREATE OR REPLACE FUNCTION revoke_user_tokens(user_id uuid, role name, related_id text DEFAULT NULL) RETURNS boolean
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    me name := tokenvault._caller();
    ended text;
BEGIN
    PERFORM tokenvault._admit_admin();
    PERFORM tokenvault._user_must_exist(user_id), tokenvault._refuse_null(role IS NULL, 'role'::text);
    ended := tokenvault._end_user_token_grant(user_id, role, related_id, me);
    IF ended IS NOT NULL THEN
        PERFORM tokenvault._user_token_grant_event('user_tokens.revoked'::text, user_id, role, ended, related_id, me, NULL::text);
    END IF;
    RETURN ended IS NOT NULL;
END
$$;

CREATE FUNCTION _end_user_token_grant(user_id uuid, role name, related_id text, who name) RETURNS text
    LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    ended text;
BEGIN
    PERFORM FROM tokenvault.users u WHERE u.id = _end_user_token_grant.user_id FOR NO KEY UPDATE;
    UPDATE tokenvault.user_token_grants g SET revoked_at = now(), revoked_by = who
     WHERE g.user_id = _end_user_token_grant.user_id AND g.grantee = tokenvault._role(role)
       AND g.related_id IS NOT DISTINCT FROM _end_user_token_grant.related_id AND g.revoked_at IS NULL
    RETURNING g.privilege INTO ended;
    RETURN ended;
END
$$;

CREATE FUNCTION _user_token_grant_event(kind text, user_id uuid, role name, privilege text, related_id text,
                                        who name, replaced text) RETURNS void
    LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM tokenvault._publish(kind, NULL::uuid, jsonb_build_object(
        'event', kind,
        'user_id', user_id,
        'external_user_id', (SELECT left(u.external_user_id, 400) FROM tokenvault.users u
                              WHERE u.id = _user_token_grant_event.user_id),
        'grantee', role,
        'privilege', privilege,
        'related_id', left(related_id, 400),
        'by', who)
        || CASE WHEN replaced IS NULL THEN '{}' ELSE jsonb_build_object('replaces', replaced) END);
END
$$;

CREATE FUNCTION _user_deleted_grants() RETURNS trigger
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    g tokenvault.user_token_grants;
BEGIN
    FOR g IN UPDATE tokenvault.user_token_grants t SET revoked_at = now(), revoked_by = tokenvault._caller()
              WHERE t.user_id = OLD.id AND t.revoked_at IS NULL
             RETURNING t.* LOOP
        PERFORM tokenvault._publish('user_tokens.revoked'::text, NULL::uuid, jsonb_build_object(
            'event', 'user_tokens.revoked',
            'user_id', OLD.id,
            'external_user_id', left(OLD.external_user_id, 400),
            'grantee', coalesce((SELECT r.rolname::text FROM pg_catalog.pg_roles r WHERE r.oid = g.grantee::oid),
                                g.grantee::text),
            'privilege', g.privilege,
            'related_id', left(g.related_id, 400),
            'by', g.revoked_by,
            'reason', 'user deleted'::text));
    END LOOP;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION key_usage() RETURNS TABLE (key_id bigint, newest boolean, secrets bigint)
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM tokenvault._admit_admin();
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

CREATE FUNCTION create_key_file() RETURNS bigint
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    n bigint;
BEGIN
    PERFORM tokenvault._admit_admin();
    PERFORM pg_advisory_xact_lock(hashtext('tokenvault.key_file'));
    EXECUTE (SELECT 'SELECT count(*) FROM (' ||
                    string_agg(format('SELECT 1 FROM %s WHERE %I IS NOT NULL', s.tbl, s.col), ' UNION ALL ') || ') s'
               FROM tokenvault._sealed_columns() s) INTO n;
    IF n > 0 THEN
        RAISE EXCEPTION 'this database holds % sealed secret(s), so its key file exists somewhere', n
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Restore the key file from its backup and point tokenvault.key_file at it; a new key file would open none of them.';
    END IF;
    RETURN tokenvault._create_key_file();
END
$$;

CREATE OR REPLACE FUNCTION add_key() RETURNS bigint
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM tokenvault._admit_admin();
    -- one writer of the key file at a time
    PERFORM pg_advisory_xact_lock(hashtext('tokenvault.key_file'));
    RETURN tokenvault._add_key();
END
$$;

CREATE OR REPLACE FUNCTION drop_key(key_id bigint) RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    n bigint;
BEGIN
    PERFORM tokenvault._admit_admin();
    PERFORM tokenvault._refuse_null(key_id IS NULL, 'key id'::text);
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'drop_key() must run at READ COMMITTED'
            USING ERRCODE = 'active_sql_transaction',
                  HINT = 'It counts the secrets a key seals after the transactions that may still seal with it have ended, which needs a new snapshot.';
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('tokenvault.key_file'));
    -- A transaction that sealed with this key before the newer key was
    -- published may commit after rotate_key() passed its row: wait for every
    -- transaction older than this one, then count with a new snapshot.
    PERFORM tokenvault._wait_for_older_transactions();
    SELECT u.secrets INTO n FROM tokenvault.key_usage() u WHERE u.key_id = drop_key.key_id;
    IF n > 0 THEN
        RAISE EXCEPTION 'key % still seals % secret(s)', key_id, n
            USING ERRCODE = 'dependent_objects_still_exist',
                  HINT = 'Run tokenvault.rotate_key() first to re-seal them with the newest key.';
    END IF;
    PERFORM tokenvault._drop_key(key_id);
END
$$;

CREATE OR REPLACE FUNCTION rotate_key() RETURNS bigint
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    newest bigint := (SELECT r.key_id FROM tokenvault.key_ring() r WHERE r.newest);
    total bigint := 0;
    s record;
    last_page bigint;
    page bigint;
    n bigint;
BEGIN
    PERFORM tokenvault._admit_admin();
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

CREATE OR REPLACE FUNCTION _sealed_columns() RETURNS TABLE (tbl regclass, col name, place text, place_args text)
    LANGUAGE sql STABLE AS $$
    VALUES ('tokenvault.clients'::pg_catalog.regclass, 'secret'::name, 'client', 't.id'),
           ('tokenvault.auths', 'secret', 'auth', 't.id'),
           ('tokenvault.webhooks', 'secret', 'webhook', 't.id'),
           ('tokenvault.webhooks', 'previous_secret', 'webhook', 't.id'),
           ('tokenvault.auth_states', 'verifier', 'state', 't.state'),
           ('tokenvault.private_tokens', 'value', 'private', 't.owner_name, t.related_id, t.key'),
           ('tokenvault.user_tokens', 'value', 'user_token', 't.user_id, t.related_id, t.key')
$$;

CREATE OR REPLACE FUNCTION _reseal_pages(s record, first_page bigint, pages bigint, newest bigint) RETURNS bigint
    LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    n bigint;
BEGIN
    EXECUTE format($q$
        WITH resealed AS (
            UPDATE %1$s t SET %2$I = tokenvault._seal_%4$s(tokenvault._open_%4$s(t.%2$I, %3$s), %3$s)
             WHERE t.ctid >= $1 AND t.ctid < $2 AND t.%2$I IS NOT NULL
               AND (tokenvault._key_id(t.%2$I) <> $3 OR pg_catalog.get_byte(t.%2$I, 0) < 2)
            RETURNING 1)
        SELECT count(*) FROM resealed $q$, s.tbl, s.col, s.place_args, s.place)
    INTO n USING format('(%s,0)', first_page)::tid, format('(%s,0)', first_page + pages)::tid, newest;
    RETURN n;
END
$$;

CREATE FUNCTION _edit_distance(a text, b text) RETURNS integer
    LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'tv_edit_distance';

CREATE FUNCTION _provider_must_exist(key text) RETURNS tokenvault.providers
    LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    p tokenvault.providers;
BEGIN
    SELECT * INTO p FROM tokenvault.providers x WHERE x.key = _provider_must_exist.key;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown provider "%"', key
            USING ERRCODE = 'undefined_object',
                  HINT = coalesce('The closest keys: ' || (
                      SELECT string_agg(x.key, ', ' ORDER BY d, x.key)
                        FROM (SELECT x.key, tokenvault._edit_distance(lower(_provider_must_exist.key), x.key) AS d
                                FROM tokenvault.providers x ORDER BY d, x.key LIMIT 3) x) || '. ', '')
                      || 'List them with: SELECT key, name, auth_type FROM tokenvault.providers;';
    END IF;
    RETURN p;
END
$$;

CREATE FUNCTION _provider_quirks() RETURNS text[]
    LANGUAGE sql IMMUTABLE AS $$
    SELECT ARRAY['expires_in_unit', 'field_names', 'issued_at_unit', 'error_field', 'error_description_field',
                 'reauth_errors', 'token_scheme', 'token_header', 'verify_headers', 'refresh_every',
                 'token_path_exchange_only']
$$;

CREATE FUNCTION _provider_row_settings(p tokenvault.providers) RETURNS jsonb
    LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT jsonb_strip_nulls(CASE WHEN p.auth_type = 'oauth2' THEN jsonb_build_object(
               'grant', coalesce(p.grant_type, 'authorization_code'), 'auth_url', p.auth_url,
               'token_url', p.token_url, 'refresh_url', p.refresh_url, 'revoke_url', p.revoke_url,
               'scopes', to_jsonb(p.scopes), 'required_scopes', to_jsonb(p.required_scopes),
               'scope_separator', p.scope_separator, 'client_auth', p.client_auth, 'body_format', p.body_format,
               'token_path', p.token_path, 'token_lifetime', p.token_lifetime, 'never_expires', p.never_expires,
               'pkce', p.pkce, 'extra_params', p.extra_params, 'refresh_scopes', p.refresh_scopes)
           WHEN p.auth_type = 'api_key' THEN jsonb_build_object(
               'api_key_header', p.api_key_header, 'api_key_prefix', p.api_key_prefix)
           ELSE '{}' END
        || jsonb_build_object('allowed_hosts', to_jsonb(p.allowed_hosts), 'verify_url', p.verify_url,
               'verify_method', CASE WHEN p.verify_url IS NOT NULL THEN p.verify_method END,
               'verify_ok_field', p.verify_ok_field))
        || (SELECT coalesce(jsonb_object_agg(k, v), '{}') FROM jsonb_each(p.settings) x(k, v)
             WHERE k = ANY (tokenvault._provider_quirks()))
$$;

CREATE FUNCTION _provider_managed() RETURNS text[]
    LANGUAGE sql IMMUTABLE AS $$
    SELECT ARRAY['auth_url', 'refresh_url', 'revoke_url', 'scopes', 'required_scopes', 'scope_separator',
                 'client_auth', 'body_format', 'token_path', 'token_lifetime', 'never_expires', 'pkce',
                 'extra_params', 'refresh_scopes', 'api_key_header', 'api_key_prefix', 'allowed_hosts',
                 'verify_url', 'verify_method', 'verify_ok_field', 'expires_in_unit', 'field_names',
                 'issued_at_unit', 'error_field', 'error_description_field', 'reauth_errors', 'token_scheme', 'token_header', 'verify_headers', 'token_path_exchange_only']
$$;

CREATE FUNCTION _provider_param_ok(value text) RETURNS boolean
    LANGUAGE sql IMMUTABLE STRICT AS $$
    SELECT value ~ '^[A-Za-z0-9]([A-Za-z0-9._~-]*[A-Za-z0-9])?(:[0-9]{1,5})?$' AND value !~ '\.\.'
$$;

CREATE FUNCTION _fill_client_params(s jsonb, params jsonb) RETURNS jsonb
    LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    k text;
    p record;
BEGIN
    FOREACH k IN ARRAY ARRAY['auth_url', 'token_url', 'refresh_url', 'revoke_url', 'verify_url'] LOOP
        CONTINUE WHEN NOT s ? k;
        FOR p IN SELECT * FROM jsonb_each_text(params) LOOP
            s := jsonb_set(s, ARRAY[k], to_jsonb(replace(s->>k, '{' || p.key || '}', p.value)));
        END LOOP;
    END LOOP;
    RETURN s;
END
$$;

CREATE FUNCTION _provider_settings(key text, type text, given jsonb) RETURNS jsonb
    LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    p tokenvault.providers := tokenvault._provider_must_exist(key);
    params jsonb := CASE WHEN jsonb_typeof(given->'params') IS DISTINCT FROM 'null' THEN coalesce(given->'params', '{}') ELSE '{}' END;
    s jsonb;
    missing record;
    bad text;
BEGIN
    IF type IS DISTINCT FROM p.auth_type THEN
        RAISE EXCEPTION 'provider "%" is of type %, not %', p.key, p.auth_type, type
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = format('Create it with tokenvault.create_client(name, service, %L, ...).', p.auth_type);
    END IF;
    IF jsonb_typeof(params) <> 'object' THEN
        RAISE EXCEPTION 'setting "params" must be an object of non-empty strings' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT k INTO bad FROM jsonb_object_keys(params) k WHERE NOT p.tenant_params ? k LIMIT 1;
    IF bad IS NOT NULL THEN
        RAISE EXCEPTION 'provider "%" has no parameter "%"', p.key, bad
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = CASE WHEN p.tenant_params = '{}' THEN 'It takes none.'
                              ELSE 'It takes: ' || (SELECT string_agg(k, ', ' ORDER BY k) FROM jsonb_object_keys(p.tenant_params) k) || '.' END;
    END IF;
    SELECT x.key, x.value->>'example' AS example, x.value->>'description' AS description INTO missing
      FROM jsonb_each(p.tenant_params) x
     WHERE x.value->>'from' = 'client' AND NOT params ? x.key ORDER BY x.key LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'provider "%" needs the parameter "%"', p.key, missing.key
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = format('Give it in the settings: {"provider": "%s", "params": {"%s": "%s"}, ...}%s',
                                p.key, missing.key, coalesce(missing.example, '…'),
                                coalesce(' (' || missing.description || ').', '.'));
    END IF;
    SELECT x.key INTO bad FROM jsonb_each(params) x
     WHERE jsonb_typeof(x.value) <> 'string' OR NOT tokenvault._provider_param_ok(x.value #>> '{}') LIMIT 1;
    IF bad IS NOT NULL THEN
        RAISE EXCEPTION 'parameter "%" of provider "%" is not a host name or a path segment', bad, p.key
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'A value is letters, digits, ".", "_", "~" and "-", possibly followed by ":port".';
    END IF;
    s := tokenvault._fill_client_params(tokenvault._provider_row_settings(p), params);
    -- with every {param} of its URLs filled, a client needs no allowed_hosts
    -- for them: its URLs are as fixed as ones written out
    IF concat(s->>'auth_url', s->>'token_url', s->>'refresh_url', s->>'revoke_url', s->>'verify_url') NOT LIKE '%{%' THEN
        s := s - 'allowed_hosts';
    END IF;
    -- a setting given as null: the client goes without the catalogue's
    RETURN jsonb_strip_nulls(s || (given - 'params' - 'provider'))
             || jsonb_build_object('provider', p.key, 'params', params);
END
$$;

CREATE FUNCTION add_provider(provider jsonb) RETURNS text
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    p tokenvault.providers;
    old tokenvault.providers;
BEGIN
    PERFORM tokenvault._admit_admin();
    PERFORM tokenvault._refuse_null(provider IS NULL, 'provider'::text);
    IF jsonb_typeof(provider) <> 'object' OR NOT provider ? 'key' THEN
        RAISE EXCEPTION 'a provider is a JSON object with a "key"' USING ERRCODE = 'invalid_parameter_value',
              HINT = 'See the columns of tokenvault.providers, and a row of it as an example: '
                     'SELECT to_jsonb(p) FROM tokenvault.providers p WHERE key = ''google'';';
    END IF;
    p := tokenvault._provider_from_json(provider - 'added_by');
    SELECT * INTO old FROM tokenvault.providers x WHERE x.key = p.key;
    IF FOUND AND old.added_by IS DISTINCT FROM tokenvault._caller()
       AND NOT (SELECT rolsuper FROM pg_roles WHERE rolname = tokenvault._caller()) THEN
        RAISE EXCEPTION 'provider "%" is %', p.key,
                        CASE WHEN old.added_by IS NULL THEN 'shipped with tokenvault' ELSE 'another role''s' END
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'Add it under another key, or have a superuser replace it.';
    END IF;
    p.added_by := tokenvault._caller();
    PERFORM tokenvault._check_provider(p);
    DELETE FROM tokenvault.providers x WHERE x.key = p.key;
    INSERT INTO tokenvault.providers SELECT p.*;
    RETURN p.key;
END
$$;

CREATE FUNCTION _provider_from_json(j jsonb) RETURNS tokenvault.providers
    LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    p tokenvault.providers;
    bad text;
BEGIN
    SELECT k INTO bad FROM jsonb_object_keys(j) k
     WHERE k NOT IN (SELECT attname FROM pg_attribute
                      WHERE attrelid = 'tokenvault.providers'::regclass AND attnum > 0 AND NOT attisdropped)
       AND k <> 'grant' LIMIT 1;
    IF bad IS NOT NULL THEN
        RAISE EXCEPTION 'a provider has no field "%"', bad USING ERRCODE = 'invalid_parameter_value',
              HINT = 'Its fields are the columns of tokenvault.providers.';
    END IF;
    IF j ? 'grant' THEN
        j := (j - 'grant') || jsonb_build_object('grant_type', j->'grant');
    END IF;
    p := jsonb_populate_record(p, j);
    p.scopes := coalesce(p.scopes, '{}');
    p.required_scopes := coalesce(p.required_scopes, '{}');
    p.scope_separator := coalesce(p.scope_separator, ' ');
    p.client_auth := coalesce(p.client_auth, 'basic');
    p.body_format := coalesce(p.body_format, 'form');
    p.never_expires := coalesce(p.never_expires, false);
    p.pkce := coalesce(p.pkce, false);
    p.extra_params := coalesce(p.extra_params, '{}');
    p.rotates_refresh_token := coalesce(p.rotates_refresh_token, false);
    p.refresh_scopes := coalesce(p.refresh_scopes, false);
    p.tenant_params := coalesce(p.tenant_params, '{}');
    p.settings := coalesce(p.settings, '{}');
    p.verify_method := coalesce(p.verify_method, 'GET');
    RETURN p;
END
$$;

CREATE FUNCTION _check_provider(p tokenvault.providers) RETURNS void
    LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    urls text := concat_ws(' ', p.auth_url, p.token_url, p.refresh_url, p.revoke_url, p.verify_url, p.docs_url);
    bad text;
BEGIN
    SELECT k INTO bad FROM jsonb_object_keys(p.settings) k
     WHERE NOT k = ANY (tokenvault._provider_quirks()) LIMIT 1;
    IF bad IS NOT NULL THEN
        RAISE EXCEPTION 'provider "%": "%" cannot be among its settings', p.key, bad
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'A row''s settings are quirks: ' || array_to_string(tokenvault._provider_quirks(), ', ')
                         || '; its URLs, scopes and the rest are columns.';
    END IF;
    IF p.auth_type = 'oauth2' AND (p.token_url IS NULL
       OR (coalesce(p.grant_type, 'authorization_code') = 'authorization_code' AND p.auth_url IS NULL)) THEN
        RAISE EXCEPTION 'provider "%" needs a token_url%', p.key,
              CASE WHEN p.token_url IS NULL THEN '' ELSE ' and an auth_url' END USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT u INTO bad FROM regexp_split_to_table(urls, ' ') u WHERE u !~ '^https://[^/?#@[:space:]]+' LIMIT 1;
    IF bad IS NOT NULL THEN
        RAISE EXCEPTION 'provider "%": % is not an https URL', p.key, bad USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT m[1] INTO bad FROM regexp_matches(urls, '\{([^}]*)\}', 'g') m WHERE NOT p.tenant_params ? m[1] LIMIT 1;
    IF bad IS NOT NULL THEN
        RAISE EXCEPTION 'provider "%" names {%} in a URL but not in tenant_params', p.key, bad
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT x.key INTO bad FROM jsonb_each(p.tenant_params) x
     WHERE jsonb_typeof(x.value) <> 'object' OR NOT x.value->>'from' IN ('auth', 'client') LIMIT 1;
    IF bad IS NOT NULL THEN
        RAISE EXCEPTION 'tenant parameter "%" of provider "%" must say "from": "auth" or "client"', bad, p.key
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- the settings as create_client would check them, client-wide params filled with their examples
    PERFORM tokenvault._client_settings(p.auth_type, tokenvault._provider_settings_of(p) ||
            CASE WHEN p.auth_type = 'oauth2' THEN '{"client_id": "x"}'::jsonb ELSE '{}' END, true);
END
$$;

CREATE FUNCTION _provider_settings_of(p tokenvault.providers) RETURNS jsonb
    LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT tokenvault._fill_client_params(tokenvault._provider_row_settings(p),
        coalesce((SELECT jsonb_object_agg(x.key, coalesce(x.value->>'example', 'example'))
                    FROM jsonb_each(p.tenant_params) x WHERE x.value->>'from' = 'client'), '{}'))
$$;

CREATE FUNCTION _ship_providers(rows jsonb) RETURNS void
    LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r jsonb;
    p tokenvault.providers;
    aside text;
    n integer;
BEGIN
    DELETE FROM tokenvault.providers WHERE added_by IS NULL;
    FOR r IN SELECT * FROM jsonb_array_elements(rows) LOOP
        p := tokenvault._provider_from_json(r);
        IF EXISTS (SELECT FROM tokenvault.providers x LEFT JOIN pg_catalog.pg_roles o ON o.rolname = x.added_by
                    WHERE x.key = p.key AND NOT coalesce(o.rolsuper, false)) THEN
            n := 1;
            aside := left(p.key, 55) || '_custom';
            WHILE EXISTS (SELECT FROM tokenvault.providers x WHERE x.key = aside) LOOP
                n := n + 1;
                aside := left(p.key, 55) || '_custom' || n;
            END LOOP;
            UPDATE tokenvault.providers SET key = aside WHERE key = p.key;
            RAISE WARNING 'provider "%" added by % is now "%": tokenvault ships a provider under its key', p.key,
                          (SELECT added_by FROM tokenvault.providers WHERE key = aside), aside
                USING HINT = 'Clients made from it keep their settings; compare it with the shipped row.';
        END IF;
        CONTINUE WHEN EXISTS (SELECT FROM tokenvault.providers x WHERE x.key = p.key);
        INSERT INTO tokenvault.providers SELECT p.*;
    END LOOP;
END
$$;

CREATE FUNCTION _verify_request(r tokenvault.check_request) RETURNS tokenvault.check_verdict
    LANGUAGE c VOLATILE STRICT AS 'MODULE_PATHNAME', 'tv_verify_request';

CREATE FUNCTION _check_request(a tokenvault.auths, c tokenvault.clients) RETURNS tokenvault.check_request
    LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    cred jsonb := tokenvault._open_auth(a.secret, a.id);
    headers jsonb := coalesce(c.verify_headers, '{}')
                     || tokenvault._auth_headers(a, c, coalesce(cred->>'access_token', cred->>'api_key'), cred);
BEGIN
    -- a line break in a header would start another header of the stored value's choosing
    IF EXISTS (SELECT FROM jsonb_each_text(headers) h WHERE h.key || h.value ~ '[\r\n]') THEN
        RAISE EXCEPTION 'the credential of auth % cannot go in an HTTP header: it holds a line break', a.id
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN ROW(a.id, tokenvault._url_filled('verify_url', c, cred), c.verify_method,
               ARRAY(SELECT h.key || ': ' || h.value FROM jsonb_each_text(headers) h),
               c.verify_ok_field, c.allow_insecure_http)::tokenvault.check_request;
END
$$;

CREATE FUNCTION _first_check_at(id uuid, check_every integer) RETURNS timestamptz
    LANGUAGE sql VOLATILE AS $$
    SELECT pg_catalog.now() + ((pg_catalog.hashtext(id::text)::bigint & 2147483647) % check_every) * interval '1 second'
$$;

CREATE FUNCTION _check_record(auth_id uuid, v tokenvault.check_verdict) RETURNS void
    LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    a tokenvault.auths;
    every integer;
    was text;
BEGIN
    SELECT * INTO a FROM tokenvault.auths x WHERE x.id = auth_id FOR UPDATE;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    was := a.last_check;
    every := (SELECT c.check_every FROM tokenvault.clients c WHERE c.id = a.client_id AND c.verify_url IS NOT NULL);
    UPDATE tokenvault.auths SET
        last_checked_at = now(),
        last_check = v.outcome,
        status = CASE WHEN v.outcome = 'refused' THEN 'needs_reauth' ELSE status END,
        last_error = CASE WHEN v.outcome <> 'ok' THEN 'health check: ' || v.message
                          WHEN was <> 'ok' AND last_error LIKE 'health check: %' THEN NULL ELSE last_error END,
        check_at = CASE WHEN every IS NULL THEN NULL
                        WHEN v.outcome = 'failed' THEN now() + least(every, 300) * interval '1 second'
                        ELSE now() + every * interval '1 second' END,
        updated_at = now()
     WHERE id = a.id RETURNING * INTO a;
    IF a.check_at IS NOT NULL THEN
        PERFORM tokenvault._wake_worker(a.check_at);
    END IF;
    IF v.outcome = 'refused' OR (v.outcome = 'failed' AND was IS DISTINCT FROM 'failed') THEN
        PERFORM tokenvault._emit('auth.check_failed', a, NULL, a.last_error);
    ELSIF v.outcome = 'ok' AND was IN ('refused', 'failed') THEN
        PERFORM tokenvault._emit('auth.recovered', a);
    END IF;
END
$$;

CREATE FUNCTION check_auth(auth_id uuid) RETURNS text
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    a tokenvault.auths := tokenvault._auth_must_exist(auth_id);
    c tokenvault.clients := tokenvault._client_must_exist(a.client_id);
    v tokenvault.check_verdict;
BEGIN
    PERFORM tokenvault._admit_app();
    IF c.verify_url IS NULL THEN
        RAISE EXCEPTION 'client % has no verify_url', c.id
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Set one with tokenvault.update_client(id, ''{"verify_url": "…"}''), or create the client from a '
                         'provider of tokenvault.providers that has one.';
    END IF;
    IF c.type = 'oauth2' THEN
        PERFORM tokenvault.access_token(a.id);
        SELECT * INTO a FROM tokenvault.auths x WHERE x.id = a.id;
    END IF;
    v := tokenvault._verify_request(tokenvault._check_request(a, c));
    PERFORM tokenvault._check_record(a.id, v);
    RETURN v.outcome;
END
$$;

CREATE FUNCTION _check_claim(n integer, OUT requests tokenvault.check_request[], OUT next_at timestamptz)
    LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r record;
BEGIN
    requests := '{}';
    FOR r IN SELECT x AS a, y AS c FROM tokenvault.auths x JOIN tokenvault.clients y ON y.id = x.client_id
              WHERE x.check_at <= now() ORDER BY x.check_at LIMIT n FOR UPDATE OF x SKIP LOCKED LOOP
        IF (r.c).check_every IS NULL OR (r.c).verify_url IS NULL THEN
            UPDATE tokenvault.auths SET check_at = NULL WHERE id = (r.a).id;
        ELSIF (r.a).status NOT IN ('active', 'error')
              OR ((r.c).type = 'oauth2' AND (r.a).expires_at < now() + interval '1 minute') THEN
            UPDATE tokenvault.auths SET check_at = now() + (r.c).check_every * interval '1 second' WHERE id = (r.a).id;
        ELSE
            UPDATE tokenvault.auths SET check_at = now() + tokenvault._lease() WHERE id = (r.a).id;
            BEGIN
                requests := requests || tokenvault._check_request(r.a, r.c);
            EXCEPTION WHEN invalid_parameter_value THEN
                PERFORM tokenvault._check_record((r.a).id, ROW('failed', 0, SQLERRM)::tokenvault.check_verdict);
            END;
        END IF;
    END LOOP;
    IF cardinality(requests) < n THEN
        next_at := (SELECT min(check_at) FROM tokenvault.auths WHERE check_at > now());
    END IF;
END
$$;

CREATE FUNCTION _schedule_check() RETURNS trigger
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    NEW.check_at := (SELECT tokenvault._first_check_at(NEW.id, c.check_every) FROM tokenvault.clients c
                      WHERE c.id = NEW.client_id AND c.verify_url IS NOT NULL);
    IF NEW.check_at IS NOT NULL THEN
        PERFORM tokenvault._wake_worker(NEW.check_at);
    END IF;
    RETURN NEW;
END
$$;

CREATE FUNCTION _reschedule_checks() RETURNS trigger
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    UPDATE tokenvault.auths a SET check_at = CASE WHEN NEW.verify_url IS NOT NULL AND NEW.check_every IS NOT NULL
                                                  THEN tokenvault._first_check_at(a.id, NEW.check_every) END
     WHERE a.client_id = NEW.id;
    PERFORM tokenvault._wake_worker(now());
    RETURN NEW;
END
$$;


------------------------------------------------------------------------------
-- Triggers, the stats view, privileges and policies
------------------------------------------------------------------------------

CREATE TRIGGER admissions_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON admissions
    FOR EACH STATEMENT EXECUTE FUNCTION _table_changed();
CREATE TRIGGER clients_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON clients
    FOR EACH STATEMENT EXECUTE FUNCTION _table_changed();
CREATE TRIGGER users_deleted_grants AFTER DELETE ON users
    FOR EACH ROW EXECUTE FUNCTION _user_deleted_grants();
-- fired only for the columns the schedule reads (0.7.0)
DROP TRIGGER auths_schedule ON auths;
CREATE TRIGGER auths_schedule
    BEFORE INSERT OR UPDATE OF status, secret, expires_at, last_refreshed_at, refresh_at, failure_count,
                               refresh_expires_at, client_id ON auths
    FOR EACH ROW EXECUTE FUNCTION _auths_schedule();

CREATE VIEW stats AS
    SELECT s.worker_pid, s.worker_state, s.last_loop_at, s.refreshes_succeeded, s.refreshes_failed,
           s.refreshes_unconfirmed,
           (SELECT count(*) FROM tokenvault.auths WHERE refresh_at <= now()) AS auths_due,
           s.http_p50_ms, s.http_p90_ms, s.http_p99_ms,
           (SELECT count(*) FROM tokenvault.webhook_deliveries WHERE delivered_at IS NULL) AS webhook_backlog
      FROM tokenvault._worker_stats() s
     WHERE (SELECT tokenvault._admitted_app());
GRANT SELECT ON stats TO tokenvault_app, tokenvault_admin;

ALTER TABLE users ENABLE ROW LEVEL SECURITY;
ALTER TABLE clients ENABLE ROW LEVEL SECURITY;
ALTER TABLE auths ENABLE ROW LEVEL SECURITY;
ALTER TABLE events ENABLE ROW LEVEL SECURITY;
ALTER TABLE webhooks ENABLE ROW LEVEL SECURITY;
ALTER TABLE webhook_deliveries ENABLE ROW LEVEL SECURITY;
ALTER TABLE solutions ENABLE ROW LEVEL SECURITY;
ALTER TABLE slots ENABLE ROW LEVEL SECURITY;
ALTER TABLE instances ENABLE ROW LEVEL SECURITY;
ALTER TABLE instance_auth_values ENABLE ROW LEVEL SECURITY;
ALTER TABLE instance_config_values ENABLE ROW LEVEL SECURITY;
ALTER TABLE user_token_grants ENABLE ROW LEVEL SECURITY;

REVOKE ALL ON admissions FROM PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA tokenvault FROM PUBLIC;
GRANT SELECT (allowed_hosts) ON clients TO tokenvault_app;
GRANT SELECT (owner) ON webhooks TO tokenvault_admin;
GRANT EXECUTE ON FUNCTION _admitted_app(), _admitted_admin(), _client_visible(uuid) TO tokenvault_app;
GRANT EXECUTE ON FUNCTION _worker_stats() TO tokenvault_app;
GRANT EXECUTE ON FUNCTION create_key_file() TO tokenvault_admin;
GRANT EXECUTE ON FUNCTION add_webhook(text, text, text[], boolean), add_webhook(text, text[]),
    rotate_webhook_secret(uuid, text), finish_webhook_rotation(uuid), address_class(inet), host_policy(text, inet)
    TO tokenvault_admin;
GRANT SELECT (allow_insecure_http) ON clients TO tokenvault_app;
GRANT SELECT (refresh_sent_at, refresh_lost) ON auths TO tokenvault_app;
GRANT SELECT (allow_insecure_http) ON webhooks TO tokenvault_admin;

-- health checks (issue 19)
CREATE TRIGGER auths_schedule_check BEFORE INSERT ON auths FOR EACH ROW EXECUTE FUNCTION _schedule_check();
CREATE TRIGGER clients_reschedule_checks AFTER UPDATE OF check_every, verify_url ON clients
    FOR EACH ROW WHEN (OLD.check_every IS DISTINCT FROM NEW.check_every OR OLD.verify_url IS DISTINCT FROM NEW.verify_url)
    EXECUTE FUNCTION _reschedule_checks();
GRANT SELECT ON providers TO tokenvault_app;
GRANT SELECT (provider, provider_params, required_scopes, refresh_scopes, never_expires,
              token_scheme, token_header, verify_headers, token_path_exchange_only, field_names, issued_at_unit, error_field,
              error_description_field, reauth_errors, verify_url, verify_method, verify_ok_field, check_every)
    ON clients TO tokenvault_app;
GRANT SELECT (last_checked_at, last_check, check_at) ON auths TO tokenvault_app;
GRANT EXECUTE ON FUNCTION authorize_url(uuid, uuid, text, text, text[], uuid, jsonb), check_auth(uuid) TO tokenvault_app;
GRANT EXECUTE ON FUNCTION add_provider(jsonb) TO tokenvault_admin;
CREATE POLICY admitted ON users FOR SELECT TO tokenvault_app USING ((SELECT tokenvault._admitted_app()));
CREATE POLICY admitted ON clients FOR SELECT TO tokenvault_app
    USING ((SELECT tokenvault._admitted_app()) AND tokenvault._client_visible(id));
CREATE POLICY admitted ON auths FOR SELECT TO tokenvault_app
    USING ((SELECT tokenvault._admitted_app()) AND tokenvault._client_visible(client_id));
-- What administrators do to clients and grants (client.*, user_tokens.*)
-- is theirs to read; of a private client, its owner's only.  An auth event
-- without its client (recorded before 0.7.0, when the auth may be gone
-- since) is the administrators'.
CREATE POLICY admitted ON events FOR SELECT TO tokenvault_app
    USING ((SELECT tokenvault._admitted_app())
           AND (client_id IS NULL OR tokenvault._client_visible(client_id))
           AND (kind NOT LIKE 'client.%' AND kind NOT LIKE 'user_tokens.%' AND (client_id IS NOT NULL OR auth_id IS NULL)
                OR (SELECT tokenvault._admitted_admin())));
CREATE POLICY admitted ON webhooks FOR SELECT TO tokenvault_admin USING ((SELECT tokenvault._admitted_admin()));
CREATE POLICY admitted ON webhook_deliveries FOR SELECT TO tokenvault_admin USING ((SELECT tokenvault._admitted_admin()));
CREATE POLICY admitted ON solutions FOR SELECT TO tokenvault_app USING ((SELECT tokenvault._admitted_app()));
CREATE POLICY admitted ON slots FOR SELECT TO tokenvault_app USING ((SELECT tokenvault._admitted_app()));
CREATE POLICY admitted ON instances FOR SELECT TO tokenvault_app USING ((SELECT tokenvault._admitted_app()));
CREATE POLICY admitted ON instance_auth_values FOR SELECT TO tokenvault_app
    USING ((SELECT tokenvault._admitted_app()) AND auth_id IN (SELECT a.id FROM tokenvault.auths a));
CREATE POLICY admitted ON instance_config_values FOR SELECT TO tokenvault_app
    USING ((SELECT tokenvault._admitted_app()));
CREATE POLICY admitted ON user_token_grants FOR SELECT TO tokenvault_admin USING ((SELECT tokenvault._admitted_admin()));

-- Through the table, too, a role sees its own private tokens only (sealed);
-- an administrator sees every role's, and writes none: the functions write.
DROP POLICY private_tokens_own ON private_tokens;
CREATE POLICY private_tokens_own ON private_tokens FOR SELECT TO tokenvault_app
    USING ((SELECT tokenvault._admitted_app())
           AND owner::oid = (SELECT r.oid FROM pg_catalog.pg_roles r WHERE r.rolname = current_user)
           AND owner_name = current_user);
DROP POLICY private_tokens_admin ON private_tokens;
CREATE POLICY private_tokens_admin ON private_tokens FOR SELECT TO tokenvault_admin
    USING ((SELECT tokenvault._admitted_admin()));

------------------------------------------------------------------------------
-- Admissions for the roles that used tokenvault here before
------------------------------------------------------------------------------

-- Until 0.7.0 membership in tokenvault_app or tokenvault_admin was enough,
-- in every database.  No role is admitted here by the update: admitting
-- every member would give each tenant's roles every database again.  So
-- the update names the roles that were members, and the superuser admits
-- those that belong here (until then they are refused, with a hint).
DO $$
DECLARE
    members text := (SELECT pg_catalog.string_agg(format('SELECT tokenvault.admit(%L, %L);', m.member::regrole::text,
                                                         CASE r.rolname WHEN 'tokenvault_admin' THEN 'admin' ELSE 'app' END),
                                                  ' ' ORDER BY m.member::regrole::text)
                       FROM pg_catalog.pg_auth_members m JOIN pg_catalog.pg_roles r ON r.oid = m.roleid
                      WHERE r.rolname IN ('tokenvault_app', 'tokenvault_admin')
                        AND m.member NOT IN (SELECT oid FROM pg_catalog.pg_roles
                                              WHERE rolname IN ('tokenvault_app', 'tokenvault_admin')));
BEGIN
    IF members IS NOT NULL THEN
        RAISE WARNING 'tokenvault 0.7.0 admits roles per database, and this one admits none yet'
            USING DETAIL = 'Members of tokenvault_app and tokenvault_admin are refused here until admitted.',
                  HINT = 'Admit those that belong in this database: ' || members;
    END IF;
END
$$;

-- tokenvault.allow_insecure_http is gone: plain http is now each client's
-- and each webhook's own setting, off until set.  Name those that use it.
DO $$
DECLARE
    clients text := (SELECT pg_catalog.string_agg(format('SELECT tokenvault.update_client(%L, ''{"allow_insecure_http": true}'');', id),
                                                  ' ' ORDER BY name)
                       FROM clients WHERE concat_ws(' ', token_url, refresh_url, revoke_url) ~* 'http://');
    hooks text := (SELECT pg_catalog.string_agg(format('%L', id), ', ') FROM webhooks WHERE url ~* '^http://');
BEGIN
    IF clients IS NOT NULL THEN
        RAISE WARNING 'clients with plain-http URLs are refused until they allow it'
            USING HINT = 'If they are meant to use http (tests, private networks): ' || clients;
    END IF;
    IF hooks IS NOT NULL THEN
        RAISE WARNING 'webhooks with plain-http URLs are refused until they allow it: %', hooks
            USING HINT = 'If they are meant to use http: UPDATE tokenvault.webhooks SET allow_insecure_http = true WHERE id IN (...);';
    END IF;
END
$$;

-- Catalogue: the providers tokenvault ships, as data (providers.sql loads them).
-- Each row's values come from the provider's documentation (docs_url), as
-- checked on checked_on; README, "Providers", says how to add or correct one.

SELECT tokenvault._ship_providers($catalogue$[
{"key": "airtable", "name": "Airtable", "auth_type": "oauth2", "auth_url": "https://airtable.com/oauth2/v1/authorize", "token_url": "https://airtable.com/oauth2/v1/token", "scopes": ["user.email:read"], "client_auth": "basic", "pkce": true, "rotates_refresh_token": true, "verify_url": "https://api.airtable.com/v0/meta/whoami", "docs_url": "https://airtable.com/developers/web/api/oauth-reference", "checked_on": "2026-12-05"},
{"key": "amazon", "name": "Login with Amazon", "auth_type": "oauth2", "auth_url": "https://www.amazon.com/ap/oa", "token_url": "https://api.amazon.com/auth/o2/token", "scopes": ["profile"], "client_auth": "post", "verify_url": "https://api.amazon.com/user/profile", "docs_url": "https://developer.amazon.com/docs/login-with-amazon/authorization-code-grant.html", "checked_on": "2026-12-05"},
{"key": "amazon_seller", "name": "Amazon Selling Partner API (North America)", "auth_type": "oauth2", "auth_url": "https://sellercentral.amazon.com/apps/authorize/consent", "token_url": "https://api.amazon.com/auth/o2/token", "client_auth": "post", "docs_url": "https://developer-docs.amazon.com/sp-api/docs/website-authorization-workflow", "checked_on": "2026-12-05"},
{"key": "asana", "name": "Asana", "auth_type": "oauth2", "auth_url": "https://app.asana.com/-/oauth_authorize", "token_url": "https://app.asana.com/-/oauth_token", "revoke_url": "https://app.asana.com/-/oauth_revoke", "scopes": ["users:read"], "client_auth": "post", "pkce": true, "verify_url": "https://app.asana.com/api/1.0/users/me", "docs_url": "https://developers.asana.com/docs/oauth", "checked_on": "2026-12-05"},
{"key": "atlassian", "name": "Atlassian Cloud (Jira / Confluence, OAuth 2.0 3LO)", "auth_type": "oauth2", "auth_url": "https://auth.atlassian.com/authorize", "token_url": "https://auth.atlassian.com/oauth/token", "scopes": ["read:me"], "required_scopes": ["offline_access"], "client_auth": "post", "body_format": "json", "extra_params": {"authorize": {"audience": "api.atlassian.com", "prompt": "consent"}}, "rotates_refresh_token": true, "verify_url": "https://api.atlassian.com/me", "docs_url": "https://developer.atlassian.com/cloud/jira/platform/oauth-2-3lo-apps/", "checked_on": "2026-12-05"},
{"key": "auth0", "name": "Auth0", "auth_type": "oauth2", "auth_url": "https://{auth0_domain}/authorize", "token_url": "https://{auth0_domain}/oauth/token", "revoke_url": "https://{auth0_domain}/oauth/revoke", "scopes": ["openid", "profile"], "required_scopes": ["offline_access"], "pkce": true, "client_auth": "post", "tenant_params": {"auth0_domain": {"from": "client", "example": "acme.us.auth0.com", "description": "the Auth0 tenant domain or custom domain, whole host"}}, "verify_url": "https://{auth0_domain}/userinfo", "docs_url": "https://auth0.com/docs/secure/tokens/refresh-tokens/get-refresh-tokens", "checked_on": "2026-12-05"},
{"key": "bitbucket", "name": "Bitbucket Cloud", "auth_type": "oauth2", "auth_url": "https://bitbucket.org/site/oauth2/authorize", "token_url": "https://bitbucket.org/site/oauth2/access_token", "client_auth": "basic", "verify_url": "https://api.bitbucket.org/2.0/user", "docs_url": "https://developer.atlassian.com/cloud/bitbucket/oauth-2/", "checked_on": "2026-12-05"},
{"key": "box", "name": "Box", "auth_type": "oauth2", "auth_url": "https://account.box.com/api/oauth2/authorize", "token_url": "https://api.box.com/oauth2/token", "revoke_url": "https://api.box.com/oauth2/revoke", "client_auth": "post", "rotates_refresh_token": true, "verify_url": "https://api.box.com/2.0/users/me", "docs_url": "https://developer.box.com/guides/authentication/tokens/refresh/", "checked_on": "2026-12-05"},
{"key": "calendly", "name": "Calendly", "auth_type": "oauth2", "auth_url": "https://auth.calendly.com/oauth/authorize", "token_url": "https://auth.calendly.com/oauth/token", "revoke_url": "https://auth.calendly.com/oauth/revoke", "scopes": ["users:read"], "rotates_refresh_token": true, "verify_url": "https://api.calendly.com/users/me", "docs_url": "https://developer.calendly.com/docs/authentication/refresh-token-rotation-guide", "checked_on": "2026-12-05"},
{"key": "canva", "name": "Canva Connect", "auth_type": "oauth2", "auth_url": "https://www.canva.com/api/oauth/authorize", "token_url": "https://api.canva.com/rest/v1/oauth/token", "revoke_url": "https://api.canva.com/rest/v1/oauth/revoke", "scopes": ["profile:read"], "pkce": true, "rotates_refresh_token": true, "verify_url": "https://api.canva.com/rest/v1/users/me", "docs_url": "https://www.canva.dev/docs/connect/authentication/", "checked_on": "2026-12-05"},
{"key": "clickup", "name": "ClickUp", "auth_type": "oauth2", "auth_url": "https://app.clickup.com/api", "token_url": "https://api.clickup.com/api/v2/oauth/token", "client_auth": "post", "never_expires": true, "verify_url": "https://api.clickup.com/api/v2/user", "docs_url": "https://developer.clickup.com/docs/authentication", "checked_on": "2026-12-05"},
{"key": "discord", "name": "Discord", "auth_type": "oauth2", "auth_url": "https://discord.com/oauth2/authorize", "token_url": "https://discord.com/api/oauth2/token", "revoke_url": "https://discord.com/api/oauth2/token/revoke", "scopes": ["identify"], "client_auth": "basic", "verify_url": "https://discord.com/api/users/@me", "docs_url": "https://discord.com/developers/docs/topics/oauth2", "checked_on": "2026-12-05"},
{"key": "docusign", "name": "Docusign", "auth_type": "oauth2", "auth_url": "https://account.docusign.com/oauth/auth", "token_url": "https://account.docusign.com/oauth/token", "scopes": ["signature"], "required_scopes": ["extended"], "verify_url": "https://account.docusign.com/oauth/userinfo", "docs_url": "https://developers.docusign.com/platform/auth/reference/obtain-access-token", "checked_on": "2026-12-05"},
{"key": "docusign_demo", "name": "Docusign (developer/demo)", "auth_type": "oauth2", "auth_url": "https://account-d.docusign.com/oauth/auth", "token_url": "https://account-d.docusign.com/oauth/token", "scopes": ["signature"], "required_scopes": ["extended"], "verify_url": "https://account-d.docusign.com/oauth/userinfo", "docs_url": "https://developers.docusign.com/platform/auth/reference/obtain-access-token", "checked_on": "2026-12-05"},
{"key": "dropbox", "name": "Dropbox", "auth_type": "oauth2", "auth_url": "https://www.dropbox.com/oauth2/authorize", "token_url": "https://api.dropboxapi.com/oauth2/token", "revoke_url": "https://api.dropboxapi.com/2/auth/token/revoke", "scopes": ["account_info.read"], "pkce": true, "extra_params": {"authorize": {"token_access_type": "offline"}}, "verify_url": "https://api.dropboxapi.com/2/users/get_current_account", "verify_method": "POST", "docs_url": "https://developers.dropbox.com/oauth-guide", "checked_on": "2026-12-05"},
{"key": "facebook", "name": "Facebook Login", "auth_type": "oauth2", "auth_url": "https://www.facebook.com/dialog/oauth", "token_url": "https://graph.facebook.com/oauth/access_token", "scopes": ["public_profile"], "scope_separator": ",", "client_auth": "post", "verify_url": "https://graph.facebook.com/me", "docs_url": "https://developers.facebook.com/docs/facebook-login/guides/advanced/manual-flow", "checked_on": "2026-12-05"},
{"key": "figma", "name": "Figma", "auth_type": "oauth2", "auth_url": "https://www.figma.com/oauth", "token_url": "https://api.figma.com/v1/oauth/token", "refresh_url": "https://api.figma.com/v1/oauth/refresh", "scopes": ["current_user:read"], "verify_url": "https://api.figma.com/v1/me", "docs_url": "https://developers.figma.com/docs/rest-api/authentication/", "checked_on": "2026-12-05"},
{"key": "freshdesk", "name": "Freshdesk (API key)", "auth_type": "basic", "tenant_params": {"domain": {"from": "auth", "example": "acme", "description": "The customer's Freshdesk subdomain (acme in acme.freshdesk.com)"}}, "allowed_hosts": ["*.freshdesk.com"], "verify_url": "https://{domain}.freshdesk.com/api/v2/agents/me", "docs_url": "https://developers.freshdesk.com/api/#authentication", "checked_on": "2026-12-05"},
{"key": "front", "name": "Front", "auth_type": "oauth2", "auth_url": "https://app.frontapp.com/oauth/authorize", "token_url": "https://app.frontapp.com/oauth/token", "verify_url": "https://api2.frontapp.com/me", "docs_url": "https://dev.frontapp.com/docs/oauth", "checked_on": "2026-12-05"},
{"key": "github", "name": "GitHub (OAuth app)", "auth_type": "oauth2", "auth_url": "https://github.com/login/oauth/authorize", "token_url": "https://github.com/login/oauth/access_token", "scopes": ["read:user"], "client_auth": "post", "pkce": true, "never_expires": true, "verify_url": "https://api.github.com/user", "docs_url": "https://docs.github.com/en/apps/oauth-apps/building-oauth-apps/authorizing-oauth-apps", "checked_on": "2026-12-05"},
{"key": "github_app", "name": "GitHub App (user access tokens)", "auth_type": "oauth2", "auth_url": "https://github.com/login/oauth/authorize", "token_url": "https://github.com/login/oauth/access_token", "client_auth": "post", "pkce": true, "rotates_refresh_token": true, "settings": {"reauth_errors": ["bad_refresh_token"]}, "verify_url": "https://api.github.com/user", "docs_url": "https://docs.github.com/en/apps/creating-github-apps/authenticating-with-a-github-app/refreshing-user-access-tokens", "checked_on": "2026-12-05"},
{"key": "gitlab", "name": "GitLab (gitlab.com)", "auth_type": "oauth2", "auth_url": "https://gitlab.com/oauth/authorize", "token_url": "https://gitlab.com/oauth/token", "revoke_url": "https://gitlab.com/oauth/revoke", "scopes": ["read_user"], "client_auth": "post", "pkce": true, "rotates_refresh_token": true, "verify_url": "https://gitlab.com/api/v4/user", "docs_url": "https://docs.gitlab.com/api/oauth2/", "checked_on": "2026-12-05"},
{"key": "gong", "name": "Gong", "auth_type": "oauth2", "auth_url": "https://app.gong.io/oauth2/authorize", "token_url": "https://app.gong.io/oauth2/generate-customer-token", "scopes": ["api:users:read"], "docs_url": "https://help.gong.io/docs/create-an-app-for-gong", "checked_on": "2026-12-05"},
{"key": "google", "name": "Google", "auth_type": "oauth2", "auth_url": "https://accounts.google.com/o/oauth2/v2/auth", "token_url": "https://oauth2.googleapis.com/token", "revoke_url": "https://oauth2.googleapis.com/revoke", "scopes": ["openid", "email", "profile"], "client_auth": "post", "pkce": true, "extra_params": {"authorize": {"access_type": "offline", "prompt": "consent"}}, "verify_url": "https://openidconnect.googleapis.com/v1/userinfo", "docs_url": "https://developers.google.com/identity/protocols/oauth2/web-server", "checked_on": "2026-12-05"},
{"key": "google_calendar", "name": "Google Calendar API", "auth_type": "oauth2", "auth_url": "https://accounts.google.com/o/oauth2/v2/auth", "token_url": "https://oauth2.googleapis.com/token", "revoke_url": "https://oauth2.googleapis.com/revoke", "scopes": ["https://www.googleapis.com/auth/calendar.readonly"], "client_auth": "post", "pkce": true, "extra_params": {"authorize": {"access_type": "offline", "prompt": "consent", "include_granted_scopes": "true"}}, "verify_url": "https://www.googleapis.com/calendar/v3/calendars/primary", "docs_url": "https://developers.google.com/identity/protocols/oauth2/web-server", "checked_on": "2026-12-05"},
{"key": "google_drive", "name": "Google Drive API", "auth_type": "oauth2", "auth_url": "https://accounts.google.com/o/oauth2/v2/auth", "token_url": "https://oauth2.googleapis.com/token", "revoke_url": "https://oauth2.googleapis.com/revoke", "scopes": ["https://www.googleapis.com/auth/drive.file"], "client_auth": "post", "pkce": true, "extra_params": {"authorize": {"access_type": "offline", "prompt": "consent", "include_granted_scopes": "true"}}, "verify_url": "https://www.googleapis.com/drive/v3/about?fields=user", "docs_url": "https://developers.google.com/identity/protocols/oauth2/web-server", "checked_on": "2026-12-05"},
{"key": "google_gmail", "name": "Google Gmail API", "auth_type": "oauth2", "auth_url": "https://accounts.google.com/o/oauth2/v2/auth", "token_url": "https://oauth2.googleapis.com/token", "revoke_url": "https://oauth2.googleapis.com/revoke", "scopes": ["https://www.googleapis.com/auth/gmail.readonly"], "client_auth": "post", "pkce": true, "extra_params": {"authorize": {"access_type": "offline", "prompt": "consent", "include_granted_scopes": "true"}}, "verify_url": "https://gmail.googleapis.com/gmail/v1/users/me/profile", "docs_url": "https://developers.google.com/identity/protocols/oauth2/web-server", "checked_on": "2026-12-05"},
{"key": "google_sheets", "name": "Google Sheets API", "auth_type": "oauth2", "auth_url": "https://accounts.google.com/o/oauth2/v2/auth", "token_url": "https://oauth2.googleapis.com/token", "revoke_url": "https://oauth2.googleapis.com/revoke", "scopes": ["https://www.googleapis.com/auth/spreadsheets.readonly", "openid", "email"], "client_auth": "post", "pkce": true, "extra_params": {"authorize": {"access_type": "offline", "prompt": "consent", "include_granted_scopes": "true"}}, "verify_url": "https://openidconnect.googleapis.com/v1/userinfo", "docs_url": "https://developers.google.com/identity/protocols/oauth2/web-server", "checked_on": "2026-12-05"},
{"key": "gusto", "name": "Gusto", "auth_type": "oauth2", "auth_url": "https://api.gusto.com/oauth/authorize", "token_url": "https://api.gusto.com/oauth/token", "client_auth": "post", "rotates_refresh_token": true, "verify_url": "https://api.gusto.com/v1/me", "docs_url": "https://docs.gusto.com/app-integrations/docs/oauth2", "checked_on": "2026-12-05"},
{"key": "gusto_demo", "name": "Gusto demo", "auth_type": "oauth2", "auth_url": "https://api.gusto-demo.com/oauth/authorize", "token_url": "https://api.gusto-demo.com/oauth/token", "client_auth": "post", "rotates_refresh_token": true, "verify_url": "https://api.gusto-demo.com/v1/me", "docs_url": "https://docs.gusto.com/app-integrations/docs/oauth2", "checked_on": "2026-12-05"},
{"key": "hubspot", "name": "HubSpot", "auth_type": "oauth2", "auth_url": "https://app.hubspot.com/oauth/authorize", "token_url": "https://api.hubapi.com/oauth/2026-03/token", "scopes": ["oauth"], "client_auth": "post", "verify_url": "https://api.hubapi.com/account-info/v3/details", "docs_url": "https://developers.hubspot.com/docs/api-reference/auth-oauth-v3/guide", "checked_on": "2026-12-05"},
{"key": "instagram", "name": "Instagram (API with Instagram Login)", "auth_type": "oauth2", "auth_url": "https://www.instagram.com/oauth/authorize", "token_url": "https://api.instagram.com/oauth/access_token", "scopes": ["instagram_business_basic"], "scope_separator": ",", "client_auth": "post", "verify_url": "https://graph.instagram.com/me", "docs_url": "https://developers.facebook.com/docs/instagram-platform/instagram-api-with-instagram-login/business-login", "checked_on": "2026-12-05"},
{"key": "intercom", "name": "Intercom", "auth_type": "oauth2", "auth_url": "https://app.intercom.com/oauth", "token_url": "https://api.intercom.io/auth/eagle/token", "client_auth": "post", "never_expires": true, "verify_url": "https://api.intercom.io/me", "docs_url": "https://developers.intercom.com/docs/build-an-integration/learn-more/authentication/setting-up-oauth", "checked_on": "2026-12-05"},
{"key": "keycloak", "name": "Keycloak", "auth_type": "oauth2", "auth_url": "https://{server}/realms/{realm}/protocol/openid-connect/auth", "token_url": "https://{server}/realms/{realm}/protocol/openid-connect/token", "revoke_url": "https://{server}/realms/{realm}/protocol/openid-connect/revoke", "scopes": ["openid"], "pkce": true, "tenant_params": {"server": {"from": "client", "example": "sso.example.com", "description": "Keycloak server host (with :port if any)"}, "realm": {"from": "client", "example": "myrealm", "description": "realm name"}}, "verify_url": "https://{server}/realms/{realm}/protocol/openid-connect/userinfo", "docs_url": "https://www.keycloak.org/securing-apps/oidc-layers", "checked_on": "2026-12-05"},
{"key": "linear", "name": "Linear", "auth_type": "oauth2", "auth_url": "https://linear.app/oauth/authorize", "token_url": "https://api.linear.app/oauth/token", "revoke_url": "https://api.linear.app/oauth/revoke", "scopes": ["read"], "scope_separator": ",", "client_auth": "post", "pkce": true, "rotates_refresh_token": true, "docs_url": "https://linear.app/developers/oauth-2-0-authentication", "checked_on": "2026-12-05"},
{"key": "linkedin", "name": "LinkedIn", "auth_type": "oauth2", "auth_url": "https://www.linkedin.com/oauth/v2/authorization", "token_url": "https://www.linkedin.com/oauth/v2/accessToken", "scopes": ["openid", "profile"], "client_auth": "post", "verify_url": "https://api.linkedin.com/v2/userinfo", "docs_url": "https://learn.microsoft.com/en-us/linkedin/shared/authentication/authorization-code-flow", "checked_on": "2026-12-05"},
{"key": "mailchimp", "name": "Mailchimp (Marketing API)", "auth_type": "oauth2", "auth_url": "https://login.mailchimp.com/oauth2/authorize", "token_url": "https://login.mailchimp.com/oauth2/token", "client_auth": "post", "never_expires": true, "docs_url": "https://mailchimp.com/developer/marketing/guides/access-user-data-oauth-2/", "checked_on": "2026-12-05"},
{"key": "mailchimp_api_key", "name": "Mailchimp Marketing API (API key)", "auth_type": "basic", "tenant_params": {"dc": {"from": "auth", "example": "us6", "description": "The data center: the part of the API key after the dash (…-us6)"}}, "allowed_hosts": ["*.api.mailchimp.com"], "verify_url": "https://{dc}.api.mailchimp.com/3.0/ping", "docs_url": "https://mailchimp.com/developer/marketing/docs/fundamentals/", "checked_on": "2026-12-05"},
{"key": "microsoft", "name": "Microsoft Entra ID (multi-tenant and personal accounts)", "auth_type": "oauth2", "auth_url": "https://login.microsoftonline.com/common/oauth2/v2.0/authorize", "token_url": "https://login.microsoftonline.com/common/oauth2/v2.0/token", "scopes": ["openid", "profile", "email", "User.Read"], "required_scopes": ["offline_access"], "client_auth": "post", "pkce": true, "rotates_refresh_token": true, "refresh_scopes": true, "settings": {"reauth_errors": ["interaction_required", "consent_required"]}, "verify_url": "https://graph.microsoft.com/v1.0/me", "docs_url": "https://learn.microsoft.com/en-us/entra/identity-platform/v2-oauth2-auth-code-flow", "checked_on": "2026-12-05"},
{"key": "microsoft_tenant", "name": "Microsoft Entra ID (one tenant)", "auth_type": "oauth2", "auth_url": "https://login.microsoftonline.com/{tenant}/oauth2/v2.0/authorize", "token_url": "https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token", "scopes": ["openid", "profile", "email", "User.Read"], "required_scopes": ["offline_access"], "client_auth": "post", "pkce": true, "rotates_refresh_token": true, "refresh_scopes": true, "settings": {"reauth_errors": ["interaction_required", "consent_required"]}, "verify_url": "https://graph.microsoft.com/v1.0/me", "docs_url": "https://learn.microsoft.com/en-us/entra/identity-platform/v2-oauth2-auth-code-flow", "checked_on": "2026-12-05", "tenant_params": {"tenant": {"from": "client", "example": "contoso.onmicrosoft.com", "description": "Directory (tenant) ID (GUID) or a verified domain name of the Entra ID tenant; also accepts 'organizations' or 'consumers'"}}},
{"key": "miro", "name": "Miro", "auth_type": "oauth2", "auth_url": "https://miro.com/oauth/authorize", "token_url": "https://api.miro.com/v1/oauth/token", "revoke_url": "https://api.miro.com/v2/oauth/revoke", "scopes": ["boards:read"], "client_auth": "post", "rotates_refresh_token": true, "verify_url": "https://api.miro.com/v1/oauth-token", "docs_url": "https://developers.miro.com/reference/oauth-20-authorization-v2", "checked_on": "2026-12-05"},
{"key": "monday", "name": "monday.com (OAuth 2.1)", "auth_type": "oauth2", "auth_url": "https://auth.monday.com/oauth2/authorize", "token_url": "https://auth.monday.com/oauth_ms/oauth/token", "scopes": ["me:read"], "client_auth": "post", "pkce": true, "docs_url": "https://developer.monday.com/apps/docs/oauth-2-1", "checked_on": "2026-12-05"},
{"key": "notion", "name": "Notion (public connection)", "auth_type": "oauth2", "auth_url": "https://api.notion.com/v1/oauth/authorize", "token_url": "https://api.notion.com/v1/oauth/token", "revoke_url": "https://api.notion.com/v1/oauth/revoke", "client_auth": "basic", "body_format": "json", "extra_params": {"authorize": {"owner": "user"}}, "rotates_refresh_token": true, "verify_url": "https://api.notion.com/v1/users/me", "docs_url": "https://developers.notion.com/docs/authorization", "checked_on": "2026-12-05", "settings": {"verify_headers": {"Notion-Version": "2022-06-28"}}},
{"key": "okta", "name": "Okta (org authorization server)", "auth_type": "oauth2", "auth_url": "https://{okta_domain}/oauth2/v1/authorize", "token_url": "https://{okta_domain}/oauth2/v1/token", "revoke_url": "https://{okta_domain}/oauth2/v1/revoke", "scopes": ["openid", "profile"], "required_scopes": ["offline_access"], "pkce": true, "tenant_params": {"okta_domain": {"from": "client", "example": "acme.okta.com", "description": "the Okta org (or custom) domain, whole host"}}, "verify_url": "https://{okta_domain}/oauth2/v1/userinfo", "docs_url": "https://developer.okta.com/docs/guides/refresh-tokens/main/", "checked_on": "2026-12-05"},
{"key": "openai", "name": "OpenAI (API key)", "auth_type": "api_key", "api_key_header": "Authorization", "api_key_prefix": "Bearer", "verify_url": "https://api.openai.com/v1/models", "docs_url": "https://platform.openai.com/docs/api-reference/authentication", "checked_on": "2026-12-05"},
{"key": "outreach", "name": "Outreach", "auth_type": "oauth2", "auth_url": "https://api.outreach.io/oauth/authorize", "token_url": "https://api.outreach.io/oauth/token", "scopes": ["users.read"], "client_auth": "post", "docs_url": "https://developers.outreach.io/api/oauth/", "checked_on": "2026-12-05"},
{"key": "paypal", "name": "PayPal (Log in with PayPal)", "auth_type": "oauth2", "auth_url": "https://www.paypal.com/signin/authorize", "token_url": "https://api-m.paypal.com/v1/oauth2/token", "scopes": ["openid"], "verify_url": "https://api-m.paypal.com/v1/identity/oauth2/userinfo?schema=paypalv1.1", "docs_url": "https://developer.paypal.com/docs/log-in-with-paypal/integrate/", "checked_on": "2026-12-05"},
{"key": "paypal_sandbox", "name": "PayPal sandbox (Log in with PayPal)", "auth_type": "oauth2", "auth_url": "https://www.sandbox.paypal.com/signin/authorize", "token_url": "https://api-m.sandbox.paypal.com/v1/oauth2/token", "scopes": ["openid"], "verify_url": "https://api-m.sandbox.paypal.com/v1/identity/oauth2/userinfo?schema=paypalv1.1", "docs_url": "https://developer.paypal.com/docs/log-in-with-paypal/integrate/", "checked_on": "2026-12-05"},
{"key": "pipedrive", "name": "Pipedrive", "auth_type": "oauth2", "auth_url": "https://oauth.pipedrive.com/oauth/authorize", "token_url": "https://oauth.pipedrive.com/oauth/token", "revoke_url": "https://oauth.pipedrive.com/oauth/revoke", "client_auth": "basic", "verify_url": "https://api.pipedrive.com/v1/users/me", "docs_url": "https://pipedrive.readme.io/docs/marketplace-oauth-authorization", "checked_on": "2026-12-05"},
{"key": "quickbooks", "name": "QuickBooks Online (Intuit)", "auth_type": "oauth2", "auth_url": "https://appcenter.intuit.com/connect/oauth2", "token_url": "https://oauth.platform.intuit.com/oauth2/v1/tokens/bearer", "revoke_url": "https://developer.api.intuit.com/v2/oauth2/tokens/revoke", "scopes": ["com.intuit.quickbooks.accounting", "openid"], "client_auth": "basic", "rotates_refresh_token": true, "settings": {"field_names": {"refresh_token_expires_in": "x_refresh_token_expires_in"}}, "verify_url": "https://accounts.platform.intuit.com/v1/openid_connect/userinfo", "docs_url": "https://developer.intuit.com/app/developer/qbo/docs/develop/authentication-and-authorization/oauth-2.0", "checked_on": "2026-12-05"},
{"key": "reddit", "name": "Reddit", "auth_type": "oauth2", "auth_url": "https://www.reddit.com/api/v1/authorize", "token_url": "https://www.reddit.com/api/v1/access_token", "revoke_url": "https://www.reddit.com/api/v1/revoke_token", "scopes": ["identity"], "extra_params": {"authorize": {"duration": "permanent"}}, "verify_url": "https://oauth.reddit.com/api/v1/me", "docs_url": "https://github.com/reddit-archive/reddit/wiki/OAuth2", "checked_on": "2026-12-05"},
{"key": "sage", "name": "Sage Business Cloud Accounting", "auth_type": "oauth2", "auth_url": "https://www.sageone.com/oauth2/auth/central", "token_url": "https://oauth.accounting.sage.com/token", "revoke_url": "https://oauth.accounting.sage.com/revoke", "scopes": ["readonly"], "client_auth": "post", "extra_params": {"authorize": {"filter": "apiv3.1"}}, "rotates_refresh_token": true, "verify_url": "https://api.accounting.sage.com/v3.1/user", "docs_url": "https://developer.sage.com/accounting/guides/authenticating/authentication", "checked_on": "2026-12-05"},
{"key": "salesforce", "name": "Salesforce", "auth_type": "oauth2", "auth_url": "https://login.salesforce.com/services/oauth2/authorize", "token_url": "https://login.salesforce.com/services/oauth2/token", "revoke_url": "https://login.salesforce.com/services/oauth2/revoke", "scopes": ["api", "openid"], "required_scopes": ["refresh_token"], "client_auth": "post", "pkce": true, "token_lifetime": 7200, "settings": {"issued_at_unit": "milliseconds"}, "verify_url": "https://login.salesforce.com/services/oauth2/userinfo", "docs_url": "https://help.salesforce.com/s/articleView?id=sf.remoteaccess_oauth_web_server_flow.htm&type=5", "checked_on": "2026-12-05"},
{"key": "salesforce_sandbox", "name": "Salesforce (sandbox)", "auth_type": "oauth2", "auth_url": "https://test.salesforce.com/services/oauth2/authorize", "token_url": "https://test.salesforce.com/services/oauth2/token", "revoke_url": "https://test.salesforce.com/services/oauth2/revoke", "scopes": ["api", "openid"], "required_scopes": ["refresh_token"], "client_auth": "post", "pkce": true, "token_lifetime": 7200, "settings": {"issued_at_unit": "milliseconds"}, "verify_url": "https://test.salesforce.com/services/oauth2/userinfo", "docs_url": "https://help.salesforce.com/s/articleView?id=sf.remoteaccess_oauth_web_server_flow.htm&type=5", "checked_on": "2026-12-05"},
{"key": "sendgrid", "name": "Twilio SendGrid", "auth_type": "api_key", "api_key_header": "Authorization", "api_key_prefix": "Bearer", "verify_url": "https://api.sendgrid.com/v3/scopes", "docs_url": "https://www.twilio.com/docs/sendgrid/api-reference/how-to-use-the-sendgrid-v3-api/authentication", "checked_on": "2026-12-05"},
{"key": "shopify", "name": "Shopify (offline access token)", "auth_type": "oauth2", "auth_url": "https://{shop}.myshopify.com/admin/oauth/authorize", "token_url": "https://{shop}.myshopify.com/admin/oauth/access_token", "scopes": ["read_products"], "scope_separator": ",", "client_auth": "post", "extra_params": {"token": {"expiring": "1"}}, "rotates_refresh_token": true, "tenant_params": {"shop": {"from": "auth", "example": "acme", "description": "The store's myshopify.com subdomain (acme in acme.myshopify.com), from the shop parameter of the install/callback request"}}, "allowed_hosts": ["*.myshopify.com"], "verify_url": "https://{shop}.myshopify.com/admin/oauth/access_scopes.json", "docs_url": "https://shopify.dev/docs/apps/build/authentication-authorization/access-tokens/offline-access-tokens", "checked_on": "2026-12-05", "settings": {"token_header": "X-Shopify-Access-Token"}},
{"key": "slack", "name": "Slack (user token, OAuth v2)", "auth_type": "oauth2", "auth_url": "https://slack.com/oauth/v2/authorize", "token_url": "https://slack.com/api/oauth.v2.access", "scope_separator": ",", "client_auth": "basic", "token_path": "authed_user", "pkce": true, "rotates_refresh_token": true, "extra_params": {"authorize": {"user_scope": "users:read"}}, "settings": {"reauth_errors": ["invalid_refresh_token", "token_revoked"], "token_scheme": "Bearer", "token_path_exchange_only": true}, "verify_url": "https://slack.com/api/auth.test", "verify_method": "POST", "verify_ok_field": "ok", "docs_url": "https://docs.slack.dev/authentication/using-token-rotation", "checked_on": "2026-12-05"},
{"key": "smartsheet", "name": "Smartsheet", "auth_type": "oauth2", "auth_url": "https://app.smartsheet.com/b/authorize", "token_url": "https://api.smartsheet.com/2.0/token", "scopes": ["READ_SHEETS"], "client_auth": "post", "verify_url": "https://api.smartsheet.com/2.0/users/me", "docs_url": "https://developers.smartsheet.com/api/smartsheet/guides/advanced-topics/oauth", "checked_on": "2026-12-05"},
{"key": "snowflake", "name": "Snowflake OAuth (custom client)", "auth_type": "oauth2", "auth_url": "https://{account}.snowflakecomputing.com/oauth/authorize", "token_url": "https://{account}.snowflakecomputing.com/oauth/token-request", "revoke_url": "https://{account}.snowflakecomputing.com/oauth/revoke", "required_scopes": ["refresh_token"], "pkce": true, "tenant_params": {"account": {"from": "client", "example": "myorg-myaccount", "description": "Snowflake account identifier (the security integration lives in this account)"}}, "docs_url": "https://docs.snowflake.com/en/user-guide/oauth-custom", "checked_on": "2026-12-05"},
{"key": "spotify", "name": "Spotify", "auth_type": "oauth2", "auth_url": "https://accounts.spotify.com/authorize", "token_url": "https://accounts.spotify.com/api/token", "scopes": ["user-read-private"], "pkce": true, "verify_url": "https://api.spotify.com/v1/me", "docs_url": "https://developer.spotify.com/documentation/web-api/tutorials/code-flow", "checked_on": "2026-12-05"},
{"key": "square", "name": "Square", "auth_type": "oauth2", "auth_url": "https://connect.squareup.com/oauth2/authorize", "token_url": "https://connect.squareup.com/oauth2/token", "scopes": ["MERCHANT_PROFILE_READ"], "client_auth": "post", "body_format": "json", "verify_url": "https://connect.squareup.com/v2/merchants/me", "docs_url": "https://developer.squareup.com/docs/oauth-api/overview", "checked_on": "2026-12-05"},
{"key": "square_sandbox", "name": "Square sandbox", "auth_type": "oauth2", "auth_url": "https://connect.squareupsandbox.com/oauth2/authorize", "token_url": "https://connect.squareupsandbox.com/oauth2/token", "scopes": ["MERCHANT_PROFILE_READ"], "client_auth": "post", "body_format": "json", "verify_url": "https://connect.squareupsandbox.com/v2/merchants/me", "docs_url": "https://developer.squareup.com/docs/oauth-api/overview", "checked_on": "2026-12-05"},
{"key": "strava", "name": "Strava", "auth_type": "oauth2", "auth_url": "https://www.strava.com/oauth/authorize", "token_url": "https://www.strava.com/oauth/token", "scopes": ["read"], "scope_separator": ",", "client_auth": "post", "rotates_refresh_token": true, "verify_url": "https://www.strava.com/api/v3/athlete", "docs_url": "https://developers.strava.com/docs/authentication/", "checked_on": "2026-12-05"},
{"key": "stripe", "name": "Stripe (secret / restricted API key)", "auth_type": "api_key", "api_key_header": "Authorization", "api_key_prefix": "Bearer", "verify_url": "https://api.stripe.com/v1/account", "docs_url": "https://docs.stripe.com/api/authentication", "checked_on": "2026-12-05"},
{"key": "tiktok", "name": "TikTok (Login Kit v2)", "auth_type": "oauth2", "auth_url": "https://www.tiktok.com/v2/auth/authorize/", "token_url": "https://open.tiktokapis.com/v2/oauth/token/", "revoke_url": "https://open.tiktokapis.com/v2/oauth/revoke/", "scopes": ["user.info.basic"], "scope_separator": ",", "client_auth": "post", "rotates_refresh_token": true, "verify_url": "https://open.tiktokapis.com/v2/user/info/?fields=open_id,display_name", "docs_url": "https://developers.tiktok.com/doc/oauth-user-access-token-management", "checked_on": "2026-12-05"},
{"key": "trello", "name": "Trello", "auth_type": "api_key", "api_key_header": "Authorization", "api_key_prefix": "OAuth", "verify_url": "https://api.trello.com/1/members/me", "docs_url": "https://developer.atlassian.com/cloud/trello/guides/rest-api/authorization/", "checked_on": "2026-12-05"},
{"key": "twilio", "name": "Twilio (Account SID + Auth Token)", "auth_type": "basic", "tenant_params": {"username": {"from": "auth", "example": "AC0123456789abcdef0123456789abcdef", "description": "the Account SID, which is also the Basic user name"}}, "allowed_hosts": ["api.twilio.com"], "verify_url": "https://api.twilio.com/2010-04-01/Accounts/{username}.json", "docs_url": "https://www.twilio.com/docs/usage/requests-to-twilio", "checked_on": "2026-12-05"},
{"key": "twitch", "name": "Twitch", "auth_type": "oauth2", "auth_url": "https://id.twitch.tv/oauth2/authorize", "token_url": "https://id.twitch.tv/oauth2/token", "revoke_url": "https://id.twitch.tv/oauth2/revoke", "client_auth": "post", "docs_url": "https://dev.twitch.tv/docs/authentication/getting-tokens-oauth/", "checked_on": "2026-12-05"},
{"key": "typeform", "name": "Typeform", "auth_type": "oauth2", "auth_url": "https://api.typeform.com/oauth/authorize", "token_url": "https://api.typeform.com/oauth/token", "scopes": ["accounts:read"], "required_scopes": ["offline"], "client_auth": "post", "verify_url": "https://api.typeform.com/me", "docs_url": "https://www.typeform.com/developers/get-started/applications/", "checked_on": "2026-12-05"},
{"key": "webflow", "name": "Webflow", "auth_type": "oauth2", "auth_url": "https://webflow.com/oauth/authorize", "token_url": "https://api.webflow.com/oauth/access_token", "scopes": ["authorized_user:read"], "client_auth": "post", "never_expires": true, "verify_url": "https://api.webflow.com/v2/token/authorized_by", "docs_url": "https://developers.webflow.com/data/reference/oauth-app", "checked_on": "2026-12-05"},
{"key": "x", "name": "X (Twitter) OAuth 2.0", "auth_type": "oauth2", "auth_url": "https://x.com/i/oauth2/authorize", "token_url": "https://api.x.com/2/oauth2/token", "revoke_url": "https://api.x.com/2/oauth2/revoke", "scopes": ["tweet.read", "users.read"], "required_scopes": ["offline.access"], "pkce": true, "rotates_refresh_token": true, "verify_url": "https://api.x.com/2/users/me", "docs_url": "https://docs.x.com/resources/fundamentals/authentication/oauth-2-0/authorization-code", "checked_on": "2026-12-05"},
{"key": "xero", "name": "Xero", "auth_type": "oauth2", "auth_url": "https://login.xero.com/identity/connect/authorize", "token_url": "https://identity.xero.com/connect/token", "revoke_url": "https://identity.xero.com/connect/revocation", "scopes": ["openid", "profile", "email"], "required_scopes": ["offline_access"], "client_auth": "basic", "pkce": true, "rotates_refresh_token": true, "verify_url": "https://api.xero.com/connections", "docs_url": "https://developer.xero.com/documentation/guides/oauth2/auth-flow/", "checked_on": "2026-12-05"},
{"key": "zendesk", "name": "Zendesk", "auth_type": "oauth2", "auth_url": "https://{subdomain}.zendesk.com/oauth/authorizations/new", "token_url": "https://{subdomain}.zendesk.com/oauth/tokens", "scopes": ["read"], "client_auth": "post", "body_format": "json", "pkce": true, "rotates_refresh_token": true, "tenant_params": {"subdomain": {"from": "auth", "example": "acme", "description": "The customer's Zendesk subdomain (acme in acme.zendesk.com)"}}, "allowed_hosts": ["*.zendesk.com"], "verify_url": "https://{subdomain}.zendesk.com/api/v2/users/me.json", "docs_url": "https://developer.zendesk.com/documentation/api-basics/authentication/refresh-token", "checked_on": "2026-12-05"},
{"key": "zoho", "name": "Zoho (US/EU/IN/JP/SA/UK/AE data centres)", "auth_type": "oauth2", "auth_url": "https://accounts.zoho.com/oauth/v2/auth", "token_url": "https://accounts.zoho.{region}/oauth/v2/token", "revoke_url": "https://accounts.zoho.{region}/oauth/v2/token/revoke", "scopes": ["AaaServer.profile.Read"], "scope_separator": ",", "client_auth": "post", "extra_params": {"authorize": {"access_type": "offline", "prompt": "consent"}}, "tenant_params": {"region": {"from": "auth", "example": "eu", "description": "Top-level domain label of the user's Zoho accounts server, taken from the accounts-server URL returned in the authorization callback (https://accounts.zoho.<region>); 'com' for the US data centre (the callback's location=us). Australia (com.au), China (com.cn) and Canada (zohocloud.ca) use the separate rows zoho_au, zoho_cn, zoho_ca."}}, "allowed_hosts": ["accounts.zoho.com", "accounts.zoho.eu", "accounts.zoho.in", "accounts.zoho.jp", "accounts.zoho.sa", "accounts.zoho.uk", "accounts.zoho.ae"], "settings": {"reauth_errors": ["invalid_code"]}, "verify_url": "https://accounts.zoho.{region}/oauth/user/info", "docs_url": "https://www.zoho.com/accounts/protocol/oauth/multi-dc.html", "checked_on": "2026-12-05"},
{"key": "zoho_au", "name": "Zoho (Australia data centre)", "auth_type": "oauth2", "auth_url": "https://accounts.zoho.com.au/oauth/v2/auth", "token_url": "https://accounts.zoho.com.au/oauth/v2/token", "revoke_url": "https://accounts.zoho.com.au/oauth/v2/token/revoke", "scopes": ["AaaServer.profile.Read"], "scope_separator": ",", "client_auth": "post", "extra_params": {"authorize": {"access_type": "offline", "prompt": "consent"}}, "settings": {"reauth_errors": ["invalid_code"]}, "verify_url": "https://accounts.zoho.com.au/oauth/user/info", "docs_url": "https://www.zoho.com/accounts/protocol/oauth/multi-dc.html", "checked_on": "2026-12-05"},
{"key": "zoho_ca", "name": "Zoho (Canada data centre)", "auth_type": "oauth2", "auth_url": "https://accounts.zohocloud.ca/oauth/v2/auth", "token_url": "https://accounts.zohocloud.ca/oauth/v2/token", "revoke_url": "https://accounts.zohocloud.ca/oauth/v2/token/revoke", "scopes": ["AaaServer.profile.Read"], "scope_separator": ",", "client_auth": "post", "extra_params": {"authorize": {"access_type": "offline", "prompt": "consent"}}, "settings": {"reauth_errors": ["invalid_code"]}, "verify_url": "https://accounts.zohocloud.ca/oauth/user/info", "docs_url": "https://www.zoho.com/accounts/protocol/oauth/multi-dc.html", "checked_on": "2026-12-05"},
{"key": "zoho_cn", "name": "Zoho (China data centre)", "auth_type": "oauth2", "auth_url": "https://accounts.zoho.com.cn/oauth/v2/auth", "token_url": "https://accounts.zoho.com.cn/oauth/v2/token", "revoke_url": "https://accounts.zoho.com.cn/oauth/v2/token/revoke", "scopes": ["AaaServer.profile.Read"], "scope_separator": ",", "client_auth": "post", "extra_params": {"authorize": {"access_type": "offline", "prompt": "consent"}}, "settings": {"reauth_errors": ["invalid_code"]}, "verify_url": "https://accounts.zoho.com.cn/oauth/user/info", "docs_url": "https://www.zoho.com/accounts/protocol/oauth/multi-dc.html", "checked_on": "2026-12-05"},
{"key": "zoom", "name": "Zoom", "auth_type": "oauth2", "auth_url": "https://zoom.us/oauth/authorize", "token_url": "https://zoom.us/oauth/token", "revoke_url": "https://zoom.us/oauth/revoke", "client_auth": "basic", "pkce": true, "rotates_refresh_token": true, "verify_url": "https://api.zoom.us/v2/users/me", "docs_url": "https://developers.zoom.us/docs/integrations/oauth/", "checked_on": "2026-12-05"}
]$catalogue$);
