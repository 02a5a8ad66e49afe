-- authorize_url() sends the authorization code only where it is safe: an
-- https redirect_uri, or http to a loopback host (RFC 8252); anything else,
-- a host that merely begins like a loopback one included, is refused with
-- 22023 and a hint.  authorize_url_for_slot() the same.
BEGIN;
SELECT plan(24);

SELECT tokenvault.create_user('tap-redirect') AS u \gset
SELECT tokenvault.create_client('Redirect', 'redirect', 'oauth2', jsonb_build_object(
           'client_id', 'tap redirect', 'auth_url', 'https://provider.invalid/authorize',
           'token_url', 'https://provider.invalid/token')) AS c \gset
SELECT tokenvault.create_solution('Redirect solution') AS sol \gset
SELECT tokenvault.add_slot(:'sol', 'redirect', 'auth', jsonb_build_object('client_id', :'c'));

CREATE FUNCTION pg_temp.refused(uri text) RETURNS text LANGUAGE sql AS $$
    SELECT throws_ok(format('SELECT tokenvault.authorize_url(%L, %L, %L)',
                            (SELECT id FROM tokenvault.clients WHERE name = 'Redirect'),
                            (SELECT id FROM tokenvault.users WHERE external_user_id = 'tap-redirect'), uri),
                     '22023', 'redirect_uri must use https, or http to a loopback host', 'refused: ' || uri)
$$;
CREATE FUNCTION pg_temp.accepted(uri text) RETURNS text LANGUAGE sql AS $$
    SELECT lives_ok(format('SELECT tokenvault.authorize_url(%L, %L, %L)',
                           (SELECT id FROM tokenvault.clients WHERE name = 'Redirect'),
                           (SELECT id FROM tokenvault.users WHERE external_user_id = 'tap-redirect'), uri),
                    'accepted: ' || uri)
$$;

SELECT pg_temp.accepted('https://app.example/oauth/callback?x=1');
SELECT pg_temp.accepted('HTTPS://App.Example:8443/cb');
SELECT pg_temp.accepted('http://127.0.0.1/callback');
SELECT pg_temp.accepted('http://127.255.0.9:8080/cb');
SELECT pg_temp.accepted('http://[::1]:51004/cb');
SELECT pg_temp.accepted('http://localhost:3000');
SELECT pg_temp.accepted('HTTP://LOCALHOST/cb#frag');

SELECT pg_temp.refused('http://app.example/oauth/callback');
SELECT pg_temp.refused('http://10.0.0.1/cb');
SELECT pg_temp.refused('http://127.0.0.1.attacker.example/cb');
SELECT pg_temp.refused('http://127.0.0.1@attacker.example/cb');
SELECT pg_temp.refused('http://127.0.0.1:80@attacker.example/cb');
SELECT pg_temp.refused('http://localhost.attacker.example/cb');
SELECT pg_temp.refused('http://localhost\@attacker.example/cb');
SELECT pg_temp.refused('http://[::1].attacker.example/cb');
SELECT pg_temp.refused('http://127.0.0.256/cb');
SELECT pg_temp.refused('ftp://app.example/cb');
SELECT pg_temp.refused('com.example.app://callback');
SELECT pg_temp.refused('https:///cb');

SELECT is((SELECT count(*) FROM tokenvault.auth_states s WHERE s.client_id = :'c'), 7::bigint,
          'a refused redirect_uri leaves no state behind');

-- the refusal's hint says what is allowed
CREATE FUNCTION pg_temp.hint_of(uri text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    h text;
BEGIN
    PERFORM tokenvault.authorize_url((SELECT id FROM tokenvault.clients WHERE name = 'Redirect'),
                                     (SELECT id FROM tokenvault.users WHERE external_user_id = 'tap-redirect'), uri);
    RETURN NULL;
EXCEPTION WHEN invalid_parameter_value THEN
    GET STACKED DIAGNOSTICS h = PG_EXCEPTION_HINT;
    RETURN h;
END
$$;
SELECT ok(pg_temp.hint_of('http://app.example/cb') LIKE '%use https, or http only to 127.0.0.0/8, [::1] or localhost%',
          'the hint names https and the loopback hosts');

-- the same through a slot
SELECT lives_ok(format('SELECT tokenvault.authorize_url_for_slot(%L, ''redirect'', %L, ''https://app.example/cb'')', :'sol', :'u'),
                'authorize_url_for_slot() accepts an https redirect_uri');
SELECT throws_ok(format('SELECT tokenvault.authorize_url_for_slot(%L, ''redirect'', %L, ''http://app.example/cb'')', :'sol', :'u'),
                 '22023', 'redirect_uri must use https, or http to a loopback host',
                 'authorize_url_for_slot() refuses an http redirect_uri to another host');
SELECT throws_ok(format('SELECT tokenvault.authorize_url_for_slot(%L, ''redirect'', %L, ''myapp://cb'')', :'sol', :'u'),
                 '22023', 'redirect_uri must use https, or http to a loopback host',
                 'authorize_url_for_slot() refuses another scheme');

SELECT * FROM finish();
ROLLBACK;
