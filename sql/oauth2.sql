-- OAuth2 token requests, the authorization code flow with PKCE, and revocation

CREATE FUNCTION _token_request(config jsonb, kind text, params jsonb) RETURNS tokenvault.verdict
    LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'tv_token_request';

CREATE FUNCTION _random_token(bytes integer) RETURNS text
    LANGUAGE c STRICT VOLATILE AS 'MODULE_PATHNAME', 'tv_random_token';

-- What oauth2.c needs to know of a client (and of the auth, for URL
-- templates, and the hosts they may become), as one object.  Holds the
-- client secret: internal only.
-- Inlined into its callers: every name is qualified.
CREATE FUNCTION _client_config(c tokenvault.clients, credential jsonb DEFAULT NULL) RETURNS jsonb
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
                      HINT = CASE WHEN v.message LIKE 'refused by the host policy:%'
                                  THEN 'A loopback, private or link-local host is reached only when tokenvault.allowed_internal_hosts '
                                       '(postgresql.conf, a superuser''s) lists its name or a network holding its address.'
                                  ELSE 'Check the client''s settings (tokenvault.update_client) against the provider''s documentation.' END;
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

-- The parameters of a grant that needs no user at the provider.
CREATE FUNCTION _direct_grant_params(c tokenvault.clients, credential jsonb, scopes text[]) RETURNS jsonb
    LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT jsonb_strip_nulls(jsonb_build_object(
        'grant_type', c.grant_type,
        'username', CASE WHEN c.grant_type = 'password' THEN credential->>'username' END,
        'password', CASE WHEN c.grant_type = 'password' THEN credential->>'password' END,
        'scope', nullif(array_to_string(scopes, c.scope_separator), '')))
$$;

-- Where the provider may send an authorization code: over TLS, or to the
-- user's own machine.  The host of an http URL is matched whole (no
-- userinfo, no other name that begins like a loopback one).
CREATE FUNCTION _redirect_uri_safe(redirect_uri text) RETURNS boolean
    LANGUAGE sql IMMUTABLE STRICT SET search_path = pg_catalog, pg_temp AS $$
    SELECT redirect_uri ~* '^https://[^/?#@[:space:]]'
        OR redirect_uri ~* ('^http://(localhost|127(\.' || octet || '){3}|\[::1\])(:[0-9]{1,5})?([/?#][^[:space:]]*)?$')
      FROM (VALUES ('(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])')) o (octet)
$$;

-- fields: the auth's own fields its client's URLs name, which it does not
-- have yet (Shopify's {shop}); they fill the authorization URL and become
-- the auth's.
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

-- A URL setting of the client filled from fields; an error names what is
-- wrong (a field it lacks, a host allowed_hosts does not admit).  The
-- authorization URL receives no secret: it is judged only when it names
-- fields (a fixed one need not be among allowed_hosts).
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

-- A URL filled from fields, under allowed_hosts (url_template.c); an error
-- says why it may not be requested.
CREATE FUNCTION _url_fill(setting text, url text, allowed_hosts text[], fields jsonb) RETURNS text
    LANGUAGE c IMMUTABLE AS 'MODULE_PATHNAME', 'tv_url_fill_sql';

CREATE FUNCTION _form_encode(value text) RETURNS text
    LANGUAGE sql IMMUTABLE STRICT SET search_path = pg_catalog, pg_temp AS $$
    SELECT string_agg(CASE WHEN b BETWEEN 48 AND 57 OR b BETWEEN 65 AND 90 OR b BETWEEN 97 AND 122
                                OR b IN (45, 46, 95, 126)
                           THEN chr(b) ELSE '%' || upper(lpad(to_hex(b), 2, '0')) END, '' ORDER BY i)
      FROM (SELECT i, get_byte(convert_to(value, 'UTF8'), i) AS b
              FROM generate_series(0, octet_length(convert_to(value, 'UTF8')) - 1) i) bytes
$$;

-- Take an authorization state for good (true), or find it taken (false):
-- committed apart from the caller's transaction, by a worker of its own
-- (autonomous.c), so that nothing that fails afterwards gives it back.
-- made_by: the row's xmin as the caller read it.
CREATE FUNCTION _consume_state(state text, made_by xid) RETURNS boolean
    LANGUAGE c STRICT VOLATILE AS 'MODULE_PATHNAME', 'tv_consume_state';

CREATE FUNCTION complete_authorization(state text, code text) RETURNS uuid
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

CREATE FUNCTION _revoke_request(config jsonb, params jsonb) RETURNS tokenvault.verdict
    LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'tv_revoke_request';
