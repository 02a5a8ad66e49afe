-- Clients: OAuth2 clients and credential shapes, their settings and provider quirks

-- URL templates (url_template.c): why a URL setting, its placeholders filled
-- from an auth's fields (those missing do not count), may not be requested;
-- and why an allowed_hosts entry is no host pattern.  NULL when all is well.
CREATE FUNCTION _url_problem(setting text, url text, allowed_hosts text[], fields jsonb) RETURNS text
    LANGUAGE c IMMUTABLE PARALLEL SAFE AS 'MODULE_PATHNAME', 'tv_url_problem';

CREATE FUNCTION _host_pattern_problem(pattern text) RETURNS text
    LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'tv_host_pattern_problem_sql';

-- Why a client's token, refresh or revoke URL, filled from these fields,
-- may not be requested, naming the first that may not; NULL when each may.
CREATE FUNCTION _client_url_problem(c tokenvault.clients, fields jsonb) RETURNS text
    LANGUAGE sql IMMUTABLE AS $$
    SELECT COALESCE(
        tokenvault._url_problem('token_url', c.token_url, c.allowed_hosts, fields),
        tokenvault._url_problem('refresh_url', c.refresh_url, c.allowed_hosts, fields),
        tokenvault._url_problem('revoke_url', c.revoke_url, c.allowed_hosts, fields),
        tokenvault._url_problem('verify_url', c.verify_url, c.allowed_hosts, fields),
        CASE WHEN c.auth_url LIKE '%{%' THEN tokenvault._url_problem('auth_url', c.auth_url, c.allowed_hosts, fields) END)
$$;

-- The {fields} a client's URLs name that fields lacks: what an auth of it
-- must have.
CREATE FUNCTION _missing_url_fields(c tokenvault.clients, fields jsonb) RETURNS text[]
    LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce(array_agg(DISTINCT m[1] ORDER BY m[1]), '{}')
      FROM regexp_matches(concat_ws(' ', c.auth_url, c.token_url, c.refresh_url, c.revoke_url, c.verify_url),
                          '\{([A-Za-z0-9_]+)\}', 'g') m
     WHERE coalesce(fields->>m[1], '') = ''
$$;

-- A client's URLs as saved: a URL with {placeholders} needs allowed_hosts,
-- and a fixed host must be one of them; a secret field never fills a URL
-- (it would travel in the clear, into providers' and proxies' logs).
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

-- Check a settings object and return it with defaults filled in for a type.
-- Unknown keys are refused: a misspelt "client_secert" must not pass silently.
CREATE FUNCTION _client_settings(type text, settings jsonb, creating boolean) RETURNS jsonb
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

CREATE FUNCTION create_client(name text, service text, type text, settings jsonb DEFAULT '{}')
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

CREATE FUNCTION _client_must_exist(client_id uuid) RETURNS tokenvault.clients
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

-- Settings given replace those stored; a key set to null clears it.  A
-- change of URLs is an event, and one that would send the client secret or
-- users' tokens to another host needs the secret again (_check_url_move).
CREATE FUNCTION update_client(client_id uuid, settings jsonb) RETURNS void
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

-- Where a URL sends what it sends: its scheme, host and port, in lower case
-- with the scheme's default port written out, so that https://Host/ and
-- https://host:443/ are one place.  Read as libcurl reads a URL: the host
-- follows any userinfo (up to an @) and ends at the port, path, query or
-- fragment.  A host of a template ({placeholder}) is compared as written.
CREATE FUNCTION _url_origin(url text) RETURNS text
    LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT lower(m[1]) || '://' || lower(m[2]) || ':'
           || coalesce(nullif(m[3], ''), CASE lower(m[1]) WHEN 'https' THEN '443' ELSE '80' END)
      FROM regexp_match(url, '^([a-z][a-z0-9+.-]*)://(?:[^/?#@]*@)?(\[[^]]*\]|[^:/?#]*)(?::([^/?#]*))?', 'i') m
$$;

-- The token, refresh and revoke URLs receive the client secret and users'
-- refresh and access tokens.  Pointing one of them at a place none of them
-- pointed at before would let whoever manages clients collect those, so it
-- takes the client secret, given again in the same call: a host that gets
-- users' refresh tokens then also gets a secret that whoever moved it knew
-- already, and the tokens are of no use without the secret the provider
-- knows.  A client without a secret has nothing to prove that with (its
-- refresh tokens are good on their own), so its URLs stay where they are.
-- Every change of the client's URLs is an event.
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

CREATE FUNCTION delete_client(client_id uuid, force boolean DEFAULT false) RETURNS void
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
