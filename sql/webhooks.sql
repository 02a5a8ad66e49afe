-- Webhooks: registering them, and the deliveries the worker sends

CREATE FUNCTION add_webhook(url text, secret text, kinds text[] DEFAULT NULL) RETURNS uuid
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    new_id uuid := gen_random_uuid();
BEGIN
    PERFORM tokenvault._admit_admin();
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
    ELSIF kinds IS NOT NULL AND NOT kinds <@ tokenvault._event_kinds() THEN
        RAISE EXCEPTION 'unknown event kind in %', kinds
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Event kinds are ' || array_to_string(tokenvault._event_kinds(), ', ') || '.';
    END IF;
    INSERT INTO tokenvault.webhooks (id, url, secret, kinds, owner)
    VALUES (new_id, url, tokenvault._seal_webhook(secret, new_id), kinds, tokenvault._caller());
    RETURN new_id;
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

-- Claim up to n deliveries that may go now: the oldest undelivered one of
-- each (webhook, auth), so that one auth's events arrive in order.  Also
-- when the next one not yet due may go.
CREATE FUNCTION _webhook_claim(n integer, OUT deliveries tokenvault.delivery[], OUT next_at timestamptz)
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
    SELECT coalesce((
               -- the body names its delivery and event, so that the signature
               -- covers them: a receiver that keeps the ids it has seen
               -- refuses a replay, and a body cannot pass for another event's
               SELECT array_agg(ROW(c.id, w.url, e.kind,
                                    (e.payload || jsonb_build_object('delivery_id', c.id, 'event_id', c.event_id))::text,
                                    tokenvault._open_webhook(w.secret, w.id))::tokenvault.delivery)
                 FROM claimed c JOIN tokenvault.webhooks w ON w.id = c.webhook_id
                 JOIN tokenvault.events e ON e.id = c.event_id), '{}'),
           (SELECT min(next_attempt_at) FROM heads WHERE next_attempt_at > now())
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
END
$$;
