-- Solutions, slots and instances: the rules that hold them together (triggers), and lookups

CREATE FUNCTION _solution_must_exist(solution_id uuid) RETURNS tokenvault.solutions
    LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    s tokenvault.solutions;
BEGIN
    PERFORM tokenvault._admit_app();
    PERFORM tokenvault._refuse_null(solution_id IS NULL, 'solution id'::text);
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
    PERFORM tokenvault._admit_app();
    PERFORM tokenvault._refuse_null(instance_id IS NULL, 'instance id'::text);
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
    PERFORM tokenvault._admit_app();
    PERFORM tokenvault._refuse_null(external_id IS NULL, 'externalId'::text);
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
    END IF;
    PERFORM tokenvault._require_client_access(a.client_id, a.id);
    IF a.user_id <> i.owner THEN
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
            'service_name', left((r.a).service, 400)), (r.a).client_id);
    END LOOP;
END
$$;
