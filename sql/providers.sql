-- Providers: the catalogue of well-known services, clients made from it, and add_provider

-- How far apart two keys are (PostgreSQL's Levenshtein distance), for the
-- hint that names the keys closest to an unknown one.
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

-- What a row may set beyond its columns: quirks, never a secret, an id, a
-- URL or plain http, which would hide where its clients connect.
CREATE FUNCTION _provider_quirks() RETURNS text[]
    LANGUAGE sql IMMUTABLE AS $$
    SELECT ARRAY['expires_in_unit', 'field_names', 'issued_at_unit', 'error_field', 'error_description_field',
                 'reauth_errors', 'token_scheme', 'token_header', 'verify_headers', 'refresh_every',
                 'token_path_exchange_only']
$$;

-- The settings a catalogue row stands for, as create_client takes them.
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

-- The settings a catalogue row holds that a client may have had from an
-- older row: re-applying a row clears those it no longer holds.
CREATE FUNCTION _provider_managed() RETURNS text[]
    LANGUAGE sql IMMUTABLE AS $$
    SELECT ARRAY['auth_url', 'refresh_url', 'revoke_url', 'scopes', 'required_scopes', 'scope_separator',
                 'client_auth', 'body_format', 'token_path', 'token_lifetime', 'never_expires', 'pkce',
                 'extra_params', 'refresh_scopes', 'api_key_header', 'api_key_prefix', 'allowed_hosts',
                 'verify_url', 'verify_method', 'verify_ok_field', 'expires_in_unit', 'field_names',
                 'issued_at_unit', 'error_field', 'error_description_field', 'reauth_errors', 'token_scheme', 'token_header', 'verify_headers', 'token_path_exchange_only']
$$;

-- A value the administrator gives for a client-wide {param}: it may fill a
-- whole host (a Keycloak server, an Okta domain), as the URL itself could,
-- but no more than a host name and port, or a path segment.
CREATE FUNCTION _provider_param_ok(value text) RETURNS boolean
    LANGUAGE sql IMMUTABLE STRICT AS $$
    SELECT value ~ '^[A-Za-z0-9]([A-Za-z0-9._~-]*[A-Za-z0-9])?(:[0-9]{1,5})?$' AND value !~ '\.\.'
$$;

-- The URL settings with the client-wide params filled in.
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

-- A client's settings from catalogue row key, under those given (which
-- win); given->'params' fills the row's client-wide {params}.
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

-- Add a provider to the catalogue, or replace one.  A row added here is
-- kept across ALTER EXTENSION UPDATE (which replaces only the rows the
-- extension shipped).  Replacing a shipped row, or another role's, takes a
-- superuser: whoever else creates a client from it would send its secret
-- wherever the row says.
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

-- A row from a JSON object: the columns it names, defaults for the others.
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

-- What a catalogue row must hold: its settings are ones create_client
-- takes (checked as it checks them), every URL is https, and every {param}
-- is declared.
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

-- A row's settings as a client would have them, its client-wide params
-- filled with their examples (to check the row, not to use it).
CREATE FUNCTION _provider_settings_of(p tokenvault.providers) RETURNS jsonb
    LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT tokenvault._fill_client_params(tokenvault._provider_row_settings(p),
        coalesce((SELECT jsonb_object_agg(x.key, coalesce(x.value->>'example', 'example'))
                    FROM jsonb_each(p.tenant_params) x WHERE x.value->>'from' = 'client'), '{}'))
$$;

-- Load the rows the extension ships (catalogue.sql), replacing the ones
-- it shipped before and keeping those add_provider added.  A superuser's
-- row under a shipped key overrides it; another role's row under a key the
-- extension now ships (added before the extension knew the provider) moves
-- aside to "<key>_custom", so that the shipped key means the shipped row.
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
