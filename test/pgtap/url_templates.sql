-- URL templates and allowed_hosts, without a network: the setting's
-- validation, fields judged as they are stored (by an application or from a
-- provider's token), and every request refused before it is sent when its
-- filled host is not allowed.  test/shell/url_templates.sh performs the
-- attacks against real peers.
BEGIN;
SELECT plan(61);

-- the SQLSTATE an statement fails with, and whether it gave a hint
CREATE FUNCTION pg_temp.failure(sql text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    st text;
    h text;
BEGIN
    EXECUTE sql;
    RETURN 'no error';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, h = PG_EXCEPTION_HINT;
    RETURN st || CASE WHEN coalesce(h, '') <> '' THEN ' + hint' ELSE '' END;
END
$$;
CREATE FUNCTION pg_temp.client(settings jsonb) RETURNS text LANGUAGE sql AS $$
    SELECT format('SELECT tokenvault.create_client(''t'', ''t'', ''oauth2'', %L)',
                  '{"client_id": "tap", "auth_url": "https://login.example.com/authorize",
                    "token_url": "https://login.example.com/token"}'::jsonb || settings)
$$;

-- the setting
SELECT is(pg_temp.failure(pg_temp.client('{"allowed_hosts": "*.example.com"}')), '22023 + hint',
          'allowed_hosts is an array');
SELECT is(pg_temp.failure(pg_temp.client('{"allowed_hosts": []}')), '22023 + hint', 'allowed_hosts is not empty');
SELECT is(pg_temp.failure(pg_temp.client('{"allowed_hosts": ["login.example.com", 7]}')), '22023 + hint',
          'allowed_hosts holds strings');
SELECT is(pg_temp.failure(format('SELECT tokenvault.create_client(''k'', ''k'', ''api_key'', %L)',
                                 '{"verify_url": "https://{tenant}.example.org/me"}')), '22023 + hint',
          'an api_key client whose verify_url names a field needs allowed_hosts too');
SELECT is(pg_temp.failure(pg_temp.client(jsonb_build_object('allowed_hosts', jsonb_build_array('login.example.com', p)))),
          '22023 + hint', format('the pattern %s is refused', p))
  FROM unnest(ARRAY['127.0.0.1', '[::1]', '2130706433', '0x7f000001', '0177.0.0.1', '127.1', '10.0.0.1.',
                    '*', '*.', 'api.*.example.com', '**.example.com', 'Login.Example.com', 'login.example.com:443',
                    'login.example.com/token', 'a..example.com', '']) p;
SELECT throws_like(pg_temp.client('{"allowed_hosts": ["login.example.com", "0x7f000001"]}'),
                   '%"0x7f000001": an IP address is not a host name', 'the refusal names the entry and why');

-- the URLs
SELECT is(pg_temp.failure(pg_temp.client('{"token_url": "https://{tenant}.example.com/token"}')), '22023 + hint',
          'a URL with a placeholder needs allowed_hosts');
SELECT throws_like(pg_temp.client('{"refresh_url": "https://{tenant}.example.com/token"}'),
                   '%refresh_url names fields in braces, but the client lists no allowed_hosts',
                   'the refusal names the URL');
SELECT is(pg_temp.failure(pg_temp.client('{"token_url": "https://login.example.com:{port}/token",
                                            "allowed_hosts": ["login.example.com"]}')), '22023 + hint',
          'a placeholder in the port is refused');
SELECT is(pg_temp.failure(pg_temp.client('{"token_url": "https://{user}@login.example.com/token",
                                            "allowed_hosts": ["login.example.com"]}')), '22023 + hint',
          'user information in a templated URL is refused');
SELECT is(pg_temp.failure(pg_temp.client('{"token_url": "https://{tenant}.example.com/token?rt={refresh_token}",
                                            "allowed_hosts": ["*.example.com", "login.example.com"]}')), '22023 + hint',
          'a URL may not carry a secret field');
SELECT is(pg_temp.failure(pg_temp.client('{"allowed_hosts": ["*.login.example.com"]}')), '22023 + hint',
          'a fixed host that allowed_hosts does not list is refused ("*" is one label, not none)');
SELECT is(pg_temp.failure(pg_temp.client('{"token_url": "https://127.0.0.1/token", "allowed_hosts": ["login.example.com"]}')),
          '22023 + hint', 'a fixed IP address is refused when the client lists allowed_hosts');

SELECT tokenvault.create_user('tap-templates') AS u \gset
SELECT tokenvault.create_client('Tenant', 'tenant', 'oauth2', jsonb_build_object(
           'client_id', 'tap', 'client_secret', 'TVSECRET-cs-' || md5(random()::text),
           'auth_url', 'https://login.example.com/authorize',
           'token_url', 'https://login.example.com/token',
           'refresh_url', 'https://{tenant}.my.example.com/services/{org}/token?org={org}',
           'revoke_url', 'https://{tenant}.my.example.com/revoke',
           'allowed_hosts', '["login.example.com", "*.my.example.com"]'::jsonb)) AS c \gset
SELECT is((SELECT allowed_hosts FROM tokenvault.clients WHERE id = :'c'), ARRAY['login.example.com', '*.my.example.com'],
          'allowed_hosts is kept as a column');
SELECT is(pg_temp.failure(format('SELECT tokenvault.update_client(%L, ''{"allowed_hosts": null}'')', :'c')),
          '22023 + hint', 'allowed_hosts cannot be cleared while URLs name fields');
SELECT is(pg_temp.failure(format('SELECT tokenvault.update_client(%L, ''{"allowed_hosts": ["*.my.example.com"]}'')', :'c')),
          '22023 + hint', 'allowed_hosts cannot drop the fixed token_url''s host');
SELECT is(pg_temp.failure(format('SELECT tokenvault.update_client(%L, ''{"token_url": "https://{tenant}/token"}''::jsonb
                                                                   || jsonb_build_object(''client_secret'', ''TVSECRET-cs-00000000''))', :'c')),
          'no error', 'a template that is the whole host is accepted (it can only make one label; a new host takes the secret again)');
SELECT tokenvault.update_client(:'c', '{"token_url": "https://login.example.com/token", "client_secret": "TVSECRET-cs-00000000"}');
SELECT is((SELECT allowed_hosts FROM tokenvault.clients WHERE id = :'c'), ARRAY['login.example.com', '*.my.example.com'],
          'a refused update changes nothing');

-- fields judged as they are stored
SELECT is(pg_temp.failure(format('SELECT tokenvault.create_auth(%L, %L, NULL, %L)', :'u', :'c',
              jsonb_build_object('access_token', 'TVSECRET-at-' || md5(random()::text), 'tenant', t, 'org', 'o1'))),
          '22023 + hint', format('create_auth refuses the tenant %s', t))
  FROM unnest(ARRAY['127.0.0.2', 'attacker.example', 'evil.my.example.com', 'Acme', 'a_b', 'acme.', '[::1]', 'a:8443']) t;
SELECT is(pg_temp.failure(format('SELECT tokenvault.create_auth(%L, %L, NULL, %L)', :'u', :'c',
              jsonb_build_object('access_token', 'TVSECRET-at-' || md5(random()::text), 'tenant', 'acme', 'org', '..'))),
          '22023 + hint', 'a field may not be a dot segment of the path');
SELECT tokenvault.create_auth(:'u', :'c', NULL, jsonb_build_object('access_token', 'TVSECRET-at-' || md5(random()::text),
           'refresh_token', 'TVSECRET-rt-' || md5(random()::text), 'expires_in', 10,
           'tenant', 'acme', 'org', 'a b/../&x=1', 'instance_url', 'https://acme.my.example.com')) AS a \gset
SELECT pass('a label and any path value are stored; a field no URL names is not judged');
SELECT is(pg_temp.failure(format('SELECT tokenvault.update_auth(%L, NULL, %L)', :'a',
              tokenvault.credentials(:'a') || '{"tenant": "attacker.localhost"}')), '22023 + hint',
          'update_auth refuses a tenant of two labels');
SELECT is(tokenvault.credentials(:'a')->>'tenant', 'acme', 'and keeps the stored one');

-- a provider's token is judged before it is stored
CREATE FUNCTION pg_temp.done(token jsonb) RETURNS tokenvault.verdict LANGUAGE sql AS
    $$ SELECT ROW('done', 200, NULL, NULL, NULL, token)::tokenvault.verdict $$;
SELECT is((SELECT outcome || ': ' || message
             FROM tokenvault._refresh_apply(:'a', (SELECT version FROM tokenvault.auths WHERE id = :'a'), NULL,
                      pg_temp.done(jsonb_build_object('access_token', 'TVSECRET-at-' || md5(random()::text),
                                                      'tenant', '127.0.0.2')))),
          'error: the provider''s token cannot be stored: field "tenant" cannot fill the host of refresh_url: a value there is one label of a-z, 0-9 and -',
          'a provider''s field that would move a URL to another host is a failed refresh');
SELECT is((SELECT status || ' ' || (tokenvault.credentials(id)->>'tenant') FROM tokenvault.auths WHERE id = :'a'),
          'error acme', 'the auth keeps its fields');
SELECT is((SELECT outcome::text
             FROM tokenvault._refresh_apply(:'a', (SELECT version FROM tokenvault.auths WHERE id = :'a'), NULL,
                      pg_temp.done(jsonb_build_object('access_token', 'TVSECRET-at-' || md5(random()::text),
                                                      'tenant', 'acme-eu', 'instance_url', 'https://127.0.0.2')))),
          'done', 'one that names another allowed label is stored');

-- every request is judged before it is sent (values that got in before the
-- client listed hosts, or through a hole in the checks above)
CREATE FUNCTION pg_temp.refused(verdict tokenvault.verdict) RETURNS text LANGUAGE sql AS
    $$ SELECT verdict.outcome || ' ' || verdict.status || ': ' || verdict.message $$;
SELECT cl AS client FROM tokenvault.clients cl WHERE cl.id = :'c' \gset
SELECT is(pg_temp.refused(tokenvault._token_request(tokenvault._client_config(:'client', '{"tenant": "127.0.0.2", "org": "o"}'),
              'refresh', '{"grant_type": "refresh_token", "refresh_token": "x"}')),
          'error 0: field "tenant" cannot fill the host of refresh_url: a value there is one label of a-z, 0-9 and -',
          'a refresh to a host a field chose is not sent');
SELECT is(pg_temp.refused(tokenvault._revoke_request(tokenvault._client_config(:'client', '{"tenant": "a.b"}'),
              '{"token": "x"}')),
          'error 0: field "tenant" cannot fill the host of revoke_url: a value there is one label of a-z, 0-9 and -',
          'nor a revocation');
UPDATE tokenvault.clients SET token_url = 'http://{host}:9/token' WHERE id = :'c';
SELECT cl AS client FROM tokenvault.clients cl WHERE cl.id = :'c' \gset
SELECT is(pg_temp.refused(tokenvault._token_request(tokenvault._client_config(:'client', jsonb_build_object('host', h)),
              'token', '{"grant_type": "client_credentials"}')),
          'error 0: the host of token_url is an IP address, which allowed_hosts never admits',
          format('nor a token request to %s', h))
  FROM unnest(ARRAY['2130706433', '0x7f000001', '0x']) h;
SELECT is(pg_temp.refused(tokenvault._token_request(tokenvault._client_config(:'client', '{"host": "localhost"}'),
              'token', '{"grant_type": "client_credentials"}')),
          'error 0: the host of token_url is not one the client''s allowed_hosts lists',
          'nor one to a host allowed_hosts does not list');
UPDATE tokenvault.clients SET allowed_hosts = NULL WHERE id = :'c';
SELECT cl AS client FROM tokenvault.clients cl WHERE cl.id = :'c' \gset
SELECT is(pg_temp.refused(tokenvault._token_request(tokenvault._client_config(:'client', '{"host": "localhost"}'),
              'token', '{"grant_type": "client_credentials"}')),
          'error 0: token_url names fields in braces, but the client lists no allowed_hosts',
          'a template of a client that lists no hosts (one from before allowed_hosts) is not filled');

-- the host forms resolvers take for addresses, in fixed URLs
SELECT is(tokenvault._url_problem('token_url', u, ARRAY['login.example.com'], NULL),
          'the host of token_url is an IP address, which allowed_hosts never admits', format('%s is an IP address', u))
  FROM unnest(ARRAY['https://[::1]:8443/token', 'https://127.0.0.1./token', 'https://0177.0.0.1/token',
                    'https://127.1/token', 'https://0X7F.1/token']) u;
SELECT is(tokenvault._url_problem('token_url', 'https://LOGIN.Example.COM:8443/token', ARRAY['login.example.com'], NULL),
          NULL, 'host names compare in any case; a port is no part of the host');

SELECT * FROM finish();
ROLLBACK;
