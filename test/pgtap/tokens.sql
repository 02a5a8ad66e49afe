-- Private token stores: roles kept apart through the functions and the
-- table, grants that give exactly what they say, revokes at once, 16 MiB
-- values, nothing in plaintext, and key rotation that reaches the tokens.
BEGIN;
SELECT plan(43);

CREATE ROLE tap_tok_a IN ROLE tokenvault_app;
SELECT tokenvault.admit('tap_tok_a', 'app');
CREATE ROLE tap_tok_b IN ROLE tokenvault_app;
SELECT tokenvault.admit('tap_tok_b', 'app');
CREATE ROLE tap_tok_admin IN ROLE tokenvault_admin;
SELECT tokenvault.admit('tap_tok_admin', 'admin');
CREATE ROLE tap_tok_team;
CREATE ROLE tap_tok_c IN ROLE tokenvault_app, tap_tok_team;
SELECT tokenvault.admit('tap_tok_c', 'app');
SELECT 'TVSECRET-pt-' || md5(random()::text) AS secret_a, 'TVSECRET-pt-' || md5(random()::text) AS secret_b \gset

-- Two roles, one related id and key each
SET LOCAL ROLE tap_tok_a;
SELECT tokenvault.put_private_token('r1', 'k', :'secret_a');
RESET ROLE;
SET LOCAL ROLE tap_tok_b;
SELECT is(tokenvault.get_private_token('r1', 'k'), NULL, 'a role does not get another role''s token');
SELECT is((SELECT count(*) FROM tokenvault.list_private_tokens()), 0::bigint, 'nor list it');
SELECT is((SELECT count(*) FROM tokenvault.private_tokens), 0::bigint, 'nor see it in the table');
SELECT is(tokenvault.delete_private_token('r1', 'k'), false, 'nor delete it');
SELECT lives_ok(format('SELECT tokenvault.put_private_token(''r1'', ''k'', %L)', :'secret_b'),
                'a put of the same related id and key ...');
SELECT is(tokenvault.get_private_token('r1', 'k'), :'secret_b', '... makes the role''s own token');
SELECT throws_ok('UPDATE tokenvault.private_tokens SET key = ''x''', '42501', NULL, 'the table is not written directly');
SELECT throws_ok('DELETE FROM tokenvault.private_tokens', '42501', NULL, 'nor deleted from');
SELECT throws_ok('INSERT INTO tokenvault.private_tokens (owner, related_id, key, value) VALUES (''tap_tok_a'', ''r'', ''k'', ''\x00'')',
                 '42501', NULL, 'nor inserted into, in its name or another''s');
SELECT throws_ok('SELECT value FROM tokenvault.private_tokens', '42501', NULL, 'and no value is read from it');
RESET ROLE;
SET LOCAL ROLE tap_tok_a;
SELECT is(tokenvault.get_private_token('r1', 'k'), :'secret_a', 'the first role''s token is as it put it');
SELECT is((SELECT array_agg(owner::text) FROM tokenvault.private_tokens), ARRAY['tap_tok_a'], 'and the table shows it its own row only');
RESET ROLE;
SET LOCAL ROLE tap_tok_admin;
SELECT is((SELECT count(*) FROM tokenvault.private_tokens WHERE owner_name IN ('tap_tok_a', 'tap_tok_b')), 2::bigint,
          'an administrator lists every role''s tokens');
SELECT throws_ok('DELETE FROM tokenvault.private_tokens', '42501', NULL, 'and changes none');
RESET ROLE;

-- Values: 16 MiB round-trips, a byte more does not; none in plaintext
SET LOCAL ROLE tap_tok_a;
SELECT lives_ok($$SELECT tokenvault.put_private_token('big', 'k', repeat(md5('x') || chr(233), 493447) || repeat('y', 16777216 - 493447 * 34))$$,
                'a value of 16 MiB (multibyte characters included) is taken');
SELECT is(octet_length(tokenvault.get_private_token('big', 'k')), 16777216, 'and comes back 16 MiB long');
SELECT is(md5(tokenvault.get_private_token('big', 'k')), md5(repeat(md5('x') || chr(233), 493447) || repeat('y', 16777216 - 493447 * 34)),
          'byte for byte');
SELECT throws_ok($$SELECT tokenvault.put_private_token('big', 'k2', repeat('y', 16777217))$$, '54000',
                 'token value is 16777217 bytes, more than the 16 MiB (16777216 bytes) a token may hold',
                 'a byte more is refused');
SELECT throws_ok($$SELECT tokenvault.put_private_token('', 'k', 'v')$$, '22023', NULL, 'an empty related id is refused');
SELECT lives_ok($$SELECT tokenvault.put_private_token('a.b.c', 'd.e', 'v')$$, 'dots are ordinary characters');
SELECT throws_ok($$SELECT tokenvault.get_private_token(NULL, 'k')$$, '22004', NULL, 'a null related id is an error, not a miss');
RESET ROLE;
SELECT is((SELECT count(*) FROM tokenvault.private_tokens
            WHERE position(convert_to(:'secret_a', 'UTF8') IN value) > 0
               OR position(convert_to(:'secret_b', 'UTF8') IN value) > 0), 0::bigint,
          'no value is stored in plaintext');
-- (as the tables' owner: a sealed value moved onto another row)
UPDATE tokenvault.private_tokens SET related_id = 'r2' WHERE owner_name = 'tap_tok_a' AND related_id = 'r1';
SET LOCAL ROLE tap_tok_a;
SELECT throws_ok($$SELECT tokenvault.get_private_token('r2', 'k')$$, 'XX001', NULL,
                 'a sealed value moved to another related id does not open');
RESET ROLE;
DELETE FROM tokenvault.private_tokens WHERE owner_name = 'tap_tok_a' AND related_id = 'r2';

-- Roles are held by OID and name: a dropped role's tokens go to no later
-- role of the same name nor of the same OID; a renamed role reads its
-- tokens under the name it stored them with
CREATE ROLE tap_tok_old IN ROLE tokenvault_app;
SELECT tokenvault.admit('tap_tok_old', 'app');
SET LOCAL ROLE tap_tok_old;
SELECT tokenvault.put_private_token('r', 'k', :'secret_a');
RESET ROLE;
ALTER ROLE tap_tok_old RENAME TO tap_tok_renamed;
SET LOCAL ROLE tap_tok_renamed;
SELECT is(tokenvault.get_private_token('r', 'k'), NULL, 'a renamed role does not read a token stored under its old name');
RESET ROLE;
ALTER ROLE tap_tok_renamed RENAME TO tap_tok_old;
SET LOCAL ROLE tap_tok_old;
SELECT is(tokenvault.get_private_token('r', 'k'), :'secret_a', '... and reads it again under that name');
RESET ROLE;
DELETE FROM tokenvault.private_tokens WHERE owner_name = 'tap_tok_old';
CREATE ROLE tap_tok_gone IN ROLE tokenvault_app;
SELECT tokenvault.admit('tap_tok_gone', 'app');
SET LOCAL ROLE tap_tok_gone;
SELECT tokenvault.put_private_token('r', 'k', :'secret_a');
RESET ROLE;
DROP ROLE tap_tok_gone;
CREATE ROLE tap_tok_gone IN ROLE tokenvault_app;
SELECT tokenvault.admit('tap_tok_gone', 'app');
SET LOCAL ROLE tap_tok_gone;
SELECT is(tokenvault.get_private_token('r', 'k'), NULL, 'a new role under a dropped role''s name does not get its token');
SELECT is((SELECT count(*) FROM tokenvault.private_tokens), 0::bigint, 'nor sees it in the table');
RESET ROLE;
DELETE FROM tokenvault.private_tokens WHERE owner_name = 'tap_tok_gone';

-- User tokens: grants give exactly read or write, for a related id or all
SELECT tokenvault.create_user('tap-tok-user') AS u \gset
SELECT tokenvault.grant_user_tokens(:'u', 'tap_tok_a', 'write'),
       tokenvault.grant_user_tokens(:'u', 'tap_tok_b', 'read', 'shared'),
       tokenvault.grant_user_tokens(:'u', 'tap_tok_team', 'read');
SET LOCAL ROLE tap_tok_a;
SELECT tokenvault.put_user_token(:'u', 'shared', 'k', :'secret_a'), tokenvault.put_user_token(:'u', 'own', 'k', :'secret_b');
RESET ROLE;
SET LOCAL ROLE tap_tok_b;
SELECT is(tokenvault.get_user_token(:'u', 'shared', 'k'), :'secret_a', 'a read grant reads');
SELECT throws_ok(format('SELECT tokenvault.put_user_token(%L, ''shared'', ''k'', ''x'')', :'u'), '42501', NULL,
                 'but does not write');
SELECT throws_ok(format('SELECT tokenvault.delete_user_token(%L, ''shared'', ''k'')', :'u'), '42501', NULL,
                 'nor delete');
SELECT throws_ok(format('SELECT tokenvault.get_user_token(%L, ''own'', ''k'')', :'u'), '42501', NULL,
                 'a grant for one related id covers no other');
SELECT is((SELECT array_agg(related_id) FROM tokenvault.list_user_tokens(:'u')), ARRAY['shared'],
          'and a listing holds what the grants cover');
RESET ROLE;
SET LOCAL ROLE tap_tok_c;
SELECT is(tokenvault.get_user_token(:'u', 'own', 'k'), :'secret_b', 'a grant to a role serves its members');
RESET ROLE;
SET LOCAL ROLE tap_tok_admin;
SELECT throws_ok(format('SELECT tokenvault.get_user_token(%L, ''own'', ''k'')', :'u'), '42501', NULL,
                 'an administrator reads no user token without a grant');
SELECT tokenvault.revoke_user_tokens(:'u', 'tap_tok_a');
RESET ROLE;
SELECT throws_ok(format('SELECT tokenvault.grant_user_tokens(%L, ''tap_tok_b'', ''read'', '''')', :'u'), '22023', NULL,
                 'a grant for an empty related id is refused');
SET LOCAL ROLE tap_tok_a;
SELECT throws_ok(format('SELECT tokenvault.get_user_token(%L, ''own'', ''k'')', :'u'), '42501', NULL,
                 'a revoke applies at once');
RESET ROLE;
SET LOCAL ROLE tap_tok_b;
SELECT throws_ok(format('SELECT tokenvault.grant_user_tokens(%L, ''tap_tok_b'', ''write'')', :'u'), '42501', NULL,
                 'the app does not grant itself more');
RESET ROLE;
SELECT is((SELECT count(*) FROM tokenvault.user_tokens
            WHERE position(convert_to(:'secret_a', 'UTF8') IN value) > 0), 0::bigint,
          'user token values are sealed too');

-- Keys: rotation reaches the tokens (and webhook secrets, which it missed before 0.5.0)
SELECT tokenvault.add_webhook('https://hooks.example/tv', 'TVSECRET-wh-' || md5(random()::text)) AS hook \gset
SELECT tokenvault.add_key() AS new_key \gset
SELECT cmp_ok(tokenvault.rotate_key(), '>=', 5::bigint, 'rotate_key() re-seals the tokens under the new key');
SELECT is((SELECT count(*) FROM tokenvault.private_tokens WHERE tokenvault._key_id(value) <> :new_key)
          + (SELECT count(*) FROM tokenvault.user_tokens WHERE tokenvault._key_id(value) <> :new_key), 0::bigint,
          'none is left under an old key');
SELECT is((SELECT tokenvault._key_id(secret) FROM tokenvault.webhooks WHERE id = :'hook'), :new_key::bigint,
          'nor is a webhook''s secret');
SET LOCAL ROLE tap_tok_b;
SELECT is(tokenvault.get_user_token(:'u', 'shared', 'k'), :'secret_a', 'and they still open');
RESET ROLE;

SELECT tokenvault.delete_user(:'u');
SELECT is((SELECT count(*) FROM tokenvault.user_tokens WHERE user_id = :'u')
          + (SELECT count(*) FROM tokenvault.user_token_grants WHERE user_id = :'u' AND revoked_at IS NULL), 0::bigint,
          'deleting a user deletes its tokens and ends the grants on them');

SELECT * FROM finish();
ROLLBACK;
