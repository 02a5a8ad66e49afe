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

-- A token type goes into the Authorization header as its scheme: an HTTP
-- token (RFC 9110), never a space, CR or LF that would start another header.
CREATE FUNCTION _header_token_safe(value text) RETURNS boolean
    LANGUAGE sql IMMUTABLE STRICT SET search_path = pg_catalog, pg_temp AS $$
    SELECT value ~ '^[-A-Za-z0-9!#$%&''*+.^_`|~]{1,64}$'
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

CREATE FUNCTION create_auth(user_id uuid, client_id uuid, name text DEFAULT NULL,
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

CREATE FUNCTION _auth_must_exist(auth_id uuid) RETURNS tokenvault.auths
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

-- New data replaces the whole credential, as a new import would; the edit
-- bumps the version, so a refresh already under way does not overwrite it.
CREATE FUNCTION update_auth(auth_id uuid, name text DEFAULT NULL, data jsonb DEFAULT NULL) RETURNS void
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

CREATE FUNCTION access_token(auth_id uuid) RETURNS text
    LANGUAGE c VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'tv_access_token';

-- The whole credential, opened: the secret fields with the plain ones.
CREATE FUNCTION credentials(auth_id uuid) RETURNS jsonb
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

-- The HTTP headers that authenticate a request with this auth.
CREATE FUNCTION http_headers(auth_id uuid) RETURNS jsonb
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

-- The headers of an auth whose token (oauth2, api_key) or credential
-- (basic) the caller has opened.
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
