-- Solutions, slots and instances: what an application calls to embed them

-- The table's limits on a title and a description, said in words (a NULL
-- is not checked: update_solution() keeps that field).
CREATE FUNCTION _check_solution_text(title text, description text) RETURNS void
    LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF title = '' OR length(title) > 1024 THEN
        RAISE EXCEPTION 'a solution needs a title of 1 to 1024 characters' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF length(description) > 65536 THEN
        RAISE EXCEPTION 'a solution''s description is limited to 65536 characters'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
END
$$;

CREATE FUNCTION create_solution(title text, description text DEFAULT '') RETURNS uuid
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    new_id uuid;
BEGIN
    PERFORM tokenvault._admit_admin();
    PERFORM tokenvault._check_solution_text(coalesce(title, ''), description);
    INSERT INTO tokenvault.solutions (title, description)
    VALUES (title, coalesce(description, ''))
    RETURNING id INTO new_id;
    RETURN new_id;
END
$$;

-- Rename or describe again; a NULL leaves that field as it is.
CREATE FUNCTION update_solution(solution_id uuid, title text DEFAULT NULL, description text DEFAULT NULL)
    RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    s tokenvault.solutions := tokenvault._solution_must_exist(solution_id);
BEGIN
    PERFORM tokenvault._admit_admin();
    PERFORM tokenvault._check_solution_text(title, description);
    UPDATE tokenvault.solutions t
       SET title = coalesce(update_solution.title, t.title),
           description = coalesce(update_solution.description, t.description),
           updated_at = now()
     WHERE t.id = s.id;
END
$$;

CREATE FUNCTION delete_solution(solution_id uuid, force boolean DEFAULT false) RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    s tokenvault.solutions := tokenvault._solution_must_exist(solution_id);
    n bigint;
BEGIN
    PERFORM tokenvault._admit_admin();
    SELECT count(*) INTO n FROM tokenvault.instances i WHERE i.solution_id = s.id;
    IF n > 0 AND NOT coalesce(force, false) THEN
        RAISE EXCEPTION 'solution % has % instance(s)', s.id, n
            USING ERRCODE = 'dependent_objects_still_exist',
                  HINT = 'Delete them first, or call tokenvault.delete_solution(id, force => true) to delete them too.';
    END IF;
    DELETE FROM tokenvault.instances i WHERE i.solution_id = s.id;
    DELETE FROM tokenvault.solutions WHERE id = s.id;
END
$$;

-- Check a slot's settings for its kind.  Unknown keys are refused, as for
-- clients: a misspelt "requried" must not pass silently.
CREATE FUNCTION _slot_settings(kind text, settings jsonb) RETURNS jsonb
    LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    known constant text[] := CASE kind WHEN 'auth'
        THEN ARRAY['client_id', 'service', 'scopes', 'required', 'force_unique', 'static_auth_id']
        ELSE ARRAY['required', 'default'] END;
    k text;
BEGIN
    settings := coalesce(settings, '{}');
    IF jsonb_typeof(settings) <> 'object' THEN
        RAISE EXCEPTION 'slot settings must be a JSON object' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    FOR k IN SELECT jsonb_object_keys(settings) LOOP
        IF NOT k = ANY (known) THEN
            RAISE EXCEPTION 'unknown setting "%" for % slot', k, CASE kind WHEN 'auth' THEN 'an auth' ELSE 'a config' END
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Known settings: ' || array_to_string(known, ', ') || '.';
        ELSIF k IN ('required', 'force_unique') AND jsonb_typeof(settings->k) <> 'boolean' THEN
            RAISE EXCEPTION 'setting "%" must be true or false', k USING ERRCODE = 'invalid_parameter_value';
        ELSIF k IN ('client_id', 'static_auth_id') AND (jsonb_typeof(settings->k) <> 'string'
                OR settings->>k !~* '^[0-9a-f]{8}-?([0-9a-f]{4}-?){3}[0-9a-f]{12}$') THEN
            RAISE EXCEPTION 'setting "%" must be a uuid', k USING ERRCODE = 'invalid_parameter_value';
        ELSIF k = 'service' AND (jsonb_typeof(settings->k) <> 'string' OR settings->>k = '') THEN
            RAISE EXCEPTION 'setting "service" must be a non-empty string' USING ERRCODE = 'invalid_parameter_value';
        ELSIF k = 'scopes' AND (jsonb_typeof(settings->k) <> 'array'
                OR EXISTS (SELECT FROM jsonb_array_elements(settings->k) e WHERE jsonb_typeof(e) <> 'string')) THEN
            RAISE EXCEPTION 'setting "scopes" must be an array of strings' USING ERRCODE = 'invalid_parameter_value';
        ELSIF k = 'default' AND jsonb_typeof(settings->k) = 'null' THEN
            RAISE EXCEPTION 'setting "default" must not be null' USING ERRCODE = 'invalid_parameter_value',
                HINT = 'Leave it out for no default.';
        END IF;
    END LOOP;
    IF kind = 'auth' AND num_nonnulls(settings->'client_id', settings->'service') <> 1 THEN
        RAISE EXCEPTION 'an auth slot takes either a client_id or a service'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'With client_id, auths must be of that client; with service, of any client of that service.';
    ELSIF settings ? 'static_auth_id' AND (settings->'force_unique')::boolean THEN
        RAISE EXCEPTION 'a static slot cannot force a unique auth: every instance shares its auth'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF settings ? 'client_id' THEN
        PERFORM tokenvault._client_must_exist((settings->>'client_id')::uuid);
    END IF;
    IF settings ? 'static_auth_id' THEN
        PERFORM tokenvault._auth_must_exist((settings->>'static_auth_id')::uuid);
    END IF;
    RETURN settings;
END
$$;

-- A slot's row from checked settings.
CREATE FUNCTION _slot_from(solution_id uuid, external_id text, kind text, s jsonb) RETURNS tokenvault.slots
    LANGUAGE sql IMMUTABLE AS $$
    SELECT ROW(solution_id, external_id, kind, NULL, (s->>'client_id')::uuid, s->>'service',
               CASE WHEN s ? 'scopes' THEN ARRAY(SELECT pg_catalog.jsonb_array_elements_text(s->'scopes')) END,
               coalesce((s->>'required')::boolean, false), coalesce((s->>'force_unique')::boolean, false),
               (s->>'static_auth_id')::uuid, s->'default', NULL)::tokenvault.slots
$$;

-- A slot's settings as add_slot() takes them.
CREATE FUNCTION _slot_settings_of(s tokenvault.slots) RETURNS jsonb
    LANGUAGE sql IMMUTABLE AS $$
    SELECT pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
        'client_id', s.client_id, 'service', s.service, 'scopes', pg_catalog.to_jsonb(s.scopes),
        'required', s.required, 'force_unique', CASE WHEN s.kind = 'auth' THEN s.force_unique END,
        'static_auth_id', s.static_auth_id, 'default', s.default_value))
$$;

CREATE FUNCTION add_slot(solution_id uuid, external_id text, kind text, settings jsonb DEFAULT '{}')
    RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r tokenvault.slots;
BEGIN
    PERFORM tokenvault._admit_admin();
    PERFORM tokenvault._solution_must_exist(solution_id);
    IF coalesce(external_id, '') = '' OR length(external_id) > 255 THEN
        RAISE EXCEPTION 'externalId must be 1 to 255 characters long' USING ERRCODE = 'invalid_parameter_value';
    ELSIF kind IS NULL OR kind NOT IN ('auth', 'config') THEN
        RAISE EXCEPTION 'unknown slot kind "%"', kind
            USING ERRCODE = 'invalid_parameter_value', HINT = 'A slot is of kind auth or config.';
    ELSIF EXISTS (SELECT FROM tokenvault.slots s
                   WHERE s.solution_id = add_slot.solution_id AND s.external_id = add_slot.external_id) THEN
        RAISE EXCEPTION 'solution % already has a slot "%"', solution_id, external_id
            USING ERRCODE = 'unique_violation',
                  HINT = 'Change it with tokenvault.update_slot().';
    END IF;
    r := tokenvault._slot_from(solution_id, external_id, kind, tokenvault._slot_settings(kind, settings));
    INSERT INTO tokenvault.slots (solution_id, external_id, kind, client_id, service, scopes, required,
                                  force_unique, static_auth_id, default_value)
    VALUES (r.solution_id, r.external_id, r.kind, r.client_id, r.service, r.scopes, r.required,
            r.force_unique, r.static_auth_id, r.default_value);
END
$$;

-- Settings given replace those stored; a key set to null clears it.
CREATE FUNCTION update_slot(solution_id uuid, external_id text, settings jsonb) RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    s tokenvault.slots;
    r tokenvault.slots;
BEGIN
    PERFORM tokenvault._admit_admin();
    PERFORM tokenvault._solution_must_exist(solution_id), tokenvault._refuse_null(settings IS NULL, 'settings'::text);
    s := tokenvault._slot_must_exist(solution_id, external_id, NULL);
    IF jsonb_typeof(settings) <> 'object' THEN
        RAISE EXCEPTION 'slot settings must be a JSON object' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- client_id and service replace each other
    IF settings ? 'client_id' OR settings ? 'service' THEN
        settings := jsonb_build_object('client_id', NULL, 'service', NULL) || settings;
    END IF;
    r := tokenvault._slot_from(s.solution_id, s.external_id, s.kind,
             tokenvault._slot_settings(s.kind, jsonb_strip_nulls(tokenvault._slot_settings_of(s) || settings)));
    UPDATE tokenvault.slots t
       SET client_id = r.client_id, service = r.service, scopes = r.scopes, required = r.required,
           force_unique = r.force_unique, static_auth_id = r.static_auth_id, default_value = r.default_value
     WHERE t.solution_id = s.solution_id AND t.external_id = s.external_id;
END
$$;

-- The slot goes, and its values in every instance with it.
CREATE FUNCTION delete_slot(solution_id uuid, external_id text) RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM tokenvault._admit_admin();
    PERFORM tokenvault._solution_must_exist(solution_id), tokenvault._slot_must_exist(solution_id, external_id, NULL);
    DELETE FROM tokenvault.slots s
     WHERE s.solution_id = delete_slot.solution_id AND s.external_id = delete_slot.external_id;
END
$$;

-- The entries of an auth_values or config_values argument, checked:
-- [{"externalId": ..., <field>: ...}], each external id once.  A JSON null
-- in <field> comes back as NULL: it clears the slot.
CREATE FUNCTION _slot_values(list jsonb, arg text, field text) RETURNS TABLE (external_id text, value jsonb)
    LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    e jsonb;
    seen text[] := '{}';
BEGIN
    IF list IS NULL THEN
        RETURN;
    ELSIF jsonb_typeof(list) <> 'array' THEN
        RAISE EXCEPTION '% must be a JSON array', arg
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = format('Give [{"externalId": ..., "%s": ...}, ...].', field);
    END IF;
    FOR e IN SELECT jsonb_array_elements(list) LOOP
        IF jsonb_typeof(e) <> 'object' OR jsonb_typeof(e->'externalId') IS DISTINCT FROM 'string'
           OR NOT e ? field OR EXISTS (SELECT FROM jsonb_object_keys(e) k WHERE k NOT IN ('externalId', field)) THEN
            -- (the entry's keys only: a value is the user's and stays out of errors)
            RAISE EXCEPTION 'each entry of % must be {"externalId": ..., "%": ...}', arg, field
                USING ERRCODE = 'invalid_parameter_value',
                      DETAIL = CASE WHEN jsonb_typeof(e) = 'object'
                                    THEN format('Found an entry with the keys: %s.',
                                                (SELECT string_agg(k, ', ' ORDER BY k) FROM jsonb_object_keys(e) k))
                                    ELSE format('Found a JSON %s.', jsonb_typeof(e)) END;
        ELSIF e->>'externalId' = ANY (seen) THEN
            RAISE EXCEPTION 'externalId "%" is given twice in %', e->>'externalId', arg
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        seen := seen || (e->>'externalId');
        external_id := e->>'externalId';
        value := CASE WHEN jsonb_typeof(e->field) <> 'null' THEN e->field END;
        RETURN NEXT;
    END LOOP;
END
$$;

-- Fill or clear an instance's slots; the triggers hold the rules.
CREATE FUNCTION _set_instance_values(i tokenvault.instances, auth_values jsonb, config_values jsonb) RETURNS void
    LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r record;
    s tokenvault.slots;
BEGIN
    FOR r IN SELECT * FROM tokenvault._slot_values(auth_values, 'auth_values', 'authId') LOOP
        s := tokenvault._slot_must_exist(i.solution_id, r.external_id, 'auth');
        IF s.static_auth_id IS NOT NULL THEN
            RAISE EXCEPTION 'slot "%" is static: its auth is the solution''s and cannot be set or changed', s.external_id
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Leave it out: every instance of the solution uses the slot''s static auth.';
        ELSIF r.value IS NULL THEN
            DELETE FROM tokenvault.instance_auth_values v WHERE v.instance_id = i.id AND v.external_id = s.external_id;
        ELSIF jsonb_typeof(r.value) <> 'string' OR r.value #>> '{}' !~* '^[0-9a-f]{8}-?([0-9a-f]{4}-?){3}[0-9a-f]{12}$' THEN
            RAISE EXCEPTION 'authId for "%" must be a uuid', s.external_id USING ERRCODE = 'invalid_parameter_value';
        ELSE
            INSERT INTO tokenvault.instance_auth_values (instance_id, solution_id, external_id, auth_id)
            VALUES (i.id, i.solution_id, s.external_id, (r.value #>> '{}')::uuid)
            ON CONFLICT (instance_id, external_id) DO UPDATE SET auth_id = EXCLUDED.auth_id;
        END IF;
    END LOOP;
    FOR r IN SELECT * FROM tokenvault._slot_values(config_values, 'config_values', 'value') LOOP
        s := tokenvault._slot_must_exist(i.solution_id, r.external_id, 'config');
        IF r.value IS NULL THEN
            DELETE FROM tokenvault.instance_config_values v WHERE v.instance_id = i.id AND v.external_id = s.external_id;
        ELSE
            INSERT INTO tokenvault.instance_config_values (instance_id, solution_id, external_id, value)
            VALUES (i.id, i.solution_id, s.external_id, r.value)
            ON CONFLICT (instance_id, external_id) DO UPDATE SET value = EXCLUDED.value;
        END IF;
    END LOOP;
END
$$;

-- A new instance starts disabled, as in Tray: enable it with update_instance().
CREATE FUNCTION create_instance(solution_id uuid, owner uuid, name text,
                                auth_values jsonb DEFAULT '[]', config_values jsonb DEFAULT '[]') RETURNS uuid
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    i tokenvault.instances;
BEGIN
    PERFORM tokenvault._admit_app();
    PERFORM tokenvault._solution_must_exist(solution_id), tokenvault._user_must_exist(owner);
    IF coalesce(name, '') = '' OR length(name) > 1024 THEN
        RAISE EXCEPTION 'an instance needs a name of 1 to 1024 characters' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    INSERT INTO tokenvault.instances (solution_id, owner, name)
    VALUES (solution_id, owner, name)
    RETURNING * INTO i;
    PERFORM tokenvault._set_instance_values(i, auth_values, config_values);
    RETURN i.id;
END
$$;

-- A NULL leaves that part as it is.  Values given are set slot by slot
-- (others keep theirs); a null authId or value clears a slot.  Disabling
-- comes before the values change, enabling after.
CREATE FUNCTION update_instance(instance_id uuid, name text DEFAULT NULL, enabled boolean DEFAULT NULL,
                                auth_values jsonb DEFAULT NULL, config_values jsonb DEFAULT NULL) RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    i tokenvault.instances := tokenvault._instance_must_exist(instance_id);
BEGIN
    PERFORM tokenvault._admit_app();
    IF name = '' OR length(name) > 1024 THEN
        RAISE EXCEPTION 'an instance needs a name of 1 to 1024 characters' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    UPDATE tokenvault.instances t
       SET name = coalesce(update_instance.name, t.name),
           enabled = CASE WHEN update_instance.enabled THEN t.enabled ELSE coalesce(update_instance.enabled, t.enabled) END,
           updated_at = now()
     WHERE t.id = i.id;
    PERFORM tokenvault._set_instance_values(i, auth_values, config_values);
    IF update_instance.enabled THEN
        UPDATE tokenvault.instances t SET enabled = true WHERE t.id = i.id;
    END IF;
END
$$;

CREATE FUNCTION delete_instance(instance_id uuid) RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM tokenvault._admit_app();
    DELETE FROM tokenvault.instances WHERE id = (tokenvault._instance_must_exist(instance_id)).id;
END
$$;

-- The auth values of a user's instances, static slots included, with the
-- slots' positions (Tray lists them in slot order).  Plain SQL, so that the
-- planner inlines it and pushes an instance id down into both halves.
CREATE FUNCTION _auth_value_rows(owner uuid)
    RETURNS TABLE (instance_id uuid, external_id text, auth_id uuid, "position" integer)
    LANGUAGE sql STABLE AS $$
    SELECT v.instance_id, v.external_id, v.auth_id, s.position
      FROM tokenvault.instances i
      JOIN tokenvault.instance_auth_values v ON v.instance_id = i.id
      JOIN tokenvault.slots s ON s.solution_id = v.solution_id AND s.external_id = v.external_id
     WHERE i.owner = $1
    UNION ALL
    SELECT i.id, s.external_id, s.static_auth_id, s.position
      FROM tokenvault.instances i
      JOIN tokenvault.slots s ON s.solution_id = i.solution_id AND s.static_auth_id IS NOT NULL
     WHERE i.owner = $1
$$;

-- Tray's "Get Solution Instance" node.  authValues hold the static slots'
-- auths too; configValues the slots' defaults where no value is set, each
-- value JSON-encoded as a string, as Tray returns them.
CREATE FUNCTION instance(instance_id uuid) RETURNS jsonb
    LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    i tokenvault.instances := tokenvault._instance_must_exist(instance_id);
BEGIN
    PERFORM tokenvault._admit_app();
    RETURN (
        SELECT jsonb_build_object(
            'id', i.id,
            'name', i.name,
            'enabled', i.enabled,
            'owner', i.owner,
            'created', to_char(i.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
            'solution', jsonb_build_object('id', s.id, 'title', s.title, 'description', s.description),
            'authValues', coalesce((
                SELECT jsonb_agg(jsonb_build_object('externalId', r.external_id, 'authId', r.auth_id)
                                 ORDER BY r.position)
                  FROM tokenvault._auth_value_rows(i.owner) r WHERE r.instance_id = i.id), '[]'),
            'configValues', coalesce((
                SELECT jsonb_agg(jsonb_build_object('externalId', sl.external_id,
                                                    'value', coalesce(v.value, sl.default_value)::text)
                                 ORDER BY sl.position)
                  FROM tokenvault.slots sl
                  LEFT JOIN tokenvault.instance_config_values v
                         ON v.instance_id = i.id AND v.external_id = sl.external_id
                 WHERE sl.solution_id = i.solution_id AND sl.kind = 'config'
                   AND coalesce(v.value, sl.default_value) IS NOT NULL), '[]'))
          FROM tokenvault.solutions s WHERE s.id = i.solution_id);
END
$$;

-- Tray's mapping query: a user's instances with their auth values, and the
-- user's auths, so that an application maps one to the other in one call.
CREATE FUNCTION user_instances(user_id uuid) RETURNS jsonb
    LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM tokenvault._admit_app();
    PERFORM tokenvault._user_must_exist(user_id);
    RETURN jsonb_build_object(
        'solutionInstances', coalesce((
            SELECT jsonb_agg(jsonb_build_object('id', i.id, 'name', i.name, 'authValues', coalesce(av.list, '[]'))
                             ORDER BY i.created_at, i.id)
              FROM tokenvault.instances i
              LEFT JOIN (SELECT r.instance_id,
                                jsonb_agg(jsonb_build_object('externalId', r.external_id, 'authId', r.auth_id)
                                          ORDER BY r.position) AS list
                           FROM tokenvault._auth_value_rows(user_instances.user_id) r
                          GROUP BY r.instance_id) av ON av.instance_id = i.id
             WHERE i.owner = user_instances.user_id), '[]'),
        'authentications', coalesce((
            SELECT jsonb_agg(jsonb_build_object('id', a.id, 'name', a.name) ORDER BY a.created_at, a.id)
              FROM tokenvault.auths a
             WHERE a.user_id = user_instances.user_id AND tokenvault._client_visible(a.client_id)), '[]'));
END
$$;

-- authorize_url() for a slot: the slot's client (or the one authorization
-- code client of its service) and the slot's scopes, not the end user's.
-- (A name of its own: as an overload of authorize_url(), calls with untyped
-- literals or parameters could no longer choose between the two.)
CREATE FUNCTION authorize_url_for_slot(solution_id uuid, external_id text, user_id uuid, redirect_uri text,
                              name text DEFAULT NULL, auth_id uuid DEFAULT NULL) RETURNS text
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    s tokenvault.slots;
    c uuid[];
BEGIN
    PERFORM tokenvault._admit_app();
    PERFORM tokenvault._solution_must_exist(solution_id);
    s := tokenvault._slot_must_exist(solution_id, external_id, 'auth');
    IF s.static_auth_id IS NOT NULL THEN
        RAISE EXCEPTION 'slot "%" is static: its auth is the solution''s, not the user''s', s.external_id
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    c := CASE WHEN s.client_id IS NOT NULL THEN ARRAY[s.client_id]
              ELSE ARRAY(SELECT t.id FROM tokenvault.clients t
                          WHERE t.service = s.service AND t.grant_type = 'authorization_code' ORDER BY t.created_at) END;
    IF cardinality(c) <> 1 THEN
        RAISE EXCEPTION 'slot "%" takes service "%", which % authorization_code clients serve',
                s.external_id, s.service, cardinality(c)
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Name the client in the slot: tokenvault.update_slot(solution_id, external_id, ''{"client_id": ...}'').';
    END IF;
    RETURN tokenvault.authorize_url(client_id => c[1], user_id => user_id, redirect_uri => redirect_uri,
                                    name => name, auth_id => auth_id,
                                    scopes => coalesce(s.scopes, (SELECT t.scopes FROM tokenvault.clients t WHERE t.id = c[1])));
END
$$;
