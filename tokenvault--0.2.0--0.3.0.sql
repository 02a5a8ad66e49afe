-- tokenvault 0.2.0 -> 0.3.0: the background worker (proactive refresh with
-- backoff, expiry notices), events over NOTIFY, signed webhooks, stats

\echo Use "ALTER EXTENSION tokenvault UPDATE TO '0.3.0'" to load this file. \quit

------------------------------------------------------------------------------
-- Events and webhooks
------------------------------------------------------------------------------

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

CREATE FUNCTION _wake_worker(at timestamptz) RETURNS void
    LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'tv_wake_worker';

-- A setting in seconds (they show as '60s', '2min', '7d') as an interval.
-- (No SET search_path on this and the other one-line helpers, so that they
-- are inlined; every name in them is qualified.)
CREATE FUNCTION _setting_interval(name text) RETURNS interval
    LANGUAGE sql STABLE AS $$
    SELECT pg_catalog.current_setting(name)::pg_catalog.interval
$$;

-- Record an event, NOTIFY it and queue it for the webhooks that want it,
-- all in the caller's transaction.  The payload is Tray's expiry payload
-- with the kind in "event"; user-given text is cut short so that it stays
-- well within NOTIFY's 8000 bytes.  Never a secret.
--
-- This runs for every refresh, so it is one INSERT where it could be three
-- statements, and it has no SET search_path (a GUC save and restore per
-- call): it is only called by functions and triggers that set it.
CREATE FUNCTION _emit(kind text, a tokenvault.auths, expires timestamptz DEFAULT NULL, error text DEFAULT NULL)
    RETURNS void
    LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    p jsonb;
    event_id bigint;
    delivered timestamptz;
BEGIN
    INSERT INTO tokenvault.events (kind, auth_id, payload, delivered_at)
    VALUES (kind, a.id,
            jsonb_build_object(
                'event', kind,
                'authentication_name', left(a.name, 400),
                'service_name', left(a.service, 400),
                'user_id', a.user_id,
                'authId', a.id,
                'external_user_id', (SELECT left(u.external_user_id, 400) FROM tokenvault.users u WHERE u.id = a.user_id),
                'expires_at', to_char(coalesce(expires, a.expires_at) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'))
            || CASE WHEN error IS NULL THEN '{}' ELSE jsonb_build_object('error', left(error, 400)) END,
            -- no webhook wants it: delivered by the NOTIFY alone
            CASE WHEN NOT EXISTS (SELECT FROM tokenvault.webhooks w
                                   WHERE w.enabled AND (w.kinds IS NULL OR kind = ANY (w.kinds))) THEN now() END)
    RETURNING id, payload, delivered_at INTO event_id, p, delivered;
    IF delivered IS NULL THEN
        INSERT INTO tokenvault.webhook_deliveries (webhook_id, event_id, auth_id)
            SELECT w.id, event_id, a.id FROM tokenvault.webhooks w
             WHERE w.enabled AND (w.kinds IS NULL OR kind = ANY (w.kinds));
        PERFORM tokenvault._wake_worker(now());
    END IF;
    PERFORM pg_notify('tokenvault', p::text);
END
$$;

CREATE FUNCTION add_webhook(url text, secret text, kinds text[] DEFAULT NULL) RETURNS uuid
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    new_id uuid := gen_random_uuid();
    known constant text[] := ARRAY['auth.refreshed', 'auth.refresh_failed', 'auth.needs_reauth',
        'auth.recovered', 'auth.expiring', 'auth.expired', 'auth.deleted'];
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
    ELSIF kinds IS NOT NULL AND NOT kinds <@ known THEN
        RAISE EXCEPTION 'unknown event kind in %', kinds
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Event kinds are ' || array_to_string(known, ', ') || '.';
    END IF;
    INSERT INTO tokenvault.webhooks (id, url, secret, kinds)
    VALUES (new_id, url, tokenvault._seal_text(secret, 'webhook:' || new_id), kinds);
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

------------------------------------------------------------------------------
-- The schedule: refresh_at, kept by a trigger whichever way a row is written
------------------------------------------------------------------------------

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
            refreshable := tokenvault._open_jsonb(a.secret, 'auth:' || a.id) ? 'refresh_token';
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

-- Auths stored before there was a schedule get one now.
UPDATE auths SET refresh_at = _refresh_at(auths) WHERE refresh_at IS DISTINCT FROM _refresh_at(auths);

-- The user's auths go first, so that their auth.deleted events still name the user.
CREATE OR REPLACE FUNCTION delete_user(user_id uuid) RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM tokenvault._user_must_exist(user_id);
    DELETE FROM tokenvault.auths a WHERE a.user_id = delete_user.user_id;
    DELETE FROM tokenvault.users WHERE id = user_id;
END
$$;

------------------------------------------------------------------------------
-- Refresh results: schedule, backoff and events
------------------------------------------------------------------------------

-- The worker plans and applies every refresh through the functions below,
-- so they are kept cheap: no SET search_path where a caller already sets it
-- (a SET costs a GUC save and restore per call, and keeps a SQL function
-- from being inlined), no query where an expression does.

-- Inlined into its callers: every name is qualified.
CREATE OR REPLACE FUNCTION _client_config(c tokenvault.clients, credential jsonb DEFAULT NULL) RETURNS jsonb
    LANGUAGE sql STABLE AS $$
    SELECT pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
        'token_url', c.token_url, 'refresh_url', c.refresh_url, 'revoke_url', c.revoke_url, 'client_id', c.client_id,
        'client_secret', CASE WHEN c.secret IS NOT NULL
                              THEN tokenvault._open_jsonb(c.secret, pg_catalog.textcat('client:', c.id::text))
                                   OPERATOR(pg_catalog.->>) 'client_secret' END,
        'client_auth', c.client_auth, 'body_format', c.body_format, 'token_path', c.token_path,
        'extra_params', c.extra_params, 'template_values', credential))
$$;

-- (The exception block, a subtransaction, is entered only for a value.)
CREATE OR REPLACE FUNCTION _json_timestamp(value jsonb, field text) RETURNS timestamptz
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

ALTER FUNCTION _json_seconds(jsonb, text) RESET search_path;

-- A provider's token as tokenvault stores it: expires_in in seconds (a
-- number or a numeric string, in the client's unit; dropped when it is
-- neither, or 0), a scope sent as an array joined with spaces, and an empty
-- or null field taken for none.
CREATE OR REPLACE FUNCTION _normalize_token(c tokenvault.clients, t jsonb) RETURNS jsonb
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

-- Checks and splits an auth's data; the checks are expressions over the
-- fixed key lists rather than a loop over the data's keys, so a refresh's
-- token costs no query.  Within each check the keys are tried in jsonb's
-- order, so the same key is named whatever order the data came in.
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
    RETURN jsonb_build_object(
        'secret', secret,
        'token_type', CASE WHEN c.type = 'oauth2' THEN coalesce(data->>'token_type', 'Bearer') END,
        'expires_at', expires_at,
        'refresh_expires_at', refresh_expires_at,
        'scopes', to_jsonb(scope_list));
END
$$;

-- After a failed try: 10 s doubling per failure, capped at 30 min, times a
-- jitter in [0.5, 1] so that many auths failing together spread out; never
-- sooner than the provider's Retry-After.
CREATE FUNCTION _backoff(failures integer, retry_after integer) RETURNS timestamptz
    LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
    SELECT now() + greatest(least(1800, 10 * 2 ^ least(greatest(failures - 1, 0), 20)) * (0.5 + random() / 2),
                            coalesce(retry_after, 0)) * interval '1 second'
$$;

CREATE OR REPLACE FUNCTION _refresh_plan(auth_id uuid, force boolean, min_validity integer) RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r record;
    a tokenvault.auths;
    c tokenvault.clients;
    cred jsonb;
BEGIN
    SELECT x AS a, y AS c INTO r
      FROM tokenvault.auths x JOIN tokenvault.clients y ON y.id = x.client_id WHERE x.id = auth_id;
    IF NOT FOUND THEN
        RETURN '{"skip": "gone", "message": "the auth was deleted"}';
    END IF;
    a := r.a;
    c := r.c;
    IF NOT force AND a.expires_at > now() + min_validity * interval '1 second' THEN
        RETURN '{"skip": "valid"}';
    END IF;
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
    IF a.status <> 'needs_reauth' THEN
        UPDATE tokenvault.auths SET status = 'needs_reauth',
               last_error = 'the token expired and there is no refresh token', updated_at = now()
         WHERE id = a.id RETURNING * INTO a;
        PERFORM tokenvault._emit('auth.needs_reauth', a, NULL, a.last_error);
    END IF;
    RETURN '{"skip": "needs_reauth", "message": "the token expired and there is no refresh token"}';
END
$$;

CREATE OR REPLACE FUNCTION _refresh_apply(auth_id uuid, version bigint, verdict jsonb) RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r record;
    a tokenvault.auths;
    c tokenvault.clients;
    t jsonb;
    cred jsonb;
    f jsonb;
    failures integer;
BEGIN
    SELECT x AS a, y AS c INTO r
      FROM tokenvault.auths x JOIN tokenvault.clients y ON y.id = x.client_id WHERE x.id = auth_id
       FOR UPDATE OF x;
    IF NOT FOUND THEN
        RETURN '{"outcome": "stale", "message": "the auth was deleted"}';
    END IF;
    a := r.a;
    c := r.c;
    IF a.version <> _refresh_apply.version THEN
        RETURN '{"outcome": "stale", "message": "the auth was changed meanwhile"}';
    END IF;
    failures := a.failure_count;
    IF (verdict->>'ok')::boolean THEN
        cred := tokenvault._open_jsonb(a.secret, 'auth:' || a.id);
        -- A token the provider sent that cannot be stored (a field of the
        -- wrong type, a date that is none) is a failed refresh like any
        -- other: recorded, announced and backed off.  As an error it would
        -- leave the auth claimed, to be tried again each time the lease ran
        -- out, without an event.
        BEGIN
            t := tokenvault._normalize_token(c, verdict->'token');
            -- the old token's own fields go; credentials (username,
            -- password) and an unrotated refresh token stay
            f := tokenvault._auth_fields(c, (cred - ARRAY['access_token', 'id_token']) || t,
                                         CASE WHEN t ? 'scope' THEN NULL ELSE a.scopes END);
        EXCEPTION WHEN data_exception OR program_limit_exceeded THEN
            verdict := jsonb_build_object('ok', false, 'class', 'error',
                                          'message', 'the provider''s token cannot be stored: ' || SQLERRM);
        END;
    END IF;
    IF NOT (verdict->>'ok')::boolean THEN
        UPDATE tokenvault.auths SET
            status = CASE verdict->>'class' WHEN 'needs_reauth' THEN 'needs_reauth'
                                            WHEN 'error' THEN 'error' ELSE status END,
            failure_count = failure_count + 1,
            last_error = verdict->>'message',
            refresh_at = CASE WHEN verdict->>'class' <> 'needs_reauth'
                              THEN tokenvault._backoff(failure_count + 1, (verdict->>'retry_after')::integer) END,
            updated_at = now()
         WHERE id = a.id RETURNING * INTO a;
        PERFORM tokenvault._emit(CASE WHEN a.status = 'needs_reauth' THEN 'auth.needs_reauth' ELSE 'auth.refresh_failed' END,
                                 a, NULL, a.last_error);
        RETURN jsonb_build_object('outcome', verdict->>'class', 'message', verdict->>'message');
    END IF;

    UPDATE tokenvault.auths SET
        secret = tokenvault._seal_jsonb(f->'secret', 'auth:' || a.id),
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
    RETURN '{"outcome": "refreshed"}';
END
$$;

------------------------------------------------------------------------------
-- What the worker runs, each in a short transaction of its own
------------------------------------------------------------------------------

-- How long a claim (of an auth to refresh, a delivery to send) holds: long
-- enough for any request, short enough that a crashed worker's claims
-- come back soon.
CREATE FUNCTION _lease() RETURNS interval
    LANGUAGE sql STABLE AS $$
    SELECT 2 OPERATOR(pg_catalog.*) tokenvault._setting_interval('tokenvault.http_timeout')
           OPERATOR(pg_catalog.+) interval '30 seconds'
$$;

-- Claim up to n due auths: their refresh_at moves a lease ahead (the
-- refresh's result sets the real one).  Returns their ids and, unless it
-- claimed n, the next refresh_at after them.
CREATE FUNCTION _worker_claim(n integer) RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
-- (plpgsql rather than sql: its plan is kept between calls)
DECLARE
    ids jsonb;
BEGIN
    WITH due AS (
        SELECT id FROM tokenvault.auths
         WHERE refresh_at <= now() ORDER BY refresh_at LIMIT n FOR UPDATE SKIP LOCKED
    ), claimed AS (
        UPDATE tokenvault.auths a SET refresh_at = now() + tokenvault._lease()
          FROM due WHERE a.id = due.id RETURNING a.id
    )
    SELECT coalesce(jsonb_agg(id), '[]') INTO ids FROM claimed;
    -- a full claim is followed by another one at once: no need to look ahead
    IF jsonb_array_length(ids) >= n THEN
        RETURN jsonb_build_object('ids', ids);
    END IF;
    RETURN jsonb_build_object(
        'ids', ids,
        'next_at', (SELECT min(refresh_at) FROM tokenvault.auths WHERE refresh_at > now()));
END
$$;

-- When the worker starts nothing is in flight: auths a previous worker
-- claimed (and crashed or restarted on) are due again now rather than when
-- their lease runs out.  (Webhook deliveries wait for theirs.)  Schedules in the lease window are made again, which leaves the
-- others as they were.
CREATE FUNCTION _worker_start() RETURNS jsonb
    LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
    WITH released AS (
        UPDATE tokenvault.auths SET refresh_at = tokenvault._refresh_at(auths)
         WHERE refresh_at > now() AND refresh_at <= now() + tokenvault._lease() AND failure_count = 0
        RETURNING 1
    )
    SELECT jsonb_build_object('released', (SELECT count(*) FROM released))
$$;

-- Expiry notices (auth.expiring, once, expiry_notice ahead), expired auths
-- (auth.expired), old delivered events.  Returns when it is next needed.
CREATE FUNCTION _worker_tick() RETURNS jsonb
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
    RETURN jsonb_build_object('next_at', least(
        (SELECT min(d) FROM (SELECT tokenvault._dies_at(auths) AS d FROM tokenvault.auths) x WHERE d > now()),
        (SELECT min(tokenvault._dies_at(auths) - notice) FROM tokenvault.auths
          WHERE expiry_notified_at IS NULL AND tokenvault._dies_at(auths) - notice > now()),
        (SELECT min(delivered_at) + tokenvault._setting_interval('tokenvault.event_retention')
           FROM tokenvault.events WHERE delivered_at IS NOT NULL),
        now() + interval '1 hour'));
END
$$;

-- A changed refresh_lead: every stored schedule made again.
CREATE FUNCTION _reschedule() RETURNS jsonb
    LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
    WITH moved AS (
        UPDATE tokenvault.auths SET refresh_at = tokenvault._refresh_at(auths)
         WHERE refresh_at IS NOT NULL AND failure_count = 0 RETURNING 1
    )
    SELECT jsonb_build_object('moved', count(*)) FROM moved
$$;

-- Claim up to n deliveries that may go now: the oldest undelivered one of
-- each (webhook, auth), so that one auth's events arrive in order.
CREATE FUNCTION _webhook_claim(n integer) RETURNS jsonb
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
    SELECT jsonb_build_object(
        'deliveries', coalesce((
            SELECT jsonb_agg(jsonb_build_object(
                'id', c.id::text, 'url', w.url, 'event', e.kind, 'body', e.payload::text,
                'secret', tokenvault._open_text(w.secret, 'webhook:' || w.id)))
              FROM claimed c JOIN tokenvault.webhooks w ON w.id = c.webhook_id
              JOIN tokenvault.events e ON e.id = c.event_id), '[]'),
        'next_at', (SELECT min(next_attempt_at) FROM heads WHERE next_attempt_at > now()))
$$;

-- A delivery's answer: 2xx delivers it (and its event, once every webhook
-- has it); anything else is tried again later: 2 s doubling, capped at an
-- hour, times a jitter in [0.5, 1].
CREATE FUNCTION _webhook_result(delivery_id bigint, status integer, error text) RETURNS jsonb
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
    RETURN '{}';
END
$$;

------------------------------------------------------------------------------
-- Stats
------------------------------------------------------------------------------

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

------------------------------------------------------------------------------
-- Privileges of what is new
------------------------------------------------------------------------------

REVOKE ALL ON events, webhooks, webhook_deliveries, stats FROM PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA tokenvault FROM PUBLIC;
GRANT SELECT ON events, stats TO tokenvault_app, tokenvault_admin;
GRANT SELECT (id, url, kinds, enabled, created_at) ON webhooks TO tokenvault_admin;
GRANT SELECT ON webhook_deliveries TO tokenvault_admin;
GRANT EXECUTE ON FUNCTION add_webhook(text, text, text[]), delete_webhook(uuid) TO tokenvault_admin;
