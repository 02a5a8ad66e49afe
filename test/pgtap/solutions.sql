-- Solutions, slots and instances: the rules hold whichever way the rows are
-- written (through the functions, or straight into the tables as their
-- owner), nothing is left half-written, and the roles get what they should.
BEGIN;
SELECT plan(55);

SELECT tokenvault.create_user('tap-sol-ann') AS ann, tokenvault.create_user('tap-sol-bob') AS bob,
       tokenvault.create_user('tap-sol-company') AS company \gset
SELECT tokenvault.create_client('Chat', 'chat', 'api_key') AS chat, tokenvault.create_client('Board', 'board', 'api_key') AS board,
       tokenvault.create_client('Files', 'files', 'basic') AS files \gset
CREATE TEMP TABLE a AS
SELECT tokenvault.create_auth(:'ann', :'chat', 'ann chat', jsonb_build_object('api_key', 'TVSECRET-ak-' || md5(random()::text))) AS ann_chat,
       tokenvault.create_auth(:'ann', :'chat', 'ann chat 2', jsonb_build_object('api_key', 'TVSECRET-ak-' || md5(random()::text))) AS ann_chat2,
       tokenvault.create_auth(:'ann', :'board', 'ann board', jsonb_build_object('api_key', 'TVSECRET-ak-' || md5(random()::text))) AS ann_board,
       tokenvault.create_auth(:'bob', :'chat', 'bob chat', jsonb_build_object('api_key', 'TVSECRET-ak-' || md5(random()::text))) AS bob_chat,
       tokenvault.create_auth(:'bob', :'board', 'bob board', jsonb_build_object('api_key', 'TVSECRET-ak-' || md5(random()::text))) AS bob_board,
       tokenvault.create_auth(:'company', :'files', 'company files', jsonb_build_object('username', 'co', 'password', 'TVSECRET-pw-' || md5(random()::text))) AS co_files;
SELECT * FROM a \gset

SELECT tokenvault.create_solution('Tap solution') AS sol, tokenvault.create_solution('Other solution') AS other \gset
SELECT tokenvault.add_slot(:'sol', 'chat', 'auth', '{"service": "chat", "required": true}'),
       tokenvault.add_slot(:'sol', 'board', 'auth', '{"service": "board", "force_unique": true}'),
       tokenvault.add_slot(:'sol', 'files', 'auth', jsonb_build_object('service', 'files', 'static_auth_id', :'co_files')),
       tokenvault.add_slot(:'sol', 'channel', 'config', '{"required": true}'),
       tokenvault.add_slot(:'sol', 'limit', 'config', '{"default": 10}'),
       tokenvault.add_slot(:'other', 'chat', 'auth', '{"service": "chat"}');
SELECT tokenvault.create_instance(:'sol', :'ann', 'ann 1',
           jsonb_build_array(jsonb_build_object('externalId', 'chat', 'authId', :'ann_chat'),
                             jsonb_build_object('externalId', 'board', 'authId', :'ann_board')),
           '[{"externalId": "channel", "value": "#ann"}]') AS i1 \gset
SELECT tokenvault.update_instance(:'i1', enabled => true);
SELECT tokenvault.create_instance(:'sol', :'bob', 'bob 1') AS i2 \gset

-- Straight into the tables, as their owner
SELECT throws_ok(format($$INSERT INTO tokenvault.instance_auth_values VALUES (%L, %L, 'chat', %L)$$, :'i2', :'sol', :'ann_chat2'),
                 '23514', NULL, 'a direct write cannot fill an instance with another user''s auth');
SELECT throws_ok(format($$INSERT INTO tokenvault.instance_auth_values VALUES (%L, %L, 'Chat', %L)$$, :'i2', :'sol', :'bob_chat'),
                 '42704', NULL, 'nor use an external id in another case');
SELECT throws_ok(format($$INSERT INTO tokenvault.instance_auth_values VALUES (%L, %L, 'nosuch', %L)$$, :'i2', :'sol', :'bob_chat'),
                 '42704', NULL, 'nor an unknown one');
SELECT throws_ok(format($$INSERT INTO tokenvault.instance_auth_values VALUES (%L, %L, 'channel', %L)$$, :'i2', :'sol', :'bob_chat'),
                 '42809', NULL, 'nor put an auth in a config slot');
SELECT throws_ok(format($$INSERT INTO tokenvault.instance_auth_values VALUES (%L, %L, 'files', %L)$$, :'i2', :'sol', :'co_files'),
                 '23514', NULL, 'nor set a static slot, even to its own auth');
SELECT throws_ok(format($$INSERT INTO tokenvault.instance_auth_values VALUES (%L, %L, 'chat', %L)$$, :'i2', :'sol', :'bob_board'),
                 '23514', NULL, 'nor use an auth of another service');
SELECT lives_ok(format($$INSERT INTO tokenvault.instance_auth_values VALUES (%L, %L, 'chat', %L)$$, :'i2', :'other', :'bob_chat'),
                'a row that names another solution ...');
SELECT is((SELECT solution_id FROM tokenvault.instance_auth_values WHERE instance_id = :'i2' AND external_id = 'chat'),
          :'sol'::uuid, '... is tied to its instance''s solution');
SELECT throws_ok(format($$INSERT INTO tokenvault.instance_auth_values VALUES (%L, %L, 'board', %L)$$, :'i2', :'sol', :'ann_board'),
                 '23514', NULL, 'an auth is not shared across owners even by a force-unique slot');
SELECT tokenvault.create_instance(:'sol', :'ann', 'ann 2') AS i3 \gset
SELECT throws_ok(format($$INSERT INTO tokenvault.instance_auth_values VALUES (%L, %L, 'board', %L)$$, :'i3', :'sol', :'ann_board'),
                 '23505', NULL, 'a force-unique slot refuses an auth another instance uses');
SELECT lives_ok(format($$INSERT INTO tokenvault.instance_auth_values VALUES (%L, %L, 'chat', %L)$$, :'i3', :'sol', :'ann_chat'),
                'a plain slot may share one');
SELECT tokenvault.create_solution('Loose') AS loose \gset
SELECT tokenvault.add_slot(:'loose', 'board', 'auth', '{"service": "board"}');
SELECT tokenvault.create_instance(:'loose', :'ann', 'ann loose') AS i4 \gset
SELECT throws_ok(format($$INSERT INTO tokenvault.instance_auth_values VALUES (%L, %L, 'board', %L)$$, :'i4', :'loose', :'ann_board'),
                 '23505', NULL, 'and an auth in a force-unique slot is used by no other instance');

SELECT throws_ok(format('UPDATE tokenvault.instances SET enabled = true WHERE id = %L', :'i2'),
                 '55000', NULL, 'an instance with required slots unfilled cannot be enabled by a direct write');
SELECT throws_ok(format($$INSERT INTO tokenvault.instances (solution_id, owner, name, enabled) VALUES (%L, %L, 'x', true)$$, :'sol', :'bob'),
                 '55000', NULL, 'nor inserted enabled');
SELECT throws_ok(format($$DELETE FROM tokenvault.instance_auth_values WHERE instance_id = %L AND external_id = 'chat'$$, :'i1'),
                 '55000', NULL, 'a required auth cannot be taken from an enabled instance');
SELECT throws_ok(format($$DELETE FROM tokenvault.instance_config_values WHERE instance_id = %L$$, :'i1'),
                 '55000', NULL, 'nor a required config value');
SELECT throws_ok(format($$UPDATE tokenvault.instance_config_values SET value = 'null' WHERE instance_id = %L$$, :'i1'),
                 '23514', NULL, 'a config value is never JSON null (null means: no value)');
SELECT throws_ok(format('UPDATE tokenvault.instances SET owner = %L WHERE id = %L', :'bob', :'i1'),
                 '0A000', NULL, 'an instance does not change owner');
SELECT throws_ok(format('UPDATE tokenvault.instances SET solution_id = %L WHERE id = %L', :'other', :'i1'),
                 '0A000', NULL, 'nor solution');

SELECT throws_ok(format('DELETE FROM tokenvault.auths WHERE id = %L', :'ann_chat'),
                 '2BP01', NULL, 'an auth an instance uses cannot be deleted from the table');
SELECT throws_ok(format('DELETE FROM tokenvault.auths WHERE id = %L', :'co_files'),
                 '2BP01', NULL, 'nor a static slot''s auth');
SELECT throws_ok(format('DELETE FROM tokenvault.users WHERE id = %L', :'ann'),
                 '2BP01', NULL, 'nor by deleting its user from the table (delete_user() takes the instances first)');
SELECT throws_ok(format('UPDATE tokenvault.auths SET user_id = %L WHERE id = %L', :'bob', :'ann_chat'),
                 '23514', NULL, 'an auth in use does not move to another user');
SELECT throws_ok(format($$UPDATE tokenvault.auths SET service = 'board' WHERE id = %L$$, :'ann_chat'),
                 '23514', NULL, 'nor to another service');
SELECT throws_ok(format($$UPDATE tokenvault.auths SET service = 'other' WHERE id = %L$$, :'co_files'),
                 '23514', NULL, 'nor does a static auth');

SELECT throws_ok(format($$UPDATE tokenvault.slots SET kind = 'config', service = NULL WHERE solution_id = %L AND external_id = 'chat'$$, :'sol'),
                 '0A000', NULL, 'a slot does not change kind');
SELECT throws_ok(format($$UPDATE tokenvault.slots SET force_unique = true WHERE solution_id = %L AND external_id = 'chat'$$, :'sol'),
                 '23505', NULL, 'a slot cannot force unique over an auth two instances share');
SELECT throws_ok(format($$UPDATE tokenvault.slots SET static_auth_id = %L WHERE solution_id = %L AND external_id = 'files'$$, :'ann_chat', :'sol'),
                 '23514', NULL, 'a static auth must fit its slot');
SELECT throws_ok(format($$INSERT INTO tokenvault.slots (solution_id, external_id, kind, required) VALUES (%L, 'must', 'config', true)$$, :'sol'),
                 '55000', NULL, 'a required slot that an enabled instance does not fill cannot be added');
SELECT throws_ok(format($$INSERT INTO tokenvault.slots (solution_id, external_id, kind, position) VALUES (%L, 'svc', 'auth', 9)$$, :'sol'),
                 '23514', NULL, 'an auth slot names a client or a service');

-- Through the functions: refused whole, nothing half-written
SELECT throws_ok(format($$SELECT tokenvault.create_instance(%L, %L, 'half', '[{"externalId": "chat", "authId": %s}, {"externalId": "board", "authId": %s}]')$$,
                        :'sol', :'bob', to_jsonb(:'bob_chat'::text), to_jsonb(:'ann_board'::text)),
                 '23514', NULL, 'an instance with one bad value ...');
SELECT is((SELECT count(*) FROM tokenvault.instances WHERE name = 'half'), 0::bigint, '... is not created at all');
SELECT throws_ok(format($$SELECT tokenvault.update_instance(%L, name => 'renamed', enabled => true)$$, :'i2'),
                 '55000', NULL, 'an update that cannot enable ...');
SELECT is((SELECT name FROM tokenvault.instances WHERE id = :'i2'), 'bob 1', '... renames nothing either');
SELECT throws_ok(format('SELECT tokenvault.create_instance(%L, %L, ''x'')', gen_random_uuid(), :'bob'),
                 '42704', NULL, 'an unknown solution is named');
SELECT throws_ok(format('SELECT tokenvault.create_instance(%L, %L, ''x'')', :'sol', gen_random_uuid()),
                 '42704', NULL, 'an unknown owner too');
SELECT throws_ok(format('SELECT tokenvault.create_instance(%L, %L, '''')', :'sol', :'bob'),
                 '22023', NULL, 'an instance needs a name');
SELECT throws_ok(format($$SELECT tokenvault.add_slot(%L, 'x', 'config', '{"scopes": ["a"]}')$$, :'sol'),
                 '22023', 'unknown setting "scopes" for a config slot', 'a config slot takes no auth settings');
SELECT throws_ok(format($$SELECT tokenvault.add_slot(%L, 'x', 'auth', jsonb_build_object('client_id', %L, 'service', 'chat'))$$, :'sol', :'chat'),
                 '22023', NULL, 'an auth slot takes a client or a service, not both');
SELECT throws_ok(format($$SELECT tokenvault.add_slot(%L, '', 'auth', '{"service": "chat"}')$$, :'sol'),
                 '22023', NULL, 'an external id is not empty');

SELECT throws_ok(format($$SELECT tokenvault.add_slot(%L, 'x', 'config', '{"required": "yes"}')$$, :'sol'),
                 '22023', 'setting "required" must be true or false', 'a flag is a JSON boolean');
SELECT throws_ok(format($$SELECT tokenvault.authorize_url_for_slot(%L, 'chat', %L, 'https://app.example/cb')$$, :'sol', :'bob'),
                 '55000', NULL, 'a slot whose service no authorization_code client serves has no authorize URL');

SELECT throws_ok($$SELECT tokenvault.create_solution(repeat('t', 1025))$$, '22023',
                 'a solution needs a title of 1 to 1024 characters', 'a title over 1024 characters is refused in words');
SELECT throws_ok(format($$SELECT tokenvault.update_solution(%L, description => repeat('d', 65537))$$, :'sol'), '22023',
                 'a solution''s description is limited to 65536 characters', 'so is a description over 65536');

-- An auth many instances share: the refusal names ten and counts the rest
SELECT tokenvault.create_solution('Many') AS many,
       tokenvault.create_auth(:'bob', :'chat', 'bob chat shared', jsonb_build_object('api_key', 'TVSECRET-ak-' || md5(random()::text))) AS shared \gset
SELECT tokenvault.add_slot(:'many', 'chat', 'auth', '{"service": "chat"}');
SELECT count(tokenvault.create_instance(:'many', :'bob', 'many ' || i, jsonb_build_array(jsonb_build_object('externalId', 'chat', 'authId', :'shared'))))
  FROM generate_series(1, 12) i;
SELECT throws_matching(format('SELECT tokenvault.delete_auth(%L)', :'shared'),
                       '^auth \S+ is used by instance\(s\) ("many [0-9]+" \(\S+\), ){9}"many [0-9]+" \(\S+\) and 2 more$',
                       'an auth many instances share is refused naming the first ten and counting the rest');

-- A malformed entry is described by its shape, never by its contents
CREATE FUNCTION pg_temp.detail_of(statement text) RETURNS text LANGUAGE plpgsql AS $f$
DECLARE d text;
BEGIN
    EXECUTE statement;
    RETURN NULL;
EXCEPTION WHEN invalid_parameter_value THEN
    GET STACKED DIAGNOSTICS d = PG_EXCEPTION_DETAIL;
    RETURN d;
END $f$;
SELECT md5(random()::text) AS hidden \gset
SELECT is(pg_temp.detail_of(format($$SELECT tokenvault.update_instance(%L, config_values => '[{"externalId": "limit", "val": "TVSECRET-cv-%s"}]')$$, :'i2', :'hidden')),
          'Found an entry with the keys: externalId, val.', 'a misspelt key is named, its value is not shown');
SELECT is(pg_temp.detail_of(format($$SELECT tokenvault.update_instance(%L, config_values => '["TVSECRET-cv-%s"]')$$, :'i2', :'hidden')),
          'Found a JSON string.', 'an entry that is no object is named by its JSON type');

-- Privileges
CREATE ROLE tap_sol_app IN ROLE tokenvault_app;
SELECT tokenvault.admit('tap_sol_app', 'app');
CREATE ROLE tap_sol_nobody;
SET LOCAL ROLE tap_sol_app;
SELECT is(tokenvault.instance(:'i1')->>'name', 'ann 1', 'the app reads instances');
SELECT lives_ok(format('SELECT tokenvault.create_instance(%L, %L, ''by the app'')', :'sol', :'bob'), 'and creates them');
SELECT throws_ok('SELECT tokenvault.create_solution(''x'')', '42501', NULL, 'but does not create solutions');
SELECT throws_ok(format($$SELECT tokenvault.add_slot(%L, 'x', 'config')$$, :'sol'), '42501', NULL, 'nor slots');
SELECT throws_ok(format($$INSERT INTO tokenvault.instance_auth_values VALUES (%L, %L, 'chat', %L)$$, :'i2', :'sol', :'bob_chat'),
                 '42501', NULL, 'nor writes the tables');
RESET ROLE;
SET LOCAL ROLE tap_sol_nobody;
SELECT throws_ok('SELECT 1 FROM tokenvault.instances', '42501', NULL, 'a role with no grant reads no instance');
RESET ROLE;

-- row_security = off is what a restore sets, and what any role may set:
-- the rules that span tables hold for every role but a superuser or the
-- tables' owner
CREATE ROLE tap_sol_admin IN ROLE tokenvault_admin;
SELECT tokenvault.admit('tap_sol_admin', 'admin');
SET LOCAL ROLE tap_sol_app;
SET LOCAL row_security = off;
SELECT tokenvault.create_instance(:'sol', :'bob', 'unfilled, by the app') AS i_off \gset
SELECT throws_ok(format('SELECT tokenvault.update_instance(%L, enabled => true)', :'i_off'), '55000', NULL,
                 'an application with row_security off cannot enable an instance whose required slots are empty');
RESET ROLE;
SET LOCAL ROLE tap_sol_admin;
SET LOCAL row_security = off;
SELECT throws_ok(format($$SELECT tokenvault.add_slot(%L, 'required later', 'config', '{"required": true}')$$, :'sol'), '55000', NULL,
                 'nor an administrator add a required slot that enabled instances do not fill');
RESET ROLE;
RESET row_security;

SELECT * FROM finish();
ROLLBACK;
