-- Privileges: nothing for PUBLIC; the application reads, the administrator also manages; the row level security policies.
-- Secrets leave only through the functions.

REVOKE ALL ON ALL TABLES IN SCHEMA tokenvault FROM PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA tokenvault FROM PUBLIC;
GRANT USAGE ON SCHEMA tokenvault TO tokenvault_app, tokenvault_admin;

------------------------------------------------------------------------------
-- Tables: the plain columns, never a sealed one
------------------------------------------------------------------------------

GRANT SELECT ON users TO tokenvault_app;
GRANT SELECT (id, user_id, client_id, name, service, scopes, status, token_type, expires_at,
              refresh_expires_at, refresh_at, last_refreshed_at, failure_count, last_error,
              version, expiry_notified_at, created_at, updated_at, refresh_sent_at, refresh_lost,
              last_checked_at, last_check, check_at)
    ON auths TO tokenvault_app;
GRANT SELECT (id, name, service, type, grant_type, client_id, auth_url, token_url, refresh_url,
              revoke_url, scopes, client_auth, token_lifetime, extra_params, api_key_header,
              api_key_prefix, owner, visibility, created_at, updated_at,
              body_format, token_path, expires_in_unit, scope_separator, pkce, refresh_every, allowed_hosts,
              allow_insecure_http, provider, provider_params, required_scopes, refresh_scopes, never_expires,
              token_scheme, token_header, verify_headers, token_path_exchange_only, field_names, issued_at_unit, error_field, error_description_field, reauth_errors,
              verify_url, verify_method, verify_ok_field, check_every)
    ON clients TO tokenvault_app;
GRANT SELECT ON providers TO tokenvault_app;
GRANT SELECT ON events, stats TO tokenvault_app, tokenvault_admin;
GRANT SELECT (id, url, kinds, enabled, created_at, owner, allow_insecure_http) ON webhooks TO tokenvault_admin;
GRANT SELECT ON webhook_deliveries TO tokenvault_admin;
GRANT SELECT ON solutions, slots, instances, instance_auth_values, instance_config_values TO tokenvault_app;
GRANT SELECT (owner, owner_name, related_id, key, created_at, updated_at) ON private_tokens TO tokenvault_app;
GRANT SELECT ON user_token_grants TO tokenvault_admin;

------------------------------------------------------------------------------
-- Functions: the application's, then the administrator's (who is a member
-- of tokenvault_app); the internal ones (_*) are granted to no one
------------------------------------------------------------------------------

GRANT EXECUTE ON FUNCTION
    create_user(text, text), find_user(text), delete_user(uuid), user_auths(uuid),
    delete_user_auths(uuid, boolean), create_auth(uuid, uuid, text, jsonb, text[]),
    update_auth(uuid, text, jsonb), delete_auth(uuid, boolean, boolean),
    access_token(uuid), credentials(uuid), http_headers(uuid),
    authorize_url(uuid, uuid, text, text, text[], uuid, jsonb), complete_authorization(text, text),
    refresh_auth(uuid), check_auth(uuid),
    create_instance(uuid, uuid, text, jsonb, jsonb), update_instance(uuid, text, boolean, jsonb, jsonb),
    delete_instance(uuid), instance(uuid), user_instances(uuid),
    authorize_url_for_slot(uuid, text, uuid, text, text, uuid),
    put_private_token(text, text, text), get_private_token(text, text), list_private_tokens(text),
    delete_private_token(text, text),
    put_user_token(uuid, text, text, text), get_user_token(uuid, text, text), list_user_tokens(uuid, text),
    delete_user_token(uuid, text, text)
    TO tokenvault_app;

GRANT EXECUTE ON FUNCTION
    create_client(text, text, text, jsonb), update_client(uuid, jsonb), delete_client(uuid, boolean),
    key_ring(), key_usage(), create_key_file(), add_key(), drop_key(bigint), rotate_key(),
    add_webhook(text, text, text[], boolean), add_webhook(text, text[]), delete_webhook(uuid),
    rotate_webhook_secret(uuid, text), finish_webhook_rotation(uuid), address_class(inet), host_policy(text, inet),
    create_solution(text, text), update_solution(uuid, text, text), delete_solution(uuid, boolean),
    add_slot(uuid, text, text, jsonb), update_slot(uuid, text, jsonb), delete_slot(uuid, text),
    grant_user_tokens(uuid, name, text, text), revoke_user_tokens(uuid, name, text),
    add_provider(jsonb)
    TO tokenvault_admin;

------------------------------------------------------------------------------
-- Row level security (enabled in tables.sql)
------------------------------------------------------------------------------

-- A role reads the tables only in a database that admitted it, and nothing
-- of a client private to another role (its auths, their events).  The
-- policies run as the reader, so the two checks they call are granted.
GRANT EXECUTE ON FUNCTION _admitted_app(), _admitted_admin(), _client_visible(uuid) TO tokenvault_app;
-- the stats view calls it as its reader, and shows nothing where the reader was not admitted
GRANT EXECUTE ON FUNCTION _worker_stats() TO tokenvault_app;

CREATE POLICY admitted ON users FOR SELECT TO tokenvault_app USING ((SELECT tokenvault._admitted_app()));
CREATE POLICY admitted ON clients FOR SELECT TO tokenvault_app
    USING ((SELECT tokenvault._admitted_app()) AND tokenvault._client_visible(id));
CREATE POLICY admitted ON auths FOR SELECT TO tokenvault_app
    USING ((SELECT tokenvault._admitted_app()) AND tokenvault._client_visible(client_id));
-- What administrators do to clients and grants (client.*, user_tokens.*)
-- is theirs to read; of a private client, its owner's only.  An auth event
-- without its client (recorded before 0.7.0, when the auth may be gone
-- since) is the administrators'.
CREATE POLICY admitted ON events FOR SELECT TO tokenvault_app
    USING ((SELECT tokenvault._admitted_app())
           AND (client_id IS NULL OR tokenvault._client_visible(client_id))
           AND (kind NOT LIKE 'client.%' AND kind NOT LIKE 'user_tokens.%' AND (client_id IS NOT NULL OR auth_id IS NULL)
                OR (SELECT tokenvault._admitted_admin())));
CREATE POLICY admitted ON webhooks FOR SELECT TO tokenvault_admin USING ((SELECT tokenvault._admitted_admin()));
CREATE POLICY admitted ON webhook_deliveries FOR SELECT TO tokenvault_admin USING ((SELECT tokenvault._admitted_admin()));
CREATE POLICY admitted ON solutions FOR SELECT TO tokenvault_app USING ((SELECT tokenvault._admitted_app()));
CREATE POLICY admitted ON slots FOR SELECT TO tokenvault_app USING ((SELECT tokenvault._admitted_app()));
CREATE POLICY admitted ON instances FOR SELECT TO tokenvault_app USING ((SELECT tokenvault._admitted_app()));
CREATE POLICY admitted ON instance_auth_values FOR SELECT TO tokenvault_app
    USING ((SELECT tokenvault._admitted_app()) AND auth_id IN (SELECT a.id FROM tokenvault.auths a));
CREATE POLICY admitted ON instance_config_values FOR SELECT TO tokenvault_app
    USING ((SELECT tokenvault._admitted_app()));
CREATE POLICY admitted ON user_token_grants FOR SELECT TO tokenvault_admin USING ((SELECT tokenvault._admitted_admin()));

-- Through the table, too, a role sees its own private tokens only (sealed);
-- an administrator sees every role's, and writes none: the functions write.
CREATE POLICY private_tokens_own ON private_tokens FOR SELECT TO tokenvault_app
    USING ((SELECT tokenvault._admitted_app())
           AND owner::oid = (SELECT r.oid FROM pg_catalog.pg_roles r WHERE r.rolname = current_user)
           AND owner_name = current_user);
CREATE POLICY private_tokens_admin ON private_tokens FOR SELECT TO tokenvault_admin
    USING ((SELECT tokenvault._admitted_admin()));
