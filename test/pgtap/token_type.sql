-- A token type becomes the scheme of the Authorization header that
-- http_headers() builds, so it must be an HTTP token: a provider's or an
-- import's CR LF would otherwise add a header of its choosing (issue 16,
-- item 6).  Imports and refreshes store it through the same check.
BEGIN;
SELECT plan(5);

SELECT tokenvault.create_user('tap-token-type') AS u \gset
SELECT tokenvault.create_client('OAuth', 'tt', 'oauth2',
           '{"client_id": "tt", "auth_url": "https://127.0.0.1:9/a", "token_url": "https://127.0.0.1:9/t"}') AS c \gset

SELECT throws_ok(format('SELECT tokenvault.create_auth(%L, %L, ''x'', %L)', :'u', :'c',
                        jsonb_build_object('access_token', 'TVSECRET-tt-' || md5(random()::text),
                                           'token_type', E'Bearer\r\nX-Injected: 1')),
                 '22023', NULL, 'an imported token_type with CR LF is refused');
SELECT throws_ok(format('SELECT tokenvault.create_auth(%L, %L, ''x'', %L)', :'u', :'c',
                        jsonb_build_object('access_token', 'TVSECRET-tt-' || md5(random()::text),
                                           'token_type', 'Bearer extra')),
                 '22023', NULL, 'and so is one with a space');
SELECT lives_ok(format('SELECT tokenvault.create_auth(%L, %L, ''dpop'', %L)', :'u', :'c',
                       jsonb_build_object('access_token', 'TVSECRET-tt-' || md5(random()::text), 'token_type', 'DPoP')),
                'DPoP is a token type');

-- one stored before the check (written here straight into the table)
SELECT tokenvault.create_auth(:'u', :'c', 'old', jsonb_build_object('access_token', 'TVSECRET-tt-' || md5(random()::text),
                                                                     'expires_in', 3600)) AS a \gset
UPDATE tokenvault.auths SET token_type = E'Bearer\r\nX-Injected: 1' WHERE id = :'a';
SELECT throws_ok(format('SELECT tokenvault.http_headers(%L)', :'a'), '22023', NULL,
                 'http_headers() refuses a stored token type that would add a header');
UPDATE tokenvault.auths SET token_type = 'bearer' WHERE id = :'a';
SELECT ok(tokenvault.http_headers(:'a')->>'Authorization' LIKE 'Bearer TVSECRET-tt-%', 'a good one is used');

SELECT * FROM finish();
ROLLBACK;
