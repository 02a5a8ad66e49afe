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

-- Raise synchronous_commit for the rest of the transaction to
-- tokenvault.synchronous_commit, if it is weaker (src/durable.c).
CREATE FUNCTION _durable_commit() RETURNS void
    LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'tv_durable_commit';

-- Why a refresh token was refused after an earlier refresh's answer was lost.
CREATE FUNCTION _lost_refresh_message(why text) RETURNS text
    LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE why
        WHEN 'failover' THEN 'a refresh was in flight when the server failed over, and its answer was lost with the old primary; the provider refused the refresh token it had replaced'
        WHEN 'promotion' THEN 'the provider refused the refresh token at its first refresh since this server was promoted: with asynchronous replication, a refresh the old primary committed may never have reached this server'
        WHEN 'restart' THEN 'a refresh was in flight when the server or its refresher stopped, and its answer was never stored; the provider refused the refresh token it had replaced'
        ELSE 'a refresh got no answer (the connection failed after the request was sent); the provider refused the refresh token, which that request may have spent' END
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
-- It fires only for the columns the schedule and _dies_at() read: a refresh
-- marked as sent (refresh_sent_at), once per refresh, changes neither.
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
CREATE TRIGGER auths_schedule
    BEFORE INSERT OR UPDATE OF status, secret, expires_at, last_refreshed_at, refresh_at, failure_count,
                               refresh_expires_at, client_id ON auths
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
