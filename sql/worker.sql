-- What the background worker runs, each step in a short transaction, and its stats

CREATE FUNCTION _wake_worker(at timestamptz) RETURNS void
    LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'tv_wake_worker';

-- How long a claim (of an auth to refresh, a delivery to send) holds: long
-- enough for any request, short enough that a crashed worker's claims
-- come back soon.
CREATE FUNCTION _lease() RETURNS interval
    LANGUAGE sql STABLE AS $$
    SELECT 2 OPERATOR(pg_catalog.*) tokenvault._setting_interval('tokenvault.http_timeout')
           OPERATOR(pg_catalog.+) interval '30 seconds'
$$;

-- Claim up to n due auths: their refresh_at moves a lease ahead (the
-- refresh's result sets the real one).  Unless it claimed n, also the next
-- refresh_at after them.
CREATE FUNCTION _worker_claim(n integer, OUT ids uuid[], OUT next_at timestamptz)
    LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
-- (plpgsql rather than sql: its plan is kept between calls)
BEGIN
    WITH due AS (
        SELECT id FROM tokenvault.auths
         WHERE refresh_at <= now() ORDER BY refresh_at LIMIT n FOR UPDATE SKIP LOCKED
    ), claimed AS (
        UPDATE tokenvault.auths a SET refresh_at = now() + tokenvault._lease()
          FROM due WHERE a.id = due.id RETURNING a.id
    )
    SELECT coalesce(array_agg(id), '{}') INTO ids FROM claimed;
    -- a full claim is followed by another one at once: no need to look ahead
    IF cardinality(ids) < n THEN
        next_at := (SELECT min(refresh_at) FROM tokenvault.auths WHERE refresh_at > now());
    END IF;
END
$$;

-- When the worker starts nothing is in flight: auths a previous worker
-- claimed (and crashed or restarted on) are due again now rather than when
-- their lease runs out.  (Webhook deliveries wait for theirs.)  Schedules
-- in the lease window are made again, which leaves the others as they
-- were.  A refresh whose request went out and whose answer was never
-- stored was lost, in a failover if this server was promoted since: it is
-- tried again first, while a provider's grace period for the refresh token
-- it may have replaced lasts.  Returns how many were released.
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

-- Expiry notices (auth.expiring, once, expiry_notice ahead), expired auths
-- (auth.expired), old delivered events.  Returns when it is next needed.
CREATE FUNCTION _worker_tick() RETURNS timestamptz
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

-- What dropped roles leave behind: their private tokens are deleted and
-- their live grants on user tokens revoked (the history stays), up to n of
-- each a call.  Nobody could read them (a role is matched by OID and name),
-- but a dump would carry them to where another role has that OID.
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

-- Drop up to n of a webhook's deliveries (the given ones), mark the events
-- no webhook waits for any more delivered, let the next of each queue go,
-- and say so in an event.
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

-- What a receiver that stops answering may cost, up to n deliveries of
-- each kind a call: a webhook failing for tokenvault.webhook_disable_after
-- is disabled (its waiting events dropped), and events wait no longer
-- than tokenvault.webhook_max_age, nor more than
-- tokenvault.webhook_max_backlog of them for one webhook.
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

-- A changed refresh_lead: every stored schedule made again.  Returns how
-- many moved.
CREATE FUNCTION _reschedule() RETURNS bigint
    LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
    WITH moved AS (
        UPDATE tokenvault.auths SET refresh_at = tokenvault._refresh_at(auths)
         WHERE refresh_at IS NOT NULL AND failure_count = 0 RETURNING 1
    )
    SELECT count(*) FROM moved
$$;

CREATE FUNCTION _worker_stats(OUT worker_pid integer, OUT worker_state text, OUT last_loop_at timestamptz,
                              OUT refreshes_succeeded bigint, OUT refreshes_failed bigint,
                              OUT http_p50_ms double precision, OUT http_p90_ms double precision,
                              OUT http_p99_ms double precision, OUT refreshes_unconfirmed bigint)
    LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'tv_worker_stats';
CREATE VIEW stats AS
    SELECT s.worker_pid, s.worker_state, s.last_loop_at, s.refreshes_succeeded, s.refreshes_failed,
           s.refreshes_unconfirmed,
           (SELECT count(*) FROM tokenvault.auths WHERE refresh_at <= now()) AS auths_due,
           s.http_p50_ms, s.http_p90_ms, s.http_p99_ms,
           (SELECT count(*) FROM tokenvault.webhook_deliveries WHERE delivered_at IS NULL) AS webhook_backlog
      FROM tokenvault._worker_stats() s
     WHERE (SELECT tokenvault._admitted_app());
