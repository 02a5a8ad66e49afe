-- Health checks: a cheap request the provider documents (who am I) proves an auth's credential still works

-- Send a check and judge its answer; the answer's body is read for the
-- ok field at most, never kept (checks.c).
CREATE FUNCTION _verify_request(r tokenvault.check_request) RETURNS tokenvault.check_verdict
    LANGUAGE c VOLATILE STRICT AS 'MODULE_PATHNAME', 'tv_verify_request';

-- The request that checks auth a of client c, with the token or
-- credential as stored.
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

-- When an auth of a client that checks every check_every seconds is first
-- checked: somewhere in the first interval, by its id, so that a client's
-- auths imported together are not all checked together.
CREATE FUNCTION _first_check_at(id uuid, check_every integer) RETURNS timestamptz
    LANGUAGE sql VOLATILE AS $$
    SELECT pg_catalog.now() + ((pg_catalog.hashtext(id::text)::bigint & 2147483647) % check_every) * interval '1 second'
$$;

-- Record a check's verdict.  Refused: the user must authorize again
-- (needs_reauth, one auth.check_failed).  Failed: no verdict on the
-- credential; tried again sooner, announced once in a row.  A good check
-- after either is auth.recovered.
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

-- Check an auth now: its client's verify_url, with its headers.  An oauth2
-- token is refreshed first if it has to be.  Returns ok, refused or failed.
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

-- The worker's checks: up to n due ones claimed (their check_at a lease
-- ahead), and unless it claimed n, when the next one is due.  An auth
-- that is not to be checked now (its client stopped checking, the user
-- must authorize again, its token is due for a refresh) is put off.
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

-- Auths of a client that checks are scheduled as they are made, and again
-- when the client starts or stops checking (update_client).
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
CREATE TRIGGER auths_schedule_check BEFORE INSERT ON auths FOR EACH ROW EXECUTE FUNCTION _schedule_check();

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
CREATE TRIGGER clients_reschedule_checks AFTER UPDATE OF check_every, verify_url ON clients
    FOR EACH ROW WHEN (OLD.check_every IS DISTINCT FROM NEW.check_every OR OLD.verify_url IS DISTINCT FROM NEW.verify_url)
    EXECUTE FUNCTION _reschedule_checks();
