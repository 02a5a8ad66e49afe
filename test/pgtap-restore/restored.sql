-- Run in a database restored from a pg_dump (test/shell/dump_restore.sh):
-- the rows came back whole and every secret opens beside the same key ring.
BEGIN;
SELECT plan(13);

SELECT is((SELECT count(*) FROM tokenvault.auths), 300::bigint, 'all 300 auths were restored');
SELECT is((SELECT count(*) FROM tokenvault.users), 101::bigint, 'and their 100 users, and the one holding user tokens');
SELECT is((SELECT count(*) FROM tokenvault.clients), 3::bigint, 'and the 3 clients');
SELECT is((SELECT count(*) FROM pg_depend d JOIN pg_extension e ON e.oid = d.refobjid
            WHERE e.extname = 'tokenvault' AND d.classid = 'pg_class'::regclass AND d.deptype = 'e'
              AND d.objid IN ('tokenvault.users'::regclass, 'tokenvault.clients'::regclass, 'tokenvault.auths'::regclass)),
          3::bigint, 'the tables still belong to the extension');
SELECT is((SELECT count(DISTINCT tokenvault._key_id(secret)) FROM tokenvault.auths), 2::bigint,
          'the secrets are sealed under two keys');
SELECT is((SELECT count(*) FROM expected e WHERE e.kind <> 'basic' AND tokenvault.access_token(e.auth_id) = e.token),
          200::bigint, 'every access token and api key opens to what was stored');
SELECT is((SELECT count(*) FROM expected e WHERE e.kind = 'basic'
             AND tokenvault.credentials(e.auth_id)->>'password' = e.token),
          100::bigint, 'every basic password opens');
SELECT is((SELECT count(*) FROM expected_client e JOIN tokenvault.clients c ON c.id = e.client_id
            WHERE tokenvault._open_client(c.secret, c.id)->>'client_secret' = e.client_secret),
          1::bigint, 'the client secret opens');
SELECT is((SELECT count(*) FROM expected_instances WHERE doc->>'enabled' = 'true'), 10::bigint,
          'the 10 enabled instances were dumped');
SELECT is((SELECT count(*) FROM expected_instances e WHERE tokenvault.instance(e.id) = e.doc), 10::bigint,
          'and come back the same: enabled, with their slots, auth and config values');
SELECT is((SELECT count(*) FROM expected_tokens e
            WHERE tokenvault.get_private_token(e.related_id, e.key) = e.value), 20::bigint,
          'every private token opens to what was put');
SELECT is((SELECT count(*) FROM expected_tokens e
            WHERE tokenvault.get_user_token(tokenvault.find_user('dump-tokens'), e.related_id, e.key) = e.value), 20::bigint,
          'and every user token, the grant restored with it');
SELECT lives_ok($$SELECT tokenvault.create_auth(tokenvault.create_user('after-restore'),
                      (SELECT id FROM tokenvault.clients WHERE type = 'api_key'), NULL, '{"api_key": "k"}')$$,
                'the restored database takes new auths');

SELECT * FROM finish();
ROLLBACK;
