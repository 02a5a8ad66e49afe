-- Keys: the key ring, key usage and rotation over every sealed column

CREATE FUNCTION key_ring() RETURNS TABLE (key_id bigint, newest boolean)
    LANGUAGE c VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'tv_key_ring';

-- How many secrets each key seals.
CREATE FUNCTION key_usage() RETURNS TABLE (key_id bigint, newest boolean, secrets bigint)
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM tokenvault._admit_admin();
    RETURN QUERY EXECUTE format($q$
        WITH used AS (%s)
        SELECT coalesce(r.key_id, u.key_id), coalesce(r.newest, false), count(u.key_id)
          FROM tokenvault.key_ring() r
          FULL JOIN used u ON u.key_id = r.key_id
         GROUP BY 1, 2
         ORDER BY 2, 1 $q$,
        (SELECT string_agg(format('SELECT tokenvault._key_id(%I) AS key_id FROM %s WHERE %I IS NOT NULL',
                                  s.col, s.tbl, s.col), ' UNION ALL ')
           FROM tokenvault._sealed_columns() s));
END
$$;

-- The first key file of a cluster.  Refused where secrets are already
-- sealed: their keys are in a key file to restore, not in a new one.
CREATE FUNCTION create_key_file() RETURNS bigint
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    n bigint;
BEGIN
    PERFORM tokenvault._admit_admin();
    PERFORM pg_advisory_xact_lock(hashtext('tokenvault.key_file'));
    EXECUTE (SELECT 'SELECT count(*) FROM (' ||
                    string_agg(format('SELECT 1 FROM %s WHERE %I IS NOT NULL', s.tbl, s.col), ' UNION ALL ') || ') s'
               FROM tokenvault._sealed_columns() s) INTO n;
    IF n > 0 THEN
        RAISE EXCEPTION 'this database holds % sealed secret(s), so its key file exists somewhere', n
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Restore the key file from its backup and point tokenvault.key_file at it; a new key file would open none of them.';
    END IF;
    RETURN tokenvault._create_key_file();
END
$$;

CREATE FUNCTION add_key() RETURNS bigint
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM tokenvault._admit_admin();
    -- one writer of the key file at a time
    PERFORM pg_advisory_xact_lock(hashtext('tokenvault.key_file'));
    RETURN tokenvault._add_key();
END
$$;

CREATE FUNCTION drop_key(key_id bigint) RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    n bigint;
BEGIN
    PERFORM tokenvault._admit_admin();
    PERFORM tokenvault._refuse_null(key_id IS NULL, 'key id'::text);
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'drop_key() must run at READ COMMITTED'
            USING ERRCODE = 'active_sql_transaction',
                  HINT = 'It counts the secrets a key seals after the transactions that may still seal with it have ended, which needs a new snapshot.';
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('tokenvault.key_file'));
    -- A transaction that sealed with this key before the newer key was
    -- published may commit after rotate_key() passed its row: wait for every
    -- transaction older than this one, then count with a new snapshot.
    PERFORM tokenvault._wait_for_older_transactions();
    SELECT u.secrets INTO n FROM tokenvault.key_usage() u WHERE u.key_id = drop_key.key_id;
    IF n > 0 THEN
        RAISE EXCEPTION 'key % still seals % secret(s)', key_id, n
            USING ERRCODE = 'dependent_objects_still_exist',
                  HINT = 'Run tokenvault.rotate_key() first to re-seal them with the newest key.';
    END IF;
    PERFORM tokenvault._drop_key(key_id);
END
$$;

-- Re-seal every secret not under the newest key (or in an older format),
-- 100 pages at a time.
CREATE FUNCTION rotate_key() RETURNS bigint
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    newest bigint := (SELECT r.key_id FROM tokenvault.key_ring() r WHERE r.newest);
    total bigint := 0;
    s record;
    last_page bigint;
    page bigint;
    n bigint;
BEGIN
    PERFORM tokenvault._admit_admin();
    FOR s IN SELECT * FROM tokenvault._sealed_columns() LOOP
        last_page := pg_relation_size(s.tbl) / current_setting('block_size')::bigint;
        page := 0;
        WHILE page <= last_page LOOP
            n := tokenvault._reseal_pages(s, page, 100, newest);
            page := page + 100;
            CONTINUE WHEN n = 0;
            total := total + n;
            RAISE NOTICE 'rotate_key: % secret(s) re-sealed with key % so far', total, newest;
        END LOOP;
    END LOOP;
    RETURN total;
END
$$;

-- Where secrets are sealed: the table, the column, the place it belongs
-- (_seal_<place>, _open_<place>) and who in that place, as an expression
-- over the row "t".
CREATE FUNCTION _sealed_columns() RETURNS TABLE (tbl regclass, col name, place text, place_args text)
    LANGUAGE sql STABLE AS $$
    VALUES ('tokenvault.clients'::pg_catalog.regclass, 'secret'::name, 'client', 't.id'),
           ('tokenvault.auths', 'secret', 'auth', 't.id'),
           ('tokenvault.webhooks', 'secret', 'webhook', 't.id'),
           ('tokenvault.webhooks', 'previous_secret', 'webhook', 't.id'),
           ('tokenvault.auth_states', 'verifier', 'state', 't.state'),
           ('tokenvault.private_tokens', 'value', 'private', 't.owner_name, t.related_id, t.key'),
           ('tokenvault.user_tokens', 'value', 'user_token', 't.user_id, t.related_id, t.key')
$$;

-- Re-seal what a range of a table's pages holds under an older key, or in
-- the format before 0.7.0 (version 1, without a key check).  Rows
-- are found by their place (a TID range scan), which needs no key of the
-- table's own; a re-sealed row that moves further on is under the newest
-- key and passed over.
CREATE FUNCTION _reseal_pages(s record, first_page bigint, pages bigint, newest bigint) RETURNS bigint
    LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    n bigint;
BEGIN
    EXECUTE format($q$
        WITH resealed AS (
            UPDATE %1$s t SET %2$I = tokenvault._seal_%4$s(tokenvault._open_%4$s(t.%2$I, %3$s), %3$s)
             WHERE t.ctid >= $1 AND t.ctid < $2 AND t.%2$I IS NOT NULL
               AND (tokenvault._key_id(t.%2$I) <> $3 OR pg_catalog.get_byte(t.%2$I, 0) < 2)
            RETURNING 1)
        SELECT count(*) FROM resealed $q$, s.tbl, s.col, s.place_args, s.place)
    INTO n USING format('(%s,0)', first_page)::tid, format('(%s,0)', first_page + pages)::tid, newest;
    RETURN n;
END
$$;
