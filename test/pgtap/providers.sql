-- The provider catalogue: every row is well formed, makes a client with a
-- made-up id and secret, and (authorization code) builds an authorization
-- URL on the provider's host with what the provider needs to issue a
-- refresh token; clients made from it, tenant parameters, add_provider.
BEGIN;
SELECT plan((SELECT 2 * count(*)::integer FROM tokenvault.providers) + 43);

SELECT tokenvault.admit('tokenvault_admin', 'admin'), tokenvault.admit('tokenvault_app', 'app');
SELECT tokenvault.create_user('tap-providers') AS u \gset

-- Values for a row's tenant parameters (their examples), from the client or the auth.
CREATE FUNCTION pg_temp.params(p tokenvault.providers, source text) RETURNS jsonb LANGUAGE sql AS $$
    SELECT coalesce(jsonb_object_agg(x.key, coalesce(x.value->>'example', 'acme')), '{}')
      FROM jsonb_each(p.tenant_params) x WHERE x.value->>'from' = source
$$;

-- What is wrong with a row, NULL when nothing is.
CREATE FUNCTION pg_temp.row_problem(key text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    p tokenvault.providers := (SELECT x FROM tokenvault.providers x WHERE x.key = row_problem.key);
    u text;
BEGIN
    PERFORM tokenvault._check_provider(p);
    SELECT x INTO u FROM unnest(ARRAY[p.auth_url, p.token_url, p.refresh_url, p.revoke_url, p.verify_url, p.docs_url]) x
     WHERE x IS NOT NULL AND x !~ '^https://([a-z0-9-]+|\{[a-z0-9_]+\})(\.([a-z0-9-]+|\{[a-z0-9_]+\}))*(:[0-9]+)?(/[^[:space:]#]*)?(#[^[:space:]]*)?$';
    IF u IS NOT NULL THEN
        RETURN 'not an https URL that parses: ' || u;
    END IF;
    IF p.name = '' OR p.checked_on IS NULL OR p.checked_on > current_date THEN
        RETURN 'no name, or no date checked';
    END IF;
    IF p.auth_type = 'api_key' AND (p.api_key_header IS NULL OR p.token_url IS NOT NULL) THEN
        RETURN 'an api_key provider names its header and no token URL';
    END IF;
    IF p.auth_type = 'oauth2' AND coalesce(p.grant_type, 'authorization_code') = 'authorization_code' AND p.auth_url IS NULL THEN
        RETURN 'an authorization code provider has an auth_url';
    END IF;
    RETURN NULL;
EXCEPTION WHEN others THEN
    RETURN SQLERRM;
END
$$;

-- Make a client of a row with a made-up id and secret; for the
-- authorization code grant, the authorization URL; NULL when all holds.
CREATE FUNCTION pg_temp.client_problem(key text, u uuid) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    p tokenvault.providers := (SELECT x FROM tokenvault.providers x WHERE x.key = client_problem.key);
    c uuid;
    cl tokenvault.clients;
    url text;
    k record;
    scope text;
BEGIN
    c := tokenvault.create_client('tap ' || p.key, p.key, p.auth_type,
            jsonb_build_object('provider', p.key, 'params', pg_temp.params(p, 'client'))
            || CASE WHEN p.auth_type = 'oauth2'
                    THEN jsonb_build_object('client_id', 'tap-' || md5(random()::text), 'client_secret', 'TVSECRET-' || md5(random()::text))
                    ELSE '{}' END);
    cl := (SELECT x FROM tokenvault.clients x WHERE x.id = c);
    IF cl.provider IS DISTINCT FROM p.key THEN
        RETURN 'the client does not remember its provider';
    END IF;
    IF p.auth_type <> 'oauth2' OR cl.grant_type <> 'authorization_code' THEN
        RETURN NULL;
    END IF;
    url := tokenvault.authorize_url(c, u, 'https://app.example.org/callback', fields => pg_temp.params(p, 'auth'));
    -- on the provider's host: the auth_url's, its tenant parameters filled
    IF substring(url FROM '^https://([^/?#]+)') IS DISTINCT FROM
       substring(tokenvault._fill_client_params(jsonb_build_object('auth_url', p.auth_url),
                     pg_temp.params(p, 'client') || pg_temp.params(p, 'auth'))->>'auth_url' FROM '^https://([^/?#]+)') THEN
        RETURN 'the authorization URL is not on the provider''s host: ' || url;
    END IF;
    FOR k IN SELECT * FROM jsonb_each_text(p.extra_params->'authorize') LOOP
        IF position(('&' || k.key || '=' || tokenvault._form_encode(k.value) || '&')
                    IN ('&' || split_part(url, '?', 2) || '&')) = 0 THEN
            RETURN format('the authorization URL lacks %s=%s', k.key, k.value);
        END IF;
    END LOOP;
    scope := replace(substring(url FROM '[?&]scope=([^&]*)'), '%20', ' ');
    scope := replace(scope, '%2C', ',');
    IF EXISTS (SELECT FROM unnest(p.required_scopes) r
                WHERE NOT r = ANY (regexp_split_to_array(coalesce(scope, ''), '[ ,]'))
                  AND NOT tokenvault._form_encode(r) = ANY (regexp_split_to_array(coalesce(scope, ''), '[ ,]'))) THEN
        RETURN 'the authorization URL lacks a required scope: ' || url;
    END IF;
    RETURN NULL;
EXCEPTION WHEN others THEN
    RETURN SQLERRM;
END
$$;

SELECT is(pg_temp.row_problem(key), NULL, key || ': a well-formed row') FROM tokenvault.providers ORDER BY key;
SELECT is(pg_temp.client_problem(key, :'u'), NULL, key || ': a client and its authorization URL')
  FROM tokenvault.providers ORDER BY key;

SELECT ok((SELECT count(*) FROM tokenvault.providers) >= 60, 'at least 60 providers');
SELECT is(ARRAY(SELECT k FROM unnest(ARRAY['google', 'microsoft', 'microsoft_tenant', 'github', 'github_app', 'gitlab',
              'bitbucket', 'atlassian', 'slack', 'discord', 'zoom', 'salesforce', 'salesforce_sandbox', 'hubspot',
              'pipedrive', 'zoho', 'intercom', 'zendesk', 'freshdesk', 'shopify', 'stripe', 'quickbooks', 'xero', 'sage',
              'notion', 'airtable', 'asana', 'monday', 'linear', 'clickup', 'trello', 'dropbox', 'box', 'typeform',
              'calendly', 'docusign', 'mailchimp', 'sendgrid', 'twilio', 'linkedin', 'facebook', 'instagram', 'x',
              'spotify', 'strava', 'okta', 'auth0', 'keycloak', 'paypal', 'square', 'outreach', 'gong', 'front',
              'webflow', 'figma', 'miro', 'canva', 'smartsheet', 'snowflake', 'twitch', 'reddit', 'tiktok', 'amazon',
              'amazon_seller']) k
            WHERE NOT EXISTS (SELECT FROM tokenvault.providers p WHERE p.key = k)), '{}', 'every provider the issue names');
SELECT is((SELECT count(*)::integer FROM tokenvault.providers WHERE auth_type = 'api_key'), 
          (SELECT count(*)::integer FROM tokenvault.providers WHERE auth_type = 'api_key' AND api_key_header IS NOT NULL),
          'api_key providers name their header');

-- what the well-known ones need for a refresh token
CREATE FUNCTION pg_temp.authorize(key text, fields jsonb DEFAULT NULL) RETURNS text LANGUAGE sql AS $$
    SELECT tokenvault.authorize_url((SELECT id FROM tokenvault.clients WHERE name = 'tap ' || key),
                                    (SELECT id FROM tokenvault.users WHERE external_user_id = 'tap-providers'),
                                    'https://app.example.org/callback', fields => fields)
$$;
SELECT ok(pg_temp.authorize('google') ~ '[?&]access_type=offline(&|$)' AND pg_temp.authorize('google') ~ '[?&]prompt=consent(&|$)',
          'google: access_type=offline and prompt=consent');
SELECT ok(pg_temp.authorize('google') ~ '^https://accounts\.google\.com/', 'google: on accounts.google.com');
SELECT ok(pg_temp.authorize('microsoft') ~ '[?&]scope=[^&]*offline_access', 'microsoft: offline_access');
SELECT ok(tokenvault.authorize_url((SELECT id FROM tokenvault.clients WHERE name = 'tap microsoft'),
                                   :'u', 'https://app.example.org/cb', scopes => ARRAY['Mail.Read'])
          ~ '[?&]scope=[^&]*offline_access', 'microsoft: offline_access even when the caller names other scopes');
SELECT ok(pg_temp.authorize('atlassian') ~ '[?&]audience=api\.atlassian\.com(&|$)', 'atlassian: audience=api.atlassian.com');
SELECT ok(pg_temp.authorize('dropbox') ~ '[?&]token_access_type=offline(&|$)', 'dropbox: token_access_type=offline');
SELECT ok(pg_temp.authorize('xero') ~ '[?&]scope=[^&]*offline_access', 'xero: offline_access');
SELECT ok(pg_temp.authorize('shopify', '{"shop": "acme-store"}') ~ '^https://acme-store\.myshopify\.com/',
          'shopify: the authorization URL is the shop''s');

-- unhappy paths
CREATE FUNCTION pg_temp.hint_of(sql text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    h text;
BEGIN
    EXECUTE sql;
    RETURN NULL;
EXCEPTION WHEN others THEN
    GET STACKED DIAGNOSTICS h = PG_EXCEPTION_HINT;
    RETURN h;
END
$$;
SELECT throws_ok($$SELECT tokenvault.create_client('G', 'g', 'oauth2', '{"provider": "gogle", "client_id": "x"}')$$,
                 '42704', 'unknown provider "gogle"', 'an unknown key is refused');
SELECT ok(pg_temp.hint_of($$SELECT tokenvault.create_client('G', 'g', 'oauth2', '{"provider": "gogle", "client_id": "x"}')$$)
          ~ 'closest keys: google', 'the hint names the closest keys');
SELECT throws_ok($$SELECT tokenvault.create_client('S', 's', 'oauth2', '{"provider": "stripe"}')$$,
                 '22023', 'provider "stripe" is of type api_key, not oauth2', 'the type must be the provider''s');
SELECT throws_ok($$SELECT tokenvault.create_client('O', 'o', 'oauth2', '{"provider": "okta", "client_id": "x"}')$$,
                 '22023', 'provider "okta" needs the parameter "okta_domain"', 'a client-wide parameter must be given');
SELECT throws_ok($$SELECT tokenvault.create_client('O', 'o', 'oauth2', '{"provider": "okta", "client_id": "x",
                     "params": {"okta_domain": "evil.example/x?"}}')$$,
                 '22023', NULL, 'a client-wide parameter is a host name or path segment, nothing more');
SELECT throws_ok($$SELECT tokenvault.create_client('O', 'o', 'oauth2', '{"provider": "google", "client_id": "x",
                     "params": {"tenant": "a"}}')$$,
                 '22023', 'provider "google" has no parameter "tenant"', 'a parameter the provider does not have');

-- explicit settings win; the provider is remembered and re-applied
SELECT tokenvault.create_client('Own Google', 'google', 'oauth2', jsonb_build_object('provider', 'google',
           'client_id', 'tap-own', 'client_secret', 'TVSECRET-' || md5(random()::text),
           'token_url', 'https://tokens.example.org/token', 'scopes', '["openid"]'::jsonb,
           'revoke_url', NULL, 'verify_url', NULL)) AS own \gset
SELECT results_eq(format('SELECT token_url, scopes, provider, extra_params->''authorize''->>''access_type'' FROM tokenvault.clients WHERE id = %L', :'own'),
                  $$VALUES ('https://tokens.example.org/token', '{openid}'::text[], 'google', 'offline')$$,
                  'a setting given overrides the catalogue''s, the rest comes from it');
SELECT throws_ok(format('SELECT tokenvault.update_client(%L, ''{"provider": "google"}'')', :'own'), '42501', NULL,
                 're-applying a row that moves the token URL takes the client secret');
SELECT lives_ok(format('SELECT tokenvault.update_client(%L, %L)', :'own',
                       jsonb_build_object('provider', 'google', 'client_secret', 'TVSECRET-' || md5(random()::text))),
                'with the secret it is re-applied');
SELECT is((SELECT token_url FROM tokenvault.clients WHERE id = :'own'), (SELECT token_url FROM tokenvault.providers WHERE key = 'google'),
          'the catalogue''s token_url is back');

-- per-tenant parameters
SELECT id AS shop FROM tokenvault.clients WHERE name = 'tap shopify' \gset
SELECT throws_ok(format('SELECT tokenvault.create_auth(%L, %L, NULL, ''{"access_token": "TVSECRET-x"}'')', :'u', :'shop'),
                 '22023', 'an auth of client "tap shopify" needs the field "shop"', 'an auth lacking a tenant parameter is refused, naming it');
SELECT throws_ok(format('SELECT tokenvault.authorize_url(%L, %L, ''https://app.example.org/cb'')', :'shop', :'u'),
                 '22023', 'client "tap shopify" needs the field "shop" for its auth_url', 'so is an authorization without it');
SELECT throws_ok(format('SELECT tokenvault.authorize_url(%L, %L, ''https://app.example.org/cb'', fields => ''{"shop": "evil.example.org"}'')', :'shop', :'u'),
                 '22023', NULL, 'a tenant parameter cannot make another host');
SELECT lives_ok(format('SELECT tokenvault.create_auth(%L, %L, NULL, ''{"access_token": "TVSECRET-x", "shop": "acme"}'')', :'u', :'shop'),
                'an auth with its shop is taken');

-- add_provider
SET LOCAL ROLE tokenvault_admin;
SELECT throws_ok($$SELECT tokenvault.add_provider('{"key": "google", "name": "Mine", "auth_type": "oauth2",
                     "auth_url": "https://evil.example.org/a", "token_url": "https://evil.example.org/t",
                     "docs_url": "https://evil.example.org", "checked_on": "2026-01-01"}')$$,
                 '42501', 'provider "google" is shipped with tokenvault', 'an administrator cannot replace a shipped row');
SELECT is(tokenvault.add_provider('{"key": "acme_crm", "name": "Acme CRM", "auth_type": "oauth2",
             "auth_url": "https://login.acme-crm.example/authorize", "token_url": "https://login.acme-crm.example/token",
             "extra_params": {"authorize": {"access_type": "offline"}},
             "docs_url": "https://docs.acme-crm.example/oauth", "checked_on": "2026-12-01"}'), 'acme_crm',
          'an administrator adds a provider');
SELECT throws_ok($$SELECT tokenvault.add_provider('{"key": "bad", "name": "Bad", "auth_type": "oauth2",
                     "auth_url": "http://login.bad.example/a", "token_url": "https://login.bad.example/t",
                     "docs_url": "https://docs.bad.example", "checked_on": "2026-12-01"}')$$,
                 '22023', NULL, 'a row with an http URL is refused');
SELECT throws_ok($$SELECT tokenvault.add_provider('{"key": "bad", "name": "Bad", "auth_type": "oauth2",
                     "auth_url": "https://{tenant}.bad.example/a", "token_url": "https://login.bad.example/t",
                     "docs_url": "https://docs.bad.example", "checked_on": "2026-12-01"}')$$,
                 '22023', 'provider "bad" names {tenant} in a URL but not in tenant_params', 'an undeclared parameter is refused');
SELECT throws_ok($$SELECT tokenvault.add_provider('{"key": "bad", "name": "Bad", "auth_type": "oauth2", "colour": "red",
                     "auth_url": "https://login.bad.example/a", "token_url": "https://login.bad.example/t",
                     "docs_url": "https://docs.bad.example", "checked_on": "2026-12-01"}')$$,
                 '22023', 'a provider has no field "colour"', 'an unknown field is refused');
SELECT lives_ok($$SELECT tokenvault.create_client('Acme', 'acme', 'oauth2', '{"provider": "acme_crm", "client_id": "x"}')$$,
                'a client from the added provider');
RESET ROLE;
SELECT is((SELECT added_by FROM tokenvault.providers WHERE key = 'acme_crm'), 'tokenvault_admin'::name, 'the row says who added it');
SET LOCAL ROLE tokenvault_app;
SELECT throws_ok($$SELECT tokenvault.add_provider('{"key": "app_added"}')$$, '42501', NULL, 'an application cannot add providers');
SELECT ok((SELECT count(*) FROM tokenvault.providers) >= 60, 'the application reads the catalogue');
RESET ROLE;

-- another administrator cannot send a client's users' access tokens or keys elsewhere:
-- the verify and revoke URLs of a client with auths stay on their hosts, whatever secret is given
SELECT tokenvault.create_client('Stripe tap', 'stripe', 'api_key', '{"provider": "stripe"}') AS stripe \gset
SELECT tokenvault.create_auth(:'u', :'stripe', NULL, '{"api_key": "TVSECRET-sk-tap"}');
SELECT id AS google_client FROM tokenvault.clients WHERE name = 'tap google' \gset
SELECT tokenvault.create_auth(:'u', :'google_client', NULL, '{"access_token": "TVSECRET-at-tap", "expires_in": 3600}');
SET LOCAL ROLE tokenvault_admin;
SELECT throws_ok(format('SELECT tokenvault.update_client(%L, ''{"verify_url": "https://collector.example.org/me"}'')', :'stripe'),
                 '42501', NULL, 'an api_key client''s verify URL does not move to another host');
SELECT throws_ok(format('SELECT tokenvault.update_client(%L, %L)', :'google_client',
                        '{"verify_url": "https://collector.example.org/me", "client_secret": "anything"}'),
                 '42501', NULL, 'nor an oauth2 client''s, even with a client secret');
SELECT throws_ok(format('SELECT tokenvault.update_client(%L, %L)', :'google_client',
                        '{"revoke_url": "https://collector.example.org/revoke", "client_secret": "anything"}'),
                 '42501', NULL, 'nor its revoke URL');
SELECT throws_ok($$SELECT tokenvault.add_provider('{"key": "hidden", "name": "Hidden", "auth_type": "oauth2",
                     "auth_url": "https://login.hidden.example/a", "token_url": "https://login.hidden.example/t",
                     "settings": {"token_url": "http://127.0.0.1:9/steal", "allow_insecure_http": true},
                     "docs_url": "https://docs.hidden.example", "checked_on": "2026-12-01"}')$$,
                 '22023', 'provider "hidden": "token_url" cannot be among its settings',
                 'a row''s settings cannot hide another token URL');
SELECT throws_ok($$SELECT tokenvault.add_provider('{"key": "hidden", "name": "Hidden", "auth_type": "oauth2",
                     "auth_url": "https://login.hidden.example/a", "token_url": "https://login.hidden.example/t",
                     "settings": {"client_secret": "x"},
                     "docs_url": "https://docs.hidden.example", "checked_on": "2026-12-01"}')$$,
                 '22023', NULL, 'nor a client secret');
RESET ROLE;
SELECT lives_ok(format('SELECT tokenvault.update_client(%L, ''{"verify_url": "https://api.stripe.com/v1/account"}'')', :'stripe'),
                'another path on the same host is fine');

-- an issued_at far from this server's clock is not believed
SELECT is(tokenvault._normalize_token((SELECT c FROM tokenvault.clients c WHERE name = 'tap salesforce'),
              '{"access_token": "t", "issued_at": "99999999999999"}')->>'expires_in', NULL,
          'issued_at years ahead: no lifetime from it (token_lifetime from now applies)');
SELECT ok((tokenvault._normalize_token((SELECT c FROM tokenvault.clients c WHERE name = 'tap salesforce'),
              jsonb_build_object('access_token', 't', 'issued_at', ((extract(epoch FROM now()) - 600) * 1000)::bigint::text))->>'expires_in')::integer
          BETWEEN 6590 AND 6610, 'issued_at ten minutes ago (milliseconds): token_lifetime counts from it');

-- an update of the extension replaces the rows it shipped and keeps the added ones; one
-- that takes a key the update ships (acme_crm, shipped at last) moves aside
SET LOCAL client_min_messages = error;
SELECT tokenvault._ship_providers('[{"key": "acme_crm", "name": "Acme CRM (shipped)", "auth_type": "oauth2",
    "auth_url": "https://login.acme-crm.example/authorize", "token_url": "https://login.acme-crm.example/token",
    "docs_url": "https://docs.acme-crm.example/oauth", "checked_on": "2026-12-05"}, {"key": "google", "name": "Google (newer)", "auth_type": "oauth2",
    "auth_url": "https://accounts.google.com/o/oauth2/v2/auth", "token_url": "https://oauth2.googleapis.com/token",
    "docs_url": "https://developers.google.com/identity/protocols/oauth2", "checked_on": "2026-12-05"}]');
SELECT is((SELECT string_agg(key || '/' || name || '/' || coalesce(added_by::text, '-'), ' ' ORDER BY key) FROM tokenvault.providers),
          'acme_crm/Acme CRM (shipped)/- acme_crm_custom/Acme CRM/tokenvault_admin google/Google (newer)/-',
          'an update replaces the shipped rows and keeps add_provider''s, aside when it ships their key');

SELECT * FROM finish();
ROLLBACK;
