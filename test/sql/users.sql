-- Users: one per end user of the application, found by its external id.
\set SHOW_CONTEXT never
SELECT tokenvault.create_user('user-1001', 'Ada Lovelace') AS ada \gset
SELECT tokenvault.create_user('user-1002') AS bob \gset

SELECT tokenvault.find_user('user-1001') = :'ada' AS found_ada;
SELECT tokenvault.find_user('USER-1001') IS NULL AS external_ids_are_case_sensitive;
SELECT tokenvault.find_user('nobody') IS NULL AS unknown_is_null;
SELECT external_user_id, name FROM tokenvault.users ORDER BY external_user_id;

-- a duplicate external id, an empty one, a missing one
SELECT tokenvault.create_user('user-1001');
SELECT tokenvault.create_user('');
SELECT tokenvault.create_user(NULL);

-- a user with no auths has an empty list; an unknown user is an error
SELECT count(*) FROM tokenvault.user_auths(:'bob');
SELECT * FROM tokenvault.user_auths('00000000-0000-0000-0000-000000000001');

SELECT tokenvault.delete_user(:'bob');
SELECT tokenvault.find_user('user-1002') IS NULL AS bob_is_gone;
SELECT try(format('SELECT tokenvault.delete_user(%L)', :'bob'));
SELECT tokenvault.delete_user(:'ada');
