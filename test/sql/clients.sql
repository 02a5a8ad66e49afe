-- Clients: how the application reaches a service.
\set SHOW_CONTEXT never
SELECT 'TVSECRET-' || md5(random()::text) AS client_secret \gset

SELECT tokenvault.create_client('GitHub', 'github', 'oauth2', jsonb_build_object(
    'client_id', 'gh-app-1',
    'client_secret', :'client_secret',
    'auth_url', 'https://github.com/login/oauth/authorize',
    'token_url', 'https://github.com/login/oauth/access_token',
    'scopes', jsonb_build_array('repo', 'read:user'))) AS github \gset
SELECT tokenvault.create_client('Stripe', 'stripe', 'api_key',
    '{"api_key_header": "Authorization", "api_key_prefix": "Bearer"}') AS stripe \gset
SELECT tokenvault.create_client('FTP', 'ftp', 'basic') AS ftp \gset
SELECT tokenvault.create_client('Weather', 'weather', 'noauth') AS weather \gset

SELECT name, service, type, grant_type, client_id, scopes, client_auth, api_key_header,
       secret IS NOT NULL AS has_secret, owner = current_user AS owned_by_me, visibility
  FROM tokenvault.clients ORDER BY name;

-- the client secret is sealed, not stored as it was given
SELECT position(convert_to(:'client_secret', 'UTF8') IN secret) = 0 AS secret_not_in_plaintext
  FROM tokenvault.clients WHERE id = :'github';

-- settings are checked: unknown keys, wrong types, what a type needs
SELECT tokenvault.create_client('X', 'x', 'oauth2', '{"client_id": "a", "token_url": "https://x/t", "auth_url": "https://x/a", "client_secert": "s"}');
SELECT tokenvault.create_client('X', 'x', 'oauth2', '{"client_id": "a", "auth_url": "https://x/a"}');
SELECT tokenvault.create_client('X', 'x', 'oauth2', '{"client_id": "a", "token_url": "ftp://x/t", "grant": "client_credentials"}');
SELECT tokenvault.create_client('X', 'x', 'oauth2', '{"client_id": "a", "token_url": "https://x/t", "grant": "implicit"}');
SELECT tokenvault.create_client('X', 'x', 'oauth2', '{"client_id": "a", "token_url": "https://x/t", "grant": "password", "token_lifetime": -5}');
SELECT tokenvault.create_client('X', 'x', 'basic', '{"token_url": "https://x/t"}');
SELECT tokenvault.create_client('X', 'x', 'smtp');
SELECT tokenvault.create_client('X', 'x', NULL);
SELECT tokenvault.create_client('X', 'x', 'noauth', '[]');
SELECT count(*) AS clients FROM tokenvault.clients;

-- update: given settings replace stored ones, null clears
SELECT tokenvault.update_client(:'github', '{"scopes": ["repo"], "revoke_url": "https://github.com/revoke", "client_auth": "post"}');
SELECT scopes, revoke_url, client_auth FROM tokenvault.clients WHERE id = :'github';
SELECT tokenvault.update_client(:'github', '{"revoke_url": null}');
SELECT revoke_url IS NULL AS revoke_url_cleared FROM tokenvault.clients WHERE id = :'github';
SELECT tokenvault.update_client(:'github', '{"token_url": null}');
SELECT tokenvault.update_client(:'stripe', '{"client_id": "x"}');
SELECT tokenvault.update_client('00000000-0000-0000-0000-000000000001', '{}');

-- URL templates: the hosts they may become are declared, and a field fills one label
SELECT tokenvault.create_client('T', 't', 'oauth2', '{"client_id": "a", "grant": "client_credentials", "token_url": "https://{tenant}.my.salesforce.com/services/oauth2/token"}');
SELECT tokenvault.create_client('T', 't', 'oauth2', '{"client_id": "a", "grant": "client_credentials", "token_url": "https://{tenant}.my.salesforce.com/services/oauth2/token", "allowed_hosts": ["*.my.salesforce.com", "10.0.0.7"]}');
SELECT tokenvault.create_client('T', 't', 'oauth2', '{"client_id": "a", "grant": "client_credentials", "token_url": "https://{tenant}.my.salesforce.com/services/oauth2/token", "allowed_hosts": ["*.my.salesforce.com"]}') AS templated \gset
SELECT allowed_hosts FROM tokenvault.clients WHERE id = :'templated';
SELECT tokenvault.update_client(:'templated', '{"revoke_url": "https://login.salesforce.com/services/oauth2/revoke"}');
SELECT tokenvault.update_client(:'templated', '{"allowed_hosts": null}');
SELECT tokenvault.create_auth(tokenvault.create_user('templated'), :'templated', 'x', '{"access_token": "t", "tenant": "evil.example.org"}');
SELECT tokenvault.delete_client(:'templated');

SELECT tokenvault.delete_client(:'weather');
SELECT try(format('SELECT tokenvault.delete_client(%L)', :'weather'));
SELECT name FROM tokenvault.clients ORDER BY name;
DELETE FROM tokenvault.clients;
