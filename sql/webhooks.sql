-- Webhooks: registering them, and the deliveries the worker sends

-- A webhook secret must be hard to guess: an HMAC key anyone can guess
-- signs forged deliveries.
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

-- Without a secret: one is generated, and returned this once.  (No third
-- argument: add_webhook(url, secret, '{kinds}') must not be ambiguous.)
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

-- Start a rotation: the new secret signs from now on, and deliveries carry
-- a signature under the old one too until finish_webhook_rotation(), so
-- receivers can move to the new secret at their pace.  Returns the new
-- secret when it was generated (none given), else NULL.
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

-- End a rotation: the old secret is forgotten and signs nothing more.
-- Whether a rotation was under way.
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

CREATE FUNCTION delete_webhook(webhook_id uuid) RETURNS void
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

-- Whether a delivery waits behind an earlier one of its (webhook, auth)
-- queue.  (Two statements: "IS NOT DISTINCT FROM" would not use the index.)
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

-- Claim up to n deliveries that may go now: the heads of the (webhook,
-- auth) queues that are due, so that one auth's events arrive in order.
-- It walks at most 4n of the due ones, by index: those it finds behind an
-- earlier one wait at infinity, unscheduled, until that one is delivered or
-- dropped (_webhook_next), so no claim walks them again however long the
-- backlog.  Only the worker makes a delivery wait, so the head of a queue is
-- never left at infinity.  Also when the worker should claim next.
CREATE FUNCTION _webhook_claim(n integer, OUT deliveries tokenvault.delivery[], OUT next_at timestamptz)
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

-- The next delivery of a (webhook, auth) queue becomes its head, due now.
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

-- A delivery's answer: 2xx delivers it (and its event, once every webhook
-- has it); anything else is tried again later: 2 s doubling, capped at an
-- hour, times a jitter in [0.5, 1].
CREATE FUNCTION _webhook_result(delivery_id bigint, status integer, error text) RETURNS void
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
