-- Events: recorded, announced by NOTIFY (id and kind) and queued for webhooks

-- An auth event: Tray's expiry payload with the kind in "event".  User-given
-- text is cut short, so that an event stays small whatever names users
-- choose.  Never a secret.
CREATE FUNCTION _emit(kind text, a tokenvault.auths, expires timestamptz DEFAULT NULL, error text DEFAULT NULL)
    RETURNS void
    LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM tokenvault._publish(kind, a.id,
        jsonb_build_object(
            'event', kind,
            'authentication_name', left(a.name, 400),
            'service_name', left(a.service, 400),
            'user_id', a.user_id,
            'authId', a.id,
            'external_user_id', (SELECT left(u.external_user_id, 400) FROM tokenvault.users u WHERE u.id = a.user_id),
            'expires_at', to_char(coalesce(expires, a.expires_at) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'))
        || CASE WHEN error IS NULL THEN '{}' ELSE jsonb_build_object('error', left(error, 400)) END,
        a.client_id);
END
$$;

CREATE FUNCTION _event_kinds() RETURNS text[]
    LANGUAGE sql IMMUTABLE AS $$
    SELECT ARRAY['auth.refreshed', 'auth.refresh_failed', 'auth.needs_reauth', 'auth.recovered',
                 'auth.expiring', 'auth.expired', 'auth.deleted', 'instance.disabled',
                 'client.urls_changed', 'user_tokens.granted', 'user_tokens.revoked', 'auth.refresh_lost',
                 'auth.check_failed']
$$;

-- Record an event, NOTIFY it and queue it for the webhooks that want it,
-- all in the caller's transaction.  Webhooks get one auth's events in order.
-- Any role that can connect may LISTEN, and send on the channel too
-- (PostgreSQL has no privilege on either), so the notification carries the
-- event's id and kind and nothing else: a listener reads the event from
-- the table, under its grants, and a forged notification names no row.
-- (No SET search_path: it runs for every refresh, and only functions and
-- triggers that set it call it.)
CREATE FUNCTION _publish(kind text, auth_id uuid, payload jsonb, client_id uuid DEFAULT NULL) RETURNS void
    LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    event_id bigint;
    delivered timestamptz;
    private_to name := (SELECT c.owner FROM tokenvault.clients c
                         WHERE c.id = _publish.client_id AND c.visibility = 'private');
    -- the webhooks that want it; a private client's events only those its owner added
    hearers uuid[] := ARRAY(
        SELECT w.id FROM tokenvault.webhooks w
         WHERE w.enabled AND (w.kinds IS NULL OR kind = ANY (w.kinds))
           AND (private_to IS NULL
                OR EXISTS (SELECT FROM pg_catalog.pg_roles o, pg_catalog.pg_roles p
                            WHERE o.rolname = w.owner AND p.rolname = private_to
                              AND pg_catalog.pg_has_role(o.oid, p.oid, 'MEMBER'))));
BEGIN
    INSERT INTO tokenvault.events (kind, auth_id, client_id, payload, delivered_at)
    VALUES (kind, auth_id, client_id, payload,
            -- no webhook wants it: delivered by the NOTIFY alone
            CASE WHEN cardinality(hearers) = 0 THEN now() END)
    RETURNING id, delivered_at INTO event_id, delivered;
    IF delivered IS NULL THEN
        -- due now, all of them: which one heads its (webhook, auth) queue
        -- the worker decides (_webhook_claim), under its own snapshot; this
        -- transaction's may be older than a delivery it would wait behind
        INSERT INTO tokenvault.webhook_deliveries (webhook_id, event_id, auth_id)
            SELECT h, event_id, _publish.auth_id FROM unnest(hearers) h;
        PERFORM tokenvault._wake_worker(now());
    END IF;
    PERFORM tokenvault._notify(event_id, kind);
END
$$;

-- NOTIFY an event, unless the queue is nearly full: a NOTIFY that does not
-- fit fails the COMMIT, which would lose what the transaction stored (a
-- refresh's new tokens).  An idle LISTEN session in a transaction holds the
-- queue's tail; listeners catch up from tokenvault.events by id.
CREATE FUNCTION _notify(event_id bigint, kind text) RETURNS void
    LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    IF pg_catalog.pg_notification_queue_usage()
       <= pg_catalog.current_setting('tokenvault.notify_max_queue_usage')::float8 THEN
        PERFORM pg_catalog.pg_notify('tokenvault', pg_catalog.jsonb_build_object('id', event_id, 'kind', kind)::text);
    END IF;
END
$$;

-- An event about the vault itself (a webhook's dropped events, a webhook
-- disabled): recorded and NOTIFYed, never queued for a webhook, so it
-- cannot feed the backlog it reports.
CREATE FUNCTION _publish_local(kind text, payload jsonb) RETURNS void
    LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    event_id bigint;
BEGIN
    INSERT INTO tokenvault.events (kind, payload, delivered_at)
    VALUES (kind, payload || jsonb_build_object('event', kind), now())
    RETURNING id INTO event_id;
    PERFORM tokenvault._notify(event_id, kind);
END
$$;
