-- tokenvault 0.4.0 -> 0.5.0: private token stores: app-private tokens per
-- role, and user tokens shared by ACL; every sealed column in key rotation

\echo Use "ALTER EXTENSION tokenvault UPDATE TO '0.5.0'" to load this file. \quit

------------------------------------------------------------------------------
-- Tables
------------------------------------------------------------------------------

-- {relatedId, key, value} tokens private to the role that wrote them.  The
-- role is held by its OID (regrole: a dump writes it as a name, and a
-- restore finds that name's OID), so a role renamed keeps its tokens and a
-- role dropped leaves them to no later role of the same name.  The value is
-- sealed with the owner's name (as it was then), related id and key as its
-- associated data, so a value copied onto another row does not open.
-- Related ids and keys may hold any character, dots included; they are only
-- compared.
CREATE TABLE private_tokens (
    owner      regrole NOT NULL,
    owner_name name NOT NULL,
    related_id text NOT NULL CHECK (related_id <> '' AND length(related_id) <= 1024),
    key        text NOT NULL CHECK (key <> '' AND length(key) <= 1024),
    value      bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (owner, related_id, key)
);

-- Tokens of an end user's account, shared with roles by user_token_grants.
CREATE TABLE user_tokens (
    user_id    uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    related_id text NOT NULL CHECK (related_id <> '' AND length(related_id) <= 1024),
    key        text NOT NULL CHECK (key <> '' AND length(key) <= 1024),
    value      bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, related_id, key)
);

-- A role may read, or read and write, a user's tokens: all of them (related
-- id NULL) or those of one related id.  Members of the role inherit it.
CREATE TABLE user_token_grants (
    user_id    uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    grantee    regrole NOT NULL,
    privilege  text NOT NULL CHECK (privilege IN ('read', 'write')),
    related_id text CHECK (related_id <> ''),
    granted_by name NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE NULLS NOT DISTINCT (user_id, grantee, related_id)
);

SELECT pg_catalog.pg_extension_config_dump('private_tokens', '');
SELECT pg_catalog.pg_extension_config_dump('user_tokens', '');
SELECT pg_catalog.pg_extension_config_dump('user_token_grants', '');

-- Through the table, too, a role sees its own private tokens only (sealed);
-- an administrator sees every role's, and writes none: the functions write.
ALTER TABLE private_tokens ENABLE ROW LEVEL SECURITY;
CREATE POLICY private_tokens_own ON private_tokens FOR SELECT TO tokenvault_app
    USING (owner::oid = (SELECT r.oid FROM pg_catalog.pg_roles r WHERE r.rolname = current_user));
CREATE POLICY private_tokens_admin ON private_tokens FOR SELECT TO tokenvault_admin
    USING (true);

------------------------------------------------------------------------------
-- Checks shared by both stores
------------------------------------------------------------------------------

-- 16 MiB, as the reference's store takes.
CREATE FUNCTION _check_token(related_id text, key text, value text DEFAULT '') RETURNS void
    LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM tokenvault._require(related_id, 'related_id'), tokenvault._require(key, 'key'),
            tokenvault._require(value, 'value');
    IF related_id = '' OR key = '' THEN
        RAISE EXCEPTION 'related_id and key must not be empty' USING ERRCODE = 'invalid_parameter_value';
    ELSIF length(related_id) > 1024 OR length(key) > 1024 THEN
        RAISE EXCEPTION 'related_id and key are limited to 1024 characters' USING ERRCODE = 'invalid_parameter_value';
    ELSIF octet_length(value) > 16777216 THEN
        RAISE EXCEPTION 'token value is % bytes, more than the 16 MiB (16777216 bytes) a token may hold',
                octet_length(value)
            USING ERRCODE = 'program_limit_exceeded',
                  HINT = 'Split it over several keys.';
    END IF;
END
$$;

-- The associated data of a sealed token: where the value belongs.  The
-- lengths keep one (owner, related id, key) from reading as another; the C
-- side (tokens.c) forms the same.
CREATE FUNCTION _token_aad(store text, owner text, related_id text, key text) RETURNS text
    LANGUAGE sql IMMUTABLE AS $$
    SELECT store || ':' || pg_catalog.octet_length(owner) || ':' || owner || ':'
           || pg_catalog.octet_length(related_id) || ':' || related_id || ':' || key
$$;

------------------------------------------------------------------------------
-- App-private tokens: the calling role's own
------------------------------------------------------------------------------

CREATE FUNCTION put_private_token(related_id text, key text, value text) RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    me name := tokenvault._caller();
BEGIN
    PERFORM tokenvault._check_token(related_id, key, value);
    INSERT INTO tokenvault.private_tokens AS t (owner, owner_name, related_id, key, value)
    VALUES (tokenvault._role(me), me, related_id, key,
            tokenvault._seal_text(value, tokenvault._token_aad('private', me, related_id, key)))
    ON CONFLICT ON CONSTRAINT private_tokens_pkey
        DO UPDATE SET owner_name = EXCLUDED.owner_name, value = EXCLUDED.value, updated_at = now();
END
$$;

-- The reads are C (tokens.c): one probe of the primary key and a decryption.
-- NULL when the role has no such token.
CREATE FUNCTION get_private_token(related_id text, key text) RETURNS text
    LANGUAGE c STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'tv_get_private_token';

-- In related id and key order.
CREATE FUNCTION list_private_tokens(related_id text DEFAULT NULL)
    RETURNS TABLE (related_id text, key text, value text)
    LANGUAGE c STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp ROWS 100
    AS 'MODULE_PATHNAME', 'tv_list_private_tokens';

-- Whether there was one to delete.
CREATE FUNCTION delete_private_token(related_id text, key text) RETURNS boolean
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    DELETE FROM tokenvault.private_tokens t
     WHERE t.owner = tokenvault._role(tokenvault._caller()) AND t.related_id = delete_private_token.related_id
       AND t.key = delete_private_token.key;
    RETURN FOUND;
END
$$;

------------------------------------------------------------------------------
-- User tokens: an end user's, shared with roles
------------------------------------------------------------------------------

-- A role by its exact name (no identifier quoting or case folding), NULL
-- when there is none.
CREATE FUNCTION _role(name name) RETURNS regrole
    LANGUAGE sql STABLE AS $$
    SELECT r.oid::pg_catalog.regrole FROM pg_catalog.pg_roles r WHERE r.rolname = $1
$$;

-- Whether a role has what is granted to another (it, or a role it inherits
-- from); false for a role dropped since the grant.
CREATE FUNCTION _holds(member name, grantee regrole) RETURNS boolean
    LANGUAGE sql STABLE AS $$
    SELECT EXISTS (SELECT FROM pg_catalog.pg_roles r
                    WHERE r.oid = grantee::pg_catalog.oid AND pg_catalog.pg_has_role(member, r.oid, 'USAGE'))
$$;

-- Refuse unless the calling role (or a role it inherits from) holds a grant
-- that covers the related id: "write" for writing, either for reading.
-- Read afresh in every call, so a revoke applies from the next statement on.
CREATE FUNCTION _user_token_access(user_id uuid, related_id text, need text) RETURNS void
    LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM tokenvault._user_must_exist(user_id);
    IF NOT EXISTS (SELECT FROM tokenvault.user_token_grants g
                    WHERE g.user_id = _user_token_access.user_id
                      AND (g.related_id IS NULL OR g.related_id = _user_token_access.related_id)
                      AND (g.privilege = 'write' OR need = 'read')
                      AND tokenvault._holds(tokenvault._caller(), g.grantee)) THEN
        RAISE EXCEPTION 'role % may not % the tokens of user %', tokenvault._caller(), need,
                user_id || CASE WHEN related_id IS NULL THEN '' ELSE format(' with related id "%s"', related_id) END
            USING ERRCODE = 'insufficient_privilege',
                  HINT = format('An administrator shares them with tokenvault.grant_user_tokens(user_id, role, ''%s'').', need);
    END IF;
END
$$;

CREATE FUNCTION put_user_token(user_id uuid, related_id text, key text, value text) RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM tokenvault._check_token(related_id, key, value),
            tokenvault._user_token_access(user_id, related_id, 'write');
    INSERT INTO tokenvault.user_tokens AS t (user_id, related_id, key, value)
    VALUES (user_id, related_id, key,
            tokenvault._seal_text(value, tokenvault._token_aad('user', user_id::text, related_id, key)))
    ON CONFLICT ON CONSTRAINT user_tokens_pkey DO UPDATE SET value = EXCLUDED.value, updated_at = now();
END
$$;

CREATE FUNCTION get_user_token(user_id uuid, related_id text, key text) RETURNS text
    LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM tokenvault._check_token(related_id, key), tokenvault._user_token_access(user_id, related_id, 'read');
    RETURN (SELECT tokenvault._open_text(t.value, tokenvault._token_aad('user', t.user_id::text, t.related_id, t.key))
              FROM tokenvault.user_tokens t
             WHERE t.user_id = get_user_token.user_id AND t.related_id = get_user_token.related_id
               AND t.key = get_user_token.key);
END
$$;

-- The tokens the caller may read: those of one related id, or, without
-- one, every token a grant of the caller's covers.  (SQL, not PL/pgSQL,
-- whose variables could not be named like both the argument and a column.)
CREATE FUNCTION _user_token_list_access(user_id uuid, related_id text) RETURNS void
    LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF related_id IS NOT NULL OR NOT EXISTS (
            SELECT FROM tokenvault.user_token_grants g
             WHERE g.user_id = _user_token_list_access.user_id AND tokenvault._holds(tokenvault._caller(), g.grantee)) THEN
        PERFORM tokenvault._user_token_access(user_id, related_id, 'read');
    END IF;
END
$$;

CREATE FUNCTION list_user_tokens(user_id uuid, related_id text DEFAULT NULL)
    RETURNS TABLE (related_id text, key text, value text)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT tokenvault._user_token_list_access($1, $2);
    SELECT t.related_id, t.key, tokenvault._open_text(t.value, tokenvault._token_aad('user', t.user_id::text, t.related_id, t.key))
      FROM tokenvault.user_tokens t
     WHERE t.user_id = $1 AND ($2 IS NULL OR t.related_id = $2)
       AND EXISTS (SELECT FROM tokenvault.user_token_grants g
                    WHERE g.user_id = t.user_id AND (g.related_id IS NULL OR g.related_id = t.related_id)
                      AND tokenvault._holds(tokenvault._caller(), g.grantee))
     ORDER BY t.related_id, t.key
$$;

CREATE FUNCTION delete_user_token(user_id uuid, related_id text, key text) RETURNS boolean
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM tokenvault._check_token(related_id, key), tokenvault._user_token_access(user_id, related_id, 'write');
    DELETE FROM tokenvault.user_tokens t
     WHERE t.user_id = delete_user_token.user_id AND t.related_id = delete_user_token.related_id
       AND t.key = delete_user_token.key;
    RETURN FOUND;
END
$$;

-- Share a user's tokens with a role: 'read', or 'write' (which reads too),
-- for all of them or for one related id.  A new grant for the same role and
-- related id replaces the old one.
CREATE FUNCTION grant_user_tokens(user_id uuid, role name, privilege text, related_id text DEFAULT NULL)
    RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM tokenvault._user_must_exist(user_id), tokenvault._require(role, 'role');
    IF privilege IS NULL OR privilege NOT IN ('read', 'write') THEN
        RAISE EXCEPTION 'unknown privilege "%"', privilege
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Grant read, or write (which reads too).';
    ELSIF tokenvault._role(role) IS NULL THEN
        RAISE EXCEPTION 'role "%" does not exist', role USING ERRCODE = 'undefined_object';
    ELSIF related_id = '' THEN
        RAISE EXCEPTION 'related_id must not be empty (NULL grants all of the user''s tokens)'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    INSERT INTO tokenvault.user_token_grants (user_id, grantee, privilege, related_id, granted_by)
    VALUES (user_id, tokenvault._role(role), privilege, related_id, tokenvault._caller())
    ON CONFLICT ON CONSTRAINT user_token_grants_user_id_grantee_related_id_key DO UPDATE
        SET privilege = EXCLUDED.privilege, granted_by = EXCLUDED.granted_by, created_at = now();
END
$$;

-- Take a grant back (the one for that related id, or the one for all the
-- user's tokens when NULL); whether there was one.
CREATE FUNCTION revoke_user_tokens(user_id uuid, role name, related_id text DEFAULT NULL) RETURNS boolean
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM tokenvault._user_must_exist(user_id), tokenvault._require(role, 'role');
    DELETE FROM tokenvault.user_token_grants g
     WHERE g.user_id = revoke_user_tokens.user_id AND g.grantee = tokenvault._role(role)
       AND g.related_id IS NOT DISTINCT FROM revoke_user_tokens.related_id;
    RETURN FOUND;
END
$$;

------------------------------------------------------------------------------
-- Keys: every sealed column is counted and re-sealed
------------------------------------------------------------------------------

-- Where secrets are sealed: the table, the column, the associated data (an
-- expression over the row "t") and what the value is.
CREATE FUNCTION _sealed_columns() RETURNS TABLE (tbl regclass, col name, aad text, kind text)
    LANGUAGE sql STABLE AS $$
    VALUES ('tokenvault.clients'::pg_catalog.regclass, 'secret'::name, $a$'client:' || t.id$a$, 'jsonb'),
           ('tokenvault.auths', 'secret', $a$'auth:' || t.id$a$, 'jsonb'),
           ('tokenvault.webhooks', 'secret', $a$'webhook:' || t.id$a$, 'text'),
           ('tokenvault.auth_states', 'verifier', $a$'state:' || t.state$a$, 'text'),
           ('tokenvault.private_tokens', 'value',
            $a$tokenvault._token_aad('private', t.owner_name, t.related_id, t.key)$a$, 'text'),
           ('tokenvault.user_tokens', 'value',
            $a$tokenvault._token_aad('user', t.user_id::text, t.related_id, t.key)$a$, 'text')
$$;

CREATE OR REPLACE FUNCTION key_usage() RETURNS TABLE (key_id bigint, newest boolean, secrets bigint)
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
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

-- Re-seal what a range of a table's pages holds under an older key.  Rows
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
             WHERE t.ctid >= $1 AND t.ctid < $2 AND t.%2$I IS NOT NULL AND tokenvault._key_id(t.%2$I) <> $3
            RETURNING 1)
        SELECT count(*) FROM resealed $q$, s.tbl, s.col, s.aad, s.kind)
    INTO n USING format('(%s,0)', first_page)::tid, format('(%s,0)', first_page + pages)::tid, newest;
    RETURN n;
END
$$;

-- Re-seal every secret not under the newest key, 100 pages at a time.
CREATE OR REPLACE FUNCTION rotate_key() RETURNS bigint
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    newest bigint := (SELECT r.key_id FROM tokenvault.key_ring() r WHERE r.newest);
    total bigint := 0;
    s record;
    last_page bigint;
    page bigint;
    n bigint;
BEGIN
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

DROP FUNCTION _reseal_batch(regclass, text, uuid, bigint);

------------------------------------------------------------------------------
-- Privileges of what is new
------------------------------------------------------------------------------

REVOKE ALL ON private_tokens, user_tokens, user_token_grants FROM PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA tokenvault FROM PUBLIC;
GRANT SELECT (owner, owner_name, related_id, key, created_at, updated_at) ON private_tokens TO tokenvault_app;
GRANT SELECT ON user_token_grants TO tokenvault_admin;
GRANT EXECUTE ON FUNCTION
    put_private_token(text, text, text), get_private_token(text, text), list_private_tokens(text),
    delete_private_token(text, text),
    put_user_token(uuid, text, text, text), get_user_token(uuid, text, text), list_user_tokens(uuid, text),
    delete_user_token(uuid, text, text)
    TO tokenvault_app;
GRANT EXECUTE ON FUNCTION grant_user_tokens(uuid, name, text, text), revoke_user_tokens(uuid, name, text)
    TO tokenvault_admin;
