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

------------------------------------------------------------------------------
-- Functions
------------------------------------------------------------------------------

-- replaced by exact-typed helpers, and by _publish with the event's client
DROP FUNCTION _require(anyelement, text);
DROP FUNCTION _publish(text, uuid, jsonb);
-- the stats view gains refreshes_unconfirmed: made again in the tail
DROP VIEW stats;
DROP FUNCTION _worker_stats();
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
        tokenvault._url_problem('revoke_url', c.revoke_url, c.allowed_hosts, fields))
$$;

CREATE FUNCTION _check_client_urls(c tokenvault.clients) RETURNS void
    LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    problem text := tokenvault._client_url_problem(c, NULL);
    secret_field text := substring(concat_ws(' ', c.token_url, c.refresh_url, c.revoke_url)
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
        'api_key_header', 'api_key_prefix', 'visibility', 'allowed_hosts', 'allow_insecure_http'];
    oauth2_only constant text[] := ARRAY['grant', 'client_id', 'client_secret', 'auth_url', 'token_url',
        'refresh_url', 'revoke_url', 'scopes', 'client_auth', 'token_lifetime', 'extra_params',
        'body_format', 'token_path', 'expires_in_unit', 'scope_separator', 'pkce', 'refresh_every',
        'allowed_hosts', 'allow_insecure_http'];
    choices constant jsonb := '{"client_auth": ["basic", "post"], "visibility": ["private", "shared"],
        "body_format": ["form", "json"], "expires_in_unit": ["seconds", "milliseconds"],
        "scope_separator": [" ", ","]}';
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
        ELSIF k IN ('pkce', 'allow_insecure_http') THEN
            IF jsonb_typeof(settings->k) <> 'boolean' THEN
                RAISE EXCEPTION 'setting "%" must be true or false', k USING ERRCODE = 'invalid_parameter_value';
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
    s := tokenvault._client_settings(type, settings, true);
    t := tokenvault._client_quirks(s, t);
    INSERT INTO tokenvault.clients (id, name, service, type, grant_type, client_id, auth_url, token_url,
            refresh_url, revoke_url, scopes, client_auth, token_lifetime, extra_params,
            api_key_header, api_key_prefix, secret, owner, visibility,
            body_format, token_path, expires_in_unit, scope_separator, pkce, refresh_every, allowed_hosts,
            allow_insecure_http)
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
            coalesce((s->>'allow_insecure_http')::boolean, false))
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
                            FROM unnest(ARRAY[old.token_url, old.refresh_url, old.revoke_url]) u
                           WHERE u IS NOT NULL);
    moved text;
    changed jsonb;
BEGIN
    SELECT x.setting INTO moved
      FROM (VALUES (1, 'token_url', new.token_url), (2, 'refresh_url', new.refresh_url),
                   (3, 'revoke_url', new.revoke_url)) x(n, setting, url)
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
    -- Fields that fill the client's URL templates are judged as they are
    -- stored, whoever wrote them: an application, or a provider's token
    -- response (a refresh's then fails as a token that cannot be stored).
    -- The request judges them again, against the settings of its moment.
    IF c.allowed_hosts IS NOT NULL OR concat(c.token_url, c.refresh_url, c.revoke_url) LIKE '%{%' THEN
        k := tokenvault._client_url_problem(c, secret);
        IF k IS NOT NULL THEN
            RAISE EXCEPTION '%', k
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'A field that fills a URL of the client may only make a host its allowed_hosts lists.';
        END IF;
    END IF;
    IF c.type = 'oauth2' AND NOT tokenvault._header_token_safe(coalesce(data->>'token_type', 'Bearer')) THEN
        RAISE EXCEPTION 'token_type is not an HTTP authentication scheme'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'It becomes the scheme of the Authorization header: 1 to 64 letters, digits or !#$%&''*+.^_`|~- .';
    END IF;
    RETURN jsonb_build_object(
        'secret', secret,
        'token_type', CASE WHEN c.type = 'oauth2' THEN coalesce(data->>'token_type', 'Bearer') END,
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
    s jsonb;
BEGIN
    PERFORM tokenvault._admit_app();
    CASE c.type
        WHEN 'oauth2' THEN
            -- one stored before 0.7.0 checked no token type
            IF NOT tokenvault._header_token_safe(a.token_type) THEN
                RAISE EXCEPTION 'auth % has a token type that is not an HTTP authentication scheme', a.id
                    USING ERRCODE = 'invalid_parameter_value',
                          HINT = 'Import the token again with tokenvault.update_auth(), or refresh it.';
            END IF;
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
        'allow_insecure_http', c.allow_insecure_http))
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

CREATE FUNCTION _redirect_uri_safe(redirect_uri text) RETURNS boolean
    LANGUAGE sql IMMUTABLE STRICT SET search_path = pg_catalog, pg_temp AS $$
    SELECT redirect_uri ~* '^https://[^/?#@[:space:]]'
        OR redirect_uri ~* ('^http://(localhost|127(\.' || octet || '){3}|\[::1\])(:[0-9]{1,5})?([/?#][^[:space:]]*)?$')
      FROM (VALUES ('(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])')) o (octet)
$$;

CREATE OR REPLACE FUNCTION authorize_url(client_id uuid, user_id uuid, redirect_uri text, name text DEFAULT NULL,
                              scopes text[] DEFAULT NULL, auth_id uuid DEFAULT NULL) RETURNS text
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    c tokenvault.clients := tokenvault._client_must_exist(client_id);
    a tokenvault.auths;
    st text := tokenvault._random_token(24);
    verifier text;
    params jsonb;
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
                                   THEN tokenvault._open_state(s.verifier, s.state) END)));
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
                 'client.urls_changed', 'user_tokens.granted', 'user_tokens.revoked', 'auth.refresh_lost']
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
