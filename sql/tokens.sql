-- Token stores: app-private tokens per role, and user tokens shared by grants

-- 16 MiB, as the reference's store takes.
CREATE FUNCTION _check_token(related_id text, key text, value text DEFAULT '') RETURNS void
    LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM tokenvault._refuse_null(related_id IS NULL, 'related_id'::text), tokenvault._refuse_null(key IS NULL, 'key'::text),
            tokenvault._refuse_null(value IS NULL, 'value'::text);
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

CREATE FUNCTION put_private_token(related_id text, key text, value text) RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    me name := tokenvault._caller();
BEGIN
    PERFORM tokenvault._admit_app();
    PERFORM tokenvault._check_token(related_id, key, value);
    INSERT INTO tokenvault.private_tokens AS t (owner, owner_name, related_id, key, value)
    VALUES (tokenvault._role(me), me, related_id, key,
            tokenvault._seal_private(value, me, related_id, key))
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
    PERFORM tokenvault._admit_app();
    DELETE FROM tokenvault.private_tokens t
     WHERE t.owner = tokenvault._role(tokenvault._caller()) AND t.owner_name = tokenvault._caller()
       AND t.related_id = delete_private_token.related_id
       AND t.key = delete_private_token.key;
    RETURN FOUND;
END
$$;

-- A role by its exact name (no identifier quoting or case folding), NULL
-- when there is none.
CREATE FUNCTION _role(name name) RETURNS regrole
    LANGUAGE sql STABLE AS $$
    SELECT r.oid::pg_catalog.regrole FROM pg_catalog.pg_roles r WHERE r.rolname = $1
$$;

-- Whether a role has what is granted to another (it, or a role it inherits
-- from); false for a role dropped since the grant, and for another role
-- that has its OID since (a restore elsewhere, OIDs wrapping around): the
-- grantee is matched by OID and name.
CREATE FUNCTION _holds(member name, grantee regrole, grantee_name name) RETURNS boolean
    LANGUAGE sql STABLE AS $$
    SELECT EXISTS (SELECT FROM pg_catalog.pg_roles r
                    WHERE r.oid = grantee::pg_catalog.oid AND r.rolname = grantee_name
                      AND pg_catalog.pg_has_role(member, r.oid, 'USAGE'))
$$;

-- Refuse unless the calling role (or a role it inherits from) holds a grant
-- that covers the related id: "write" for writing, either for reading.
-- Read afresh in every call, so a revoke applies from the next statement on.
CREATE FUNCTION _user_token_access(user_id uuid, related_id text, need text) RETURNS void
    LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM tokenvault._user_must_exist(user_id);
    IF NOT EXISTS (SELECT FROM tokenvault.user_token_grants g
                    WHERE g.user_id = _user_token_access.user_id AND g.revoked_at IS NULL
                      AND (g.related_id IS NULL OR g.related_id = _user_token_access.related_id)
                      AND (g.privilege = 'write' OR need = 'read')
                      AND tokenvault._holds(tokenvault._caller(), g.grantee, g.grantee_name)) THEN
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
    PERFORM tokenvault._admit_app();
    PERFORM tokenvault._check_token(related_id, key, value),
            tokenvault._user_token_access(user_id, related_id, 'write');
    INSERT INTO tokenvault.user_tokens AS t (user_id, related_id, key, value)
    VALUES (user_id, related_id, key,
            tokenvault._seal_user_token(value, user_id, related_id, key))
    ON CONFLICT ON CONSTRAINT user_tokens_pkey DO UPDATE SET value = EXCLUDED.value, updated_at = now();
END
$$;

CREATE FUNCTION get_user_token(user_id uuid, related_id text, key text) RETURNS text
    LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM tokenvault._admit_app();
    PERFORM tokenvault._check_token(related_id, key), tokenvault._user_token_access(user_id, related_id, 'read');
    RETURN (SELECT tokenvault._open_user_token(t.value, t.user_id, t.related_id, t.key)
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
    PERFORM tokenvault._admit_app();
    IF related_id IS NOT NULL OR NOT EXISTS (
            SELECT FROM tokenvault.user_token_grants g
             WHERE g.user_id = _user_token_list_access.user_id AND g.revoked_at IS NULL
               AND tokenvault._holds(tokenvault._caller(), g.grantee, g.grantee_name)) THEN
        PERFORM tokenvault._user_token_access(user_id, related_id, 'read');
    END IF;
END
$$;

CREATE FUNCTION list_user_tokens(user_id uuid, related_id text DEFAULT NULL)
    RETURNS TABLE (related_id text, key text, value text)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT tokenvault._user_token_list_access($1, $2);
    SELECT t.related_id, t.key, tokenvault._open_user_token(t.value, t.user_id, t.related_id, t.key)
      FROM tokenvault.user_tokens t
     WHERE t.user_id = $1 AND ($2 IS NULL OR t.related_id = $2)
       AND EXISTS (SELECT FROM tokenvault.user_token_grants g
                    WHERE g.user_id = t.user_id AND g.revoked_at IS NULL
                      AND (g.related_id IS NULL OR g.related_id = t.related_id)
                      AND tokenvault._holds(tokenvault._caller(), g.grantee, g.grantee_name))
     ORDER BY t.related_id, t.key
$$;

CREATE FUNCTION delete_user_token(user_id uuid, related_id text, key text) RETURNS boolean
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM tokenvault._admit_app();
    PERFORM tokenvault._check_token(related_id, key), tokenvault._user_token_access(user_id, related_id, 'write');
    DELETE FROM tokenvault.user_tokens t
     WHERE t.user_id = delete_user_token.user_id AND t.related_id = delete_user_token.related_id
       AND t.key = delete_user_token.key;
    RETURN FOUND;
END
$$;

-- Share a user's tokens with a role: 'read', or 'write' (which reads too),
-- for all of them or for one related id.  A new grant for the same role and
-- related id takes the place of the old one, which stays, revoked by the
-- granter.  Every grant is an event.
CREATE FUNCTION grant_user_tokens(user_id uuid, role name, privilege text, related_id text DEFAULT NULL)
    RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    me name := tokenvault._caller();
    replaced text;
BEGIN
    PERFORM tokenvault._admit_admin();
    PERFORM tokenvault._user_must_exist(user_id), tokenvault._refuse_null(role IS NULL, 'role'::text);
    IF privilege IS NULL OR privilege NOT IN ('read', 'write') THEN
        RAISE EXCEPTION 'unknown privilege "%"', privilege
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Grant read, or write (which reads too).';
    ELSIF tokenvault._role(role) IS NULL THEN
        RAISE EXCEPTION 'role "%" does not exist', role USING ERRCODE = 'undefined_object';
    ELSIF related_id = '' THEN
        RAISE EXCEPTION 'related_id must not be empty (NULL grants all of the user''s tokens)'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    replaced := tokenvault._end_user_token_grant(user_id, role, related_id, me);
    INSERT INTO tokenvault.user_token_grants (user_id, grantee, privilege, related_id, granted_by, grantee_name)
    VALUES (user_id, tokenvault._role(role), privilege, related_id, me, role);
    PERFORM tokenvault._user_token_grant_event('user_tokens.granted'::text, user_id, role, privilege, related_id, me, replaced);
END
$$;

-- Take a grant back (the one for that related id, or the one for all the
-- user's tokens when NULL); whether there was one.  The row stays, marked
-- revoked, and the revoke is an event.
CREATE FUNCTION revoke_user_tokens(user_id uuid, role name, related_id text DEFAULT NULL) RETURNS boolean
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    me name := tokenvault._caller();
    ended text;
BEGIN
    PERFORM tokenvault._admit_admin();
    PERFORM tokenvault._user_must_exist(user_id), tokenvault._refuse_null(role IS NULL, 'role'::text);
    ended := tokenvault._end_user_token_grant(user_id, role, related_id, me);
    IF ended IS NOT NULL THEN
        PERFORM tokenvault._user_token_grant_event('user_tokens.revoked'::text, user_id, role, ended, related_id, me, NULL::text);
    END IF;
    RETURN ended IS NOT NULL;
END
$$;

-- Mark the live grant of a role on a user's tokens (for one related id, or
-- all when NULL) revoked by who; its privilege, NULL when there was none.
-- The user's row lock makes grants and revokes of one user take turns, so
-- that two of them cannot both find no live grant and both add one.
CREATE FUNCTION _end_user_token_grant(user_id uuid, role name, related_id text, who name) RETURNS text
    LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    ended text;
BEGIN
    PERFORM FROM tokenvault.users u WHERE u.id = _end_user_token_grant.user_id FOR NO KEY UPDATE;
    UPDATE tokenvault.user_token_grants g SET revoked_at = now(), revoked_by = who
     WHERE g.user_id = _end_user_token_grant.user_id AND g.grantee = tokenvault._role(role)
       AND g.related_id IS NOT DISTINCT FROM _end_user_token_grant.related_id AND g.revoked_at IS NULL
    RETURNING g.privilege INTO ended;
    RETURN ended;
END
$$;

-- A grant or revoke as an event: who gave whom what on whose tokens.
CREATE FUNCTION _user_token_grant_event(kind text, user_id uuid, role name, privilege text, related_id text,
                                        who name, replaced text) RETURNS void
    LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM tokenvault._publish(kind, NULL::uuid, jsonb_build_object(
        'event', kind,
        'user_id', user_id,
        'external_user_id', (SELECT left(u.external_user_id, 400) FROM tokenvault.users u
                              WHERE u.id = _user_token_grant_event.user_id),
        'grantee', role,
        'privilege', privilege,
        'related_id', left(related_id, 400),
        'by', who)
        || CASE WHEN replaced IS NULL THEN '{}' ELSE jsonb_build_object('replaces', replaced) END);
END
$$;

-- A user deleted takes its tokens along (user_tokens' foreign key), and
-- ends the grants on them, which stay as history: revoked by the role that
-- deleted the user, each an event.
CREATE FUNCTION _user_deleted_grants() RETURNS trigger
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    g tokenvault.user_token_grants;
BEGIN
    FOR g IN UPDATE tokenvault.user_token_grants t SET revoked_at = now(), revoked_by = tokenvault._caller()
              WHERE t.user_id = OLD.id AND t.revoked_at IS NULL
             RETURNING t.* LOOP
        PERFORM tokenvault._publish('user_tokens.revoked'::text, NULL::uuid, jsonb_build_object(
            'event', 'user_tokens.revoked',
            'user_id', OLD.id,
            'external_user_id', left(OLD.external_user_id, 400),
            'grantee', coalesce((SELECT r.rolname::text FROM pg_catalog.pg_roles r WHERE r.oid = g.grantee::oid),
                                g.grantee::text),
            'privilege', g.privilege,
            'related_id', left(g.related_id, 400),
            'by', g.revoked_by,
            'reason', 'user deleted'::text));
    END LOOP;
    RETURN NULL;
END
$$;
CREATE TRIGGER users_deleted_grants AFTER DELETE ON users
    FOR EACH ROW EXECUTE FUNCTION _user_deleted_grants();
