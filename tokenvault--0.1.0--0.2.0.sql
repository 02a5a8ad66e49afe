-- tokenvault 0.1.0 -> 0.2.0: the OAuth2 engine (token requests, authorization
-- code with PKCE, provider quirks as client settings)

\echo Use "ALTER EXTENSION tokenvault UPDATE TO '0.2.0'" to load this file. \quit

------------------------------------------------------------------------------
-- Provider quirks are client settings
------------------------------------------------------------------------------

ALTER TABLE clients
    ADD COLUMN body_format     text NOT NULL DEFAULT 'form' CHECK (body_format IN ('form', 'json')),
    ADD COLUMN token_path      text CHECK (token_path <> ''),
    ADD COLUMN expires_in_unit text NOT NULL DEFAULT 'seconds'
                               CHECK (expires_in_unit IN ('seconds', 'milliseconds')),
    ADD COLUMN scope_separator text NOT NULL DEFAULT ' ' CHECK (scope_separator IN (' ', ',')),
    ADD COLUMN pkce            boolean NOT NULL DEFAULT true,
    ADD COLUMN refresh_every   integer CHECK (refresh_every > 0);

GRANT SELECT (body_format, token_path, expires_in_unit, scope_separator, pkce, refresh_every)
    ON clients TO tokenvault_app;

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
REVOKE ALL ON auth_states FROM PUBLIC;

CREATE FUNCTION _token_request(config jsonb, kind text, params jsonb) RETURNS jsonb
    LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'tv_token_request';
CREATE FUNCTION _random_token(bytes integer) RETURNS text
    LANGUAGE c STRICT VOLATILE AS 'MODULE_PATHNAME', 'tv_random_token';
REVOKE ALL ON FUNCTION _token_request(jsonb, text, jsonb), _random_token(integer) FROM PUBLIC;

CREATE OR REPLACE FUNCTION _client_settings(type text, settings jsonb, creating boolean) RETURNS jsonb
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

CREATE OR REPLACE FUNCTION create_client(name text, service text, type text, settings jsonb DEFAULT '{}')
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
                 THEN tokenvault._seal_jsonb(jsonb_build_object('client_secret', s->'client_secret'),
                                             'client:' || new_id) END,
            tokenvault._caller(), coalesce(s->>'visibility', 'shared'),
            t.body_format, t.token_path, t.expires_in_unit, t.scope_separator, t.pkce, t.refresh_every);
    RETURN new_id;
END
$$;

-- Settings given replace those stored; a key set to null clears it.
CREATE OR REPLACE FUNCTION update_client(client_id uuid, settings jsonb) RETURNS void
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
                              THEN tokenvault._seal_jsonb(jsonb_build_object('client_secret', s->'client_secret'),
                                                          'client:' || t.id)
                              WHEN 'client_secret' = ANY (cleared) THEN NULL ELSE t.secret END,
        body_format = q.body_format, token_path = q.token_path, expires_in_unit = q.expires_in_unit,
        scope_separator = q.scope_separator, pkce = q.pkce, refresh_every = q.refresh_every,
        updated_at     = now()
     WHERE t.id = c.id;
END
$$;

------------------------------------------------------------------------------
-- Token requests
------------------------------------------------------------------------------

-- What oauth2.c needs to know of a client (and of the auth, for URL
-- templates), as one object.  Holds the client secret: internal only.
CREATE FUNCTION _client_config(c tokenvault.clients, credential jsonb DEFAULT NULL) RETURNS jsonb
    LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT jsonb_strip_nulls(jsonb_build_object(
        'token_url', c.token_url, 'refresh_url', c.refresh_url, 'revoke_url', c.revoke_url, 'client_id', c.client_id,
        'client_secret', CASE WHEN c.secret IS NOT NULL
                              THEN tokenvault._open_jsonb(c.secret, 'client:' || c.id)->>'client_secret' END,
        'client_auth', c.client_auth, 'body_format', c.body_format, 'token_path', c.token_path,
        'extra_params', c.extra_params, 'template_values', credential))
$$;

-- Send a token request; raise the provider's refusal as an error.
CREATE FUNCTION _fetch_token(c tokenvault.clients, kind text, params jsonb, credential jsonb DEFAULT NULL)
    RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v jsonb := tokenvault._token_request(tokenvault._client_config(c, credential), kind, params);
BEGIN
    IF (v->>'ok')::boolean THEN
        RETURN tokenvault._normalize_token(c, v->'token');
    END IF;
    PERFORM tokenvault._raise_refusal(c, v);
END
$$;

-- A provider's failure as an error: needs_reauth 28000, retryable 08000,
-- anything else 38000.  The message never holds a secret (oauth2.c).
CREATE FUNCTION _raise_refusal(c tokenvault.clients, v jsonb, what text DEFAULT 'token request') RETURNS void
    LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    CASE v->>'class'
        WHEN 'needs_reauth' THEN
            RAISE EXCEPTION '% to % failed: %', what, c.service, v->>'message'
                USING ERRCODE = 'invalid_authorization_specification',
                      HINT = CASE WHEN v->>'error' = 'invalid_client'
                                  THEN 'The provider does not accept the client''s credentials; check its client_id and client_secret.'
                                  ELSE 'The grant is no longer valid: the user must authorize again.' END;
        WHEN 'retryable' THEN
            RAISE EXCEPTION '% to % failed: %', what, c.service, v->>'message'
                USING ERRCODE = 'connection_exception',
                      HINT = CASE WHEN v ? 'retry_after' THEN format('The provider asks to retry after %s s.', v->>'retry_after')
                                  ELSE 'The failure is temporary; try again later.' END;
        ELSE
            RAISE EXCEPTION '% to % failed: %', what, c.service, v->>'message'
                USING ERRCODE = 'external_routine_exception',
                      HINT = 'Check the client''s settings (tokenvault.update_client) against the provider''s documentation.';
    END CASE;
END
$$;

-- A provider's token object made ready to import: expires_in in seconds
-- (or dropped when it is not a usable number, so token_lifetime applies).
CREATE FUNCTION _normalize_token(c tokenvault.clients, t jsonb) RETURNS jsonb
    LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
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
        t := CASE WHEN n IS NULL OR n > 3153600000 THEN t - k ELSE jsonb_set(t, ARRAY[k], to_jsonb(round(n))) END;
    END LOOP;
    -- an empty refresh token is none; a null field is no field
    RETURN jsonb_strip_nulls(CASE WHEN t->>'refresh_token' = '' THEN t - 'refresh_token' ELSE t END);
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

CREATE OR REPLACE FUNCTION create_auth(user_id uuid, client_id uuid, name text DEFAULT NULL,
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
            tokenvault._seal_jsonb(f->'secret', 'auth:' || new_id),
            CASE WHEN data ? 'access_token' AND c.grant_type IN ('client_credentials', 'password') THEN now() END);
    RETURN new_id;
END
$$;

------------------------------------------------------------------------------
-- Authorization code with PKCE
------------------------------------------------------------------------------

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
            tokenvault._seal_text(verifier, 'state:' || st), now() + interval '10 minutes');

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
                                   THEN tokenvault._open_text(s.verifier, 'state:' || s.state) END)));
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

------------------------------------------------------------------------------
-- Refresh: planned and applied by the refresher (refresh.c), each step in a
-- short transaction of its own, the request between them with none open.
------------------------------------------------------------------------------

-- What request would renew this auth's token, or {"skip": why} when none
-- is needed ("valid") or none can be made ("needs_reauth").
CREATE FUNCTION _refresh_plan(auth_id uuid, force boolean, min_validity integer) RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    a tokenvault.auths;
    c tokenvault.clients;
    cred jsonb;
BEGIN
    SELECT * INTO a FROM tokenvault.auths WHERE id = auth_id;
    IF NOT FOUND THEN
        RETURN '{"skip": "gone", "message": "the auth was deleted"}';
    END IF;
    IF NOT force AND a.expires_at > now() + min_validity * interval '1 second' THEN
        RETURN '{"skip": "valid"}';
    END IF;
    c := tokenvault._client_must_exist(a.client_id);
    cred := tokenvault._open_jsonb(a.secret, 'auth:' || a.id);
    IF cred ? 'refresh_token' THEN
        RETURN jsonb_build_object('kind', 'refresh', 'version', a.version::text,
            'config', tokenvault._client_config(c, cred),
            'params', jsonb_build_object('grant_type', 'refresh_token', 'refresh_token', cred->>'refresh_token'));
    ELSIF c.grant_type IN ('client_credentials', 'password') THEN
        RETURN jsonb_build_object('kind', 'token', 'version', a.version::text,
            'config', tokenvault._client_config(c, cred),
            'params', tokenvault._direct_grant_params(c, cred, a.scopes));
    END IF;
    UPDATE tokenvault.auths SET status = 'needs_reauth',
           last_error = 'the token expired and there is no refresh token', updated_at = now()
     WHERE id = a.id AND status <> 'needs_reauth';
    RETURN '{"skip": "needs_reauth", "message": "the token expired and there is no refresh token"}';
END
$$;

-- Store a token request's verdict, unless the auth changed meanwhile (an
-- edit wins over a refresh).  A new token replaces the old fields; an
-- omitted refresh token keeps the old one.
CREATE FUNCTION _refresh_apply(auth_id uuid, version bigint, verdict jsonb) RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    a tokenvault.auths;
    c tokenvault.clients;
    t jsonb;
    cred jsonb;
    f jsonb;
BEGIN
    SELECT * INTO a FROM tokenvault.auths WHERE id = auth_id FOR UPDATE;
    IF NOT FOUND THEN
        RETURN '{"outcome": "stale", "message": "the auth was deleted"}';
    ELSIF a.version <> _refresh_apply.version THEN
        RETURN '{"outcome": "stale", "message": "the auth was changed meanwhile"}';
    END IF;
    c := tokenvault._client_must_exist(a.client_id);
    IF NOT (verdict->>'ok')::boolean THEN
        UPDATE tokenvault.auths SET
            status = CASE verdict->>'class' WHEN 'needs_reauth' THEN 'needs_reauth'
                                            WHEN 'error' THEN 'error' ELSE status END,
            failure_count = failure_count + 1,
            last_error = verdict->>'message',
            updated_at = now()
         WHERE id = a.id;
        RETURN jsonb_build_object('outcome', verdict->>'class', 'message', verdict->>'message');
    END IF;

    t := tokenvault._normalize_token(c, verdict->'token');
    cred := tokenvault._open_jsonb(a.secret, 'auth:' || a.id);
    -- the old token's own fields go; credentials (username, password) and an
    -- unrotated refresh token stay
    cred := (cred - ARRAY['access_token', 'id_token']) || t;
    f := tokenvault._auth_fields(c, cred, CASE WHEN t ? 'scope' THEN NULL ELSE a.scopes END);
    UPDATE tokenvault.auths SET
        secret = tokenvault._seal_jsonb(f->'secret', 'auth:' || a.id),
        token_type = f->>'token_type',
        scopes = ARRAY(SELECT jsonb_array_elements_text(f->'scopes')),
        expires_at = (f->>'expires_at')::timestamptz,
        refresh_expires_at = coalesce((f->>'refresh_expires_at')::timestamptz,
                                      CASE WHEN t ? 'refresh_token' THEN NULL ELSE a.refresh_expires_at END),
        status = 'active', failure_count = 0, last_error = NULL, expiry_notified_at = NULL,
        last_refreshed_at = now(), version = a.version + 1, updated_at = now()
     WHERE id = a.id;
    RETURN '{"outcome": "refreshed"}';
END
$$;

CREATE FUNCTION refresh_auth(auth_id uuid) RETURNS timestamptz
    LANGUAGE c VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'tv_refresh_auth';

CREATE FUNCTION _revoke_request(config jsonb, params jsonb) RETURNS jsonb
    LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'tv_revoke_request';

-- With revoke, the grant is revoked at the provider first (RFC 7009: the
-- refresh token, which takes its access tokens with it, else the access
-- token); if that fails nothing is deleted.
CREATE OR REPLACE FUNCTION delete_auth(auth_id uuid, revoke boolean DEFAULT false) RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    a tokenvault.auths := tokenvault._auth_must_exist(auth_id);
    c tokenvault.clients;
    cred jsonb;
    v jsonb;
BEGIN
    IF coalesce(revoke, false) THEN
        c := tokenvault._client_must_exist(a.client_id);
        IF c.revoke_url IS NULL THEN
            RAISE EXCEPTION 'client % has no revoke_url', c.id
                USING ERRCODE = 'object_not_in_prerequisite_state',
                      HINT = 'Set one with tokenvault.update_client(), or delete without revoke.';
        END IF;
        cred := tokenvault._open_jsonb(a.secret, 'auth:' || a.id);
        IF cred ? 'refresh_token' OR cred ? 'access_token' THEN
            v := tokenvault._revoke_request(tokenvault._client_config(c, cred), jsonb_build_object(
                     'token', coalesce(cred->>'refresh_token', cred->>'access_token'),
                     'token_type_hint', CASE WHEN cred ? 'refresh_token' THEN 'refresh_token' ELSE 'access_token' END));
            IF NOT (v->>'ok')::boolean THEN
                PERFORM tokenvault._raise_refusal(c, v, 'revocation');
            END IF;
        END IF;
    END IF;
    DELETE FROM tokenvault.auths WHERE id = a.id;
END
$$;

------------------------------------------------------------------------------
-- Privileges of what is new
------------------------------------------------------------------------------

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA tokenvault FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    authorize_url(uuid, uuid, text, text, text[], uuid), complete_authorization(text, text),
    refresh_auth(uuid)
    TO tokenvault_app;
