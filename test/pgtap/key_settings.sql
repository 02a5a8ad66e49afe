-- The key settings are a superuser's to read as to set (issue 16, item 1):
-- a key command line may name what a secrets manager needs.
BEGIN;
SELECT plan(5);

CREATE ROLE tap_ks_app IN ROLE tokenvault_app;
SELECT tokenvault.admit('tap_ks_app', 'app');

SET LOCAL ROLE tap_ks_app;
SELECT throws_ok('SHOW tokenvault.key_command', '42501', NULL, 'an application does not SHOW the key command');
SELECT throws_ok('SHOW tokenvault.key_file', '42501', NULL, '... nor the key file');
SELECT throws_ok($$SELECT current_setting('tokenvault.key_command')$$, '42501', NULL, '... nor reads it with current_setting()');
SELECT is((SELECT count(*) FROM pg_settings WHERE name IN ('tokenvault.key_command', 'tokenvault.key_file')), 0::bigint,
          '... nor finds them in pg_settings');
RESET ROLE;
SELECT is((SELECT count(*) FROM pg_settings WHERE name IN ('tokenvault.key_command', 'tokenvault.key_file')), 2::bigint,
          'a superuser sees both');

SELECT * FROM finish();
ROLLBACK;
