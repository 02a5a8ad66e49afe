-- Users: the application's end users, and deleting them with what they hold

CREATE FUNCTION create_user(external_user_id text, name text DEFAULT NULL) RETURNS uuid
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    new_id uuid;
BEGIN
    PERFORM tokenvault._admit_app();
    PERFORM tokenvault._refuse_null(external_user_id IS NULL, 'external_user_id'::text);
    IF external_user_id = '' OR length(external_user_id) > 1024 THEN
        RAISE EXCEPTION 'external_user_id must be 1 to 1024 characters long'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    INSERT INTO tokenvault.users (external_user_id, name)
    VALUES (create_user.external_user_id, create_user.name)
    ON CONFLICT ON CONSTRAINT users_external_user_id_key DO NOTHING
    RETURNING id INTO new_id;
    IF new_id IS NULL THEN
        RAISE EXCEPTION 'user with external id "%" already exists', external_user_id
            USING ERRCODE = 'unique_violation',
                  HINT = 'Look it up with tokenvault.find_user().';
    END IF;
    RETURN new_id;
END
$$;

CREATE FUNCTION find_user(external_user_id text) RETURNS uuid
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT tokenvault._admit_app();
    SELECT id FROM tokenvault.users u WHERE u.external_user_id = find_user.external_user_id
$$;

CREATE FUNCTION _user_must_exist(user_id uuid) RETURNS void
    LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM tokenvault._admit_app();
    PERFORM tokenvault._refuse_null(user_id IS NULL, 'user id'::text);
    IF NOT EXISTS (SELECT FROM tokenvault.users WHERE id = user_id) THEN
        RAISE EXCEPTION 'user % does not exist', user_id
            USING ERRCODE = 'undefined_object',
                  HINT = 'Create it with tokenvault.create_user(), or look it up with tokenvault.find_user().';
    END IF;
END
$$;

-- A user's auths of a client private to another role are not the caller's
-- to delete, with the user or alone.
CREATE FUNCTION _refuse_hidden_auths(user_id uuid) RETURNS void
    LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    hidden uuid := (SELECT a.client_id FROM tokenvault.auths a
                     WHERE a.user_id = _refuse_hidden_auths.user_id
                       AND NOT tokenvault._client_visible(a.client_id) LIMIT 1);
BEGIN
    IF hidden IS NOT NULL THEN
        RAISE EXCEPTION 'user % holds auths of client %, which is private to another role', user_id, hidden
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'A member of the client''s owner deletes them first, with tokenvault.delete_auth().';
    END IF;
END
$$;

-- The user's instances go before its auths, which they may use.  Deleting a
-- user takes all it holds, so the caller must be able to delete each of its
-- auths and user tokens.
CREATE FUNCTION delete_user(user_id uuid) RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM tokenvault._admit_app();
    PERFORM tokenvault._user_must_exist(user_id), tokenvault._refuse_hidden_auths(user_id);
    PERFORM tokenvault._user_token_access(user_id, r.related_id, 'write'::text)
       FROM (SELECT DISTINCT t.related_id FROM tokenvault.user_tokens t WHERE t.user_id = delete_user.user_id) r
      WHERE NOT (SELECT o.rolsuper FROM pg_catalog.pg_roles o WHERE o.rolname = tokenvault._caller());
    DELETE FROM tokenvault.instances i WHERE i.owner = delete_user.user_id;
    DELETE FROM tokenvault.auths a WHERE a.user_id = delete_user.user_id;
    DELETE FROM tokenvault.users WHERE id = user_id;
END
$$;

CREATE FUNCTION user_auths(user_id uuid)
    RETURNS TABLE (id uuid, name text, service text, client_id uuid, scopes text[],
                   status text, expires_at timestamptz, created_at timestamptz)
    LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM tokenvault._admit_app();
    PERFORM tokenvault._user_must_exist(user_id);
    RETURN QUERY
        SELECT a.id, a.name, a.service, a.client_id, a.scopes, a.status, a.expires_at, a.created_at
          FROM tokenvault.auths a
         WHERE a.user_id = user_auths.user_id AND tokenvault._client_visible(a.client_id)
         ORDER BY a.created_at, a.id;
END
$$;

CREATE FUNCTION delete_user_auths(user_id uuid, force boolean DEFAULT false) RETURNS integer
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    ids uuid[];
    n integer;
BEGIN
    PERFORM tokenvault._admit_app();
    PERFORM tokenvault._user_must_exist(user_id), tokenvault._refuse_hidden_auths(user_id);
    ids := ARRAY(SELECT a.id FROM tokenvault.auths a WHERE a.user_id = delete_user_auths.user_id);
    IF coalesce(force, false) THEN
        PERFORM tokenvault._release_auths(ids);
    END IF;
    PERFORM tokenvault._refuse_auths_in_use(ids);
    DELETE FROM tokenvault.auths a WHERE a.user_id = delete_user_auths.user_id;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;
