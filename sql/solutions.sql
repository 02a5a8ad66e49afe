-- Solutions, slots and instances, and the rules that hold them together (triggers)

CREATE FUNCTION _solution_must_exist(solution_id uuid) RETURNS tokenvault.solutions
    LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    s tokenvault.solutions;
BEGIN
    PERFORM tokenvault._require(solution_id, 'solution id');
    SELECT * INTO s FROM tokenvault.solutions t WHERE t.id = _solution_must_exist.solution_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'solution % does not exist', solution_id
            USING ERRCODE = 'undefined_object',
                  HINT = 'List solutions with: SELECT id, title FROM tokenvault.solutions;';
    END IF;
    RETURN s;
END
$$;

CREATE FUNCTION _instance_must_exist(instance_id uuid) RETURNS tokenvault.instances
    LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    i tokenvault.instances;
BEGIN
    PERFORM tokenvault._require(instance_id, 'instance id');
    SELECT * INTO i FROM tokenvault.instances t WHERE t.id = _instance_must_exist.instance_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'instance % does not exist', instance_id
            USING ERRCODE = 'undefined_object',
                  HINT = 'A user''s instances are listed by tokenvault.user_instances(user_id).';
    END IF;
    RETURN i;
END
$$;

-- The slot of a solution by its external id, matched case-sensitively, of
-- the kind given (any when NULL); an unknown one names the ids there are.
CREATE FUNCTION _slot_must_exist(solution_id uuid, external_id text, kind text) RETURNS tokenvault.slots
    LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    s tokenvault.slots;
    known text;
BEGIN
    PERFORM tokenvault._require(external_id, 'externalId');
    SELECT * INTO s FROM tokenvault.slots t
     WHERE t.solution_id = _slot_must_exist.solution_id AND t.external_id = _slot_must_exist.external_id;
    IF FOUND AND (_slot_must_exist.kind IS NULL OR s.kind = _slot_must_exist.kind) THEN
        RETURN s;
    ELSIF FOUND THEN
        RAISE EXCEPTION 'slot "%" of solution % is % slot, not % slot', external_id, solution_id,
                CASE s.kind WHEN 'auth' THEN 'an auth' ELSE 'a config' END,
                CASE _slot_must_exist.kind WHEN 'auth' THEN 'an auth' ELSE 'a config' END
            USING ERRCODE = 'wrong_object_type',
                  HINT = CASE s.kind WHEN 'auth' THEN 'Give it in auth_values.' ELSE 'Give it in config_values.' END;
    END IF;
    SELECT string_agg(t.external_id, ', ' ORDER BY t.position) INTO known
      FROM tokenvault.slots t
     WHERE t.solution_id = _slot_must_exist.solution_id
       AND (_slot_must_exist.kind IS NULL OR t.kind = _slot_must_exist.kind);
    RAISE EXCEPTION 'solution % has no %slot "%"', solution_id, coalesce(_slot_must_exist.kind || ' ', ''), external_id
        USING ERRCODE = 'undefined_object',
              HINT = CASE WHEN known IS NULL
                          THEN format('The solution has no %sslots.', coalesce(_slot_must_exist.kind || ' ', ''))
                          ELSE format('Its %sslots are: %s (external ids are case-sensitive).',
                                      coalesce(_slot_must_exist.kind || ' ', ''), known) END;
END
$$;

-- An auth fits a slot when it is of the slot's client, or of its service.
CREATE FUNCTION _auth_fits_slot(a tokenvault.auths, s tokenvault.slots) RETURNS void
    LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF s.client_id IS NOT NULL AND a.client_id <> s.client_id THEN
        RAISE EXCEPTION 'auth % is not of the client slot "%" takes', a.id, s.external_id
            USING ERRCODE = 'check_violation',
                  HINT = format('Slot "%s" takes auths of client %s.', s.external_id, s.client_id);
    ELSIF s.service IS NOT NULL AND a.service <> s.service THEN
        RAISE EXCEPTION 'auth % is for service "%", slot "%" takes "%"', a.id, a.service, s.external_id, s.service
            USING ERRCODE = 'check_violation';
    END IF;
END
$$;

-- Required slots of an instance that nothing fills: neither a value, nor a
-- static auth, nor a default.
CREATE FUNCTION _unfilled_slots(instance_id uuid, solution_id uuid) RETURNS text[]
    LANGUAGE sql STABLE AS $$
    SELECT pg_catalog.array_agg(s.external_id::text ORDER BY s.position)
      FROM tokenvault.slots s
     WHERE s.solution_id = $2 AND s.required AND s.static_auth_id IS NULL AND s.default_value IS NULL
       AND NOT EXISTS (SELECT FROM tokenvault.instance_auth_values v
                        WHERE v.instance_id = $1 AND v.external_id = s.external_id)
       AND NOT EXISTS (SELECT FROM tokenvault.instance_config_values v
                        WHERE v.instance_id = $1 AND v.external_id = s.external_id)
$$;

CREATE FUNCTION _instances_check() RETURNS trigger
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    missing text[];
BEGIN
    IF TG_OP = 'UPDATE' AND (NEW.solution_id <> OLD.solution_id OR NEW.owner <> OLD.owner) THEN
        RAISE EXCEPTION 'the solution and owner of instance % cannot change', OLD.id
            USING ERRCODE = 'feature_not_supported',
                  HINT = 'Create a new instance with tokenvault.create_instance().';
    END IF;
    IF NEW.enabled AND (TG_OP = 'INSERT' OR NOT OLD.enabled) AND NOT tokenvault._restoring() THEN
        -- waits for a slot being added or changed (slots_check locks the
        -- solution), and keeps one from changing until this one is done
        PERFORM FROM tokenvault.solutions s WHERE s.id = NEW.solution_id FOR SHARE;
        missing := tokenvault._unfilled_slots(NEW.id, NEW.solution_id);
        IF missing IS NOT NULL THEN
            RAISE EXCEPTION 'instance % cannot be enabled: required slot(s) % not filled',
                    NEW.id, array_to_string(missing, ', ')
                USING ERRCODE = 'object_not_in_prerequisite_state',
                      HINT = 'Fill them with tokenvault.update_instance(id, auth_values => ..., config_values => ...).';
        END IF;
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER instances_check BEFORE INSERT OR UPDATE ON instances
    FOR EACH ROW EXECUTE FUNCTION _instances_check();

-- An auth value: a slot of the instance's solution, not static, the owner's
-- own auth of the slot's client or service, and unique where a slot says so.
CREATE FUNCTION _instance_auth_values_check() RETURNS trigger
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    i tokenvault.instances := tokenvault._instance_must_exist(NEW.instance_id);
    s tokenvault.slots := tokenvault._slot_must_exist(i.solution_id, NEW.external_id, 'auth');
    a tokenvault.auths;
    other record;
BEGIN
    NEW.solution_id := i.solution_id;
    IF s.static_auth_id IS NOT NULL THEN
        RAISE EXCEPTION 'slot "%" is static: its auth is the solution''s and cannot be set or changed', s.external_id
            USING ERRCODE = 'check_violation',
                  HINT = 'Every instance of the solution uses the slot''s static auth; nothing needs to be given.';
    END IF;
    -- The row lock makes writers of one auth take turns, so that two
    -- instances cannot both take it while one of them forces it unique.
    SELECT * INTO a FROM tokenvault.auths t WHERE t.id = NEW.auth_id FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'auth % does not exist', NEW.auth_id USING ERRCODE = 'undefined_object';
    ELSIF a.user_id <> i.owner THEN
        RAISE EXCEPTION 'auth % does not belong to the owner of instance %', a.id, i.id
            USING ERRCODE = 'check_violation',
                  HINT = 'An instance is filled with its owner''s own auths; an auth all users share goes in a static slot.';
    END IF;
    PERFORM tokenvault._auth_fits_slot(a, s);
    SELECT v.instance_id, v.external_id INTO other
      FROM tokenvault.instance_auth_values v
      JOIN tokenvault.slots o ON o.solution_id = v.solution_id AND o.external_id = v.external_id
     WHERE v.auth_id = a.id AND v.instance_id <> i.id AND (s.force_unique OR o.force_unique)
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'auth % is already used by instance %', a.id, other.instance_id
            USING ERRCODE = 'unique_violation',
                  HINT = CASE WHEN s.force_unique
                              THEN format('Slot "%s" forces a unique auth: create a new auth for this instance.', s.external_id)
                              ELSE format('It fills the force-unique slot "%s" there: create a new auth for this instance.',
                                          other.external_id) END;
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER instance_auth_values_check BEFORE INSERT OR UPDATE ON instance_auth_values
    FOR EACH ROW EXECUTE FUNCTION _instance_auth_values_check();

CREATE FUNCTION _instance_config_values_check() RETURNS trigger
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    i tokenvault.instances := tokenvault._instance_must_exist(NEW.instance_id);
BEGIN
    NEW.solution_id := i.solution_id;
    PERFORM tokenvault._slot_must_exist(i.solution_id, NEW.external_id, 'config');
    RETURN NEW;
END
$$;
CREATE TRIGGER instance_config_values_check BEFORE INSERT OR UPDATE ON instance_config_values
    FOR EACH ROW EXECUTE FUNCTION _instance_config_values_check();

-- A value taken away must not leave an enabled instance without a required
-- slot.  (When the slot itself is gone, nothing requires it any more.)  The
-- share lock waits for a transaction enabling the instance, and keeps one
-- from enabling it until this one is done.
CREATE FUNCTION _instance_values_removed() RETURNS trigger
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    enabled boolean;
BEGIN
    -- (locked whether enabled or not: the version this statement sees may
    -- be the one a transaction is enabling)
    SELECT i.enabled INTO enabled FROM tokenvault.instances i WHERE i.id = OLD.instance_id FOR SHARE;
    IF enabled AND OLD.external_id = ANY (tokenvault._unfilled_slots(OLD.instance_id, OLD.solution_id)) THEN
        RAISE EXCEPTION 'slot "%" is required and instance % is enabled', OLD.external_id, OLD.instance_id
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Give the slot another value, or disable the instance first.';
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER instance_auth_values_removed AFTER DELETE ON instance_auth_values
    FOR EACH ROW EXECUTE FUNCTION _instance_values_removed();
CREATE TRIGGER instance_config_values_removed AFTER DELETE ON instance_config_values
    FOR EACH ROW EXECUTE FUNCTION _instance_values_removed();

CREATE FUNCTION _slots_check() RETURNS trigger
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    a tokenvault.auths;
BEGIN
    IF TG_OP = 'UPDATE' AND (NEW.solution_id <> OLD.solution_id OR NEW.external_id <> OLD.external_id
                             OR NEW.kind <> OLD.kind) THEN
        RAISE EXCEPTION 'the solution, external id and kind of a slot cannot change'
            USING ERRCODE = 'feature_not_supported',
                  HINT = 'Delete the slot and add a new one.';
    END IF;
    -- slots of a solution change in turn, and not while an instance of it is
    -- being enabled (instances_check); instances can still be created
    PERFORM FROM tokenvault.solutions s WHERE s.id = NEW.solution_id FOR NO KEY UPDATE;
    IF TG_OP = 'INSERT' AND NEW.position IS NULL THEN
        NEW.position := (SELECT coalesce(max(s.position), 0) + 1 FROM tokenvault.slots s
                          WHERE s.solution_id = NEW.solution_id);
    END IF;
    IF NEW.static_auth_id IS NOT NULL THEN
        SELECT * INTO a FROM tokenvault.auths t WHERE t.id = NEW.static_auth_id;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'auth % does not exist', NEW.static_auth_id USING ERRCODE = 'undefined_object';
        END IF;
        PERFORM tokenvault._auth_fits_slot(a, NEW);
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER slots_check BEFORE INSERT OR UPDATE ON slots
    FOR EACH ROW EXECUTE FUNCTION _slots_check();

-- A slot that changes is checked against the values that fill it: values
-- of a slot made static go (the static auth replaces them), the others are
-- written again so that their own trigger checks them; and a required slot
-- must be filled in every enabled instance.
CREATE FUNCTION _slots_changed() RETURNS trigger
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    lacking uuid[];
BEGIN
    IF TG_OP = 'UPDATE' AND NEW.kind = 'auth' THEN
        IF NEW.static_auth_id IS NOT NULL THEN
            DELETE FROM tokenvault.instance_auth_values v
             WHERE v.solution_id = NEW.solution_id AND v.external_id = NEW.external_id;
        ELSIF (NEW.client_id, NEW.service, NEW.force_unique) IS DISTINCT FROM (OLD.client_id, OLD.service, OLD.force_unique) THEN
            UPDATE tokenvault.instance_auth_values v SET auth_id = v.auth_id
             WHERE v.solution_id = NEW.solution_id AND v.external_id = NEW.external_id;
        END IF;
    END IF;
    IF NEW.required AND NOT tokenvault._restoring() THEN
        SELECT array_agg(i.id ORDER BY i.created_at) INTO lacking
          FROM tokenvault.instances i
         WHERE i.solution_id = NEW.solution_id AND i.enabled
           AND NEW.external_id = ANY (tokenvault._unfilled_slots(i.id, i.solution_id));
        IF lacking IS NOT NULL THEN
            RAISE EXCEPTION 'slot "%" is required but % enabled instance(s) of solution % do not fill it',
                    NEW.external_id, cardinality(lacking), NEW.solution_id
                USING ERRCODE = 'object_not_in_prerequisite_state',
                      DETAIL = format('Instances: %s.', array_to_string(lacking[1:10], ', ')),
                      HINT = 'Add it as not required, fill it in each instance, then make it required; or give a config slot a default.';
        END IF;
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER slots_changed AFTER INSERT OR UPDATE ON slots
    FOR EACH ROW EXECUTE FUNCTION _slots_changed();

-- An auth in use stays: as a slot's static auth always, and in instances
-- until they let go of it (delete_auth(..., force => true) does that).
CREATE FUNCTION _refuse_auths_in_use(auth_ids uuid[]) RETURNS void
    LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    first_id uuid;
    users text;
BEGIN
    SELECT s.static_auth_id, string_agg(format('"%s" of solution %s', s.external_id, s.solution_id), ', ')
      INTO first_id, users
      FROM tokenvault.slots s WHERE s.static_auth_id = ANY (auth_ids)
     GROUP BY s.static_auth_id ORDER BY min(s.created_at), s.static_auth_id LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'auth % is the static auth of slot %', first_id, users
            USING ERRCODE = 'dependent_objects_still_exist',
                  HINT = 'Give the slot another static auth with tokenvault.update_slot(), or delete the slot.';
    END IF;
    -- the first ten by age, as PostgreSQL names some of the objects that
    -- depend on one: a shared auth may fill thousands of instances
    SELECT v.auth_id,
           array_to_string((array_agg(format('"%s" (%s)', i.name, i.id) ORDER BY i.created_at, i.id))[1:10], ', ')
           || CASE WHEN count(*) > 10 THEN format(' and %s more', count(*) - 10) ELSE '' END
      INTO first_id, users
      FROM tokenvault.instance_auth_values v JOIN tokenvault.instances i ON i.id = v.instance_id
     WHERE v.auth_id = ANY (auth_ids)
     GROUP BY v.auth_id ORDER BY min(i.created_at), v.auth_id LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'auth % is used by instance(s) %', first_id, users
            USING ERRCODE = 'dependent_objects_still_exist',
                  HINT = 'Give them another auth with tokenvault.update_instance(), or delete with force => true, which disables them.';
    END IF;
END
$$;

CREATE FUNCTION _auths_in_use() RETURNS trigger
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM tokenvault._refuse_auths_in_use(ARRAY[OLD.id]);
    RETURN OLD;
END
$$;
CREATE TRIGGER auths_in_use BEFORE DELETE ON auths
    FOR EACH ROW EXECUTE FUNCTION _auths_in_use();

-- An auth that moves to another user, client or service is checked again
-- where it is used.  (Nothing in tokenvault moves one; a direct write can.)
CREATE FUNCTION _auths_moved() RETURNS trigger
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    UPDATE tokenvault.instance_auth_values v SET auth_id = v.auth_id WHERE v.auth_id = NEW.id;
    UPDATE tokenvault.slots s SET static_auth_id = s.static_auth_id WHERE s.static_auth_id = NEW.id;
    RETURN NULL;
END
$$;
CREATE TRIGGER auths_moved AFTER UPDATE OF user_id, client_id, service ON auths
    FOR EACH ROW WHEN ((OLD.user_id, OLD.client_id, OLD.service) IS DISTINCT FROM (NEW.user_id, NEW.client_id, NEW.service))
    EXECUTE FUNCTION _auths_moved();

-- Instances let go of auths about to be deleted: each is disabled, loses
-- those auth values, and says so with an instance.disabled event.
CREATE FUNCTION _release_auths(auth_ids uuid[]) RETURNS void
    LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT i, a, u.external_user_id
               FROM tokenvault.instance_auth_values v
               JOIN tokenvault.instances i ON i.id = v.instance_id
               JOIN tokenvault.auths a ON a.id = v.auth_id
               JOIN tokenvault.users u ON u.id = i.owner
              WHERE v.auth_id = ANY (auth_ids)
              ORDER BY i.created_at, i.id, v.external_id LOOP
        UPDATE tokenvault.instances SET enabled = false, updated_at = now() WHERE id = (r.i).id AND enabled;
        DELETE FROM tokenvault.instance_auth_values v WHERE v.instance_id = (r.i).id AND v.auth_id = (r.a).id;
        PERFORM tokenvault._publish('instance.disabled', (r.a).id, jsonb_build_object(
            'event', 'instance.disabled',
            'reason', 'auth deleted',
            'instance_id', (r.i).id,
            'instance_name', left((r.i).name, 400),
            'solution_id', (r.i).solution_id,
            'user_id', (r.i).owner,
            'external_user_id', left(r.external_user_id, 400),
            'authId', (r.a).id,
            'authentication_name', left((r.a).name, 400),
            'service_name', left((r.a).service, 400)));
    END LOOP;
END
$$;

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
    PERFORM tokenvault._solution_must_exist(solution_id), tokenvault._require(settings, 'settings');
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
              FROM tokenvault.auths a WHERE a.user_id = user_instances.user_id), '[]'));
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
