-- Where the key file may be: never where base backups and replicas carry it,
-- never created behind the administrator's back.
BEGIN;
SELECT plan(11);

CREATE TEMP TABLE sh_out (line text);
CREATE FUNCTION pg_temp.sh(command text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    TRUNCATE sh_out;
    EXECUTE format('COPY sh_out FROM PROGRAM %L', command);
    RETURN (SELECT string_agg(line, E'\n') FROM sh_out);
END
$$;
SELECT current_setting('data_directory') AS datadir, 'tap-location-' || md5(random()::text) AS name,
       regexp_replace(current_setting('tokenvault.key_file'), '[^/]*$', '') AS keydir \gset

-- A relative path is in the data directory, as the old default was.
SELECT set_config('tokenvault.key_file', :'name', true) AS relative \gset
SELECT throws_ok('SELECT tokenvault.create_key_file()', 'F0000',
                 format('key file "%s/%s" is inside the data directory', :'datadir', :'name'),
                 'a key file in the data directory is refused when created');
SELECT throws_ok('SELECT * FROM tokenvault.key_ring()', 'F0000',
                 format('key file "%s/%s" is inside the data directory', :'datadir', :'name'),
                 '... and when read');
SELECT is(pg_temp.sh(format('test -e %s/%s && echo present || echo absent', :'datadir', :'name')), 'absent',
          'nothing was written there');

-- An absolute path into it, or a way round through a symbolic link
SELECT set_config('tokenvault.key_file', format('%s/global/%s', :'datadir', :'name'), true) AS absolute \gset
SELECT throws_ok('SELECT * FROM tokenvault.key_ring()', 'F0000', NULL,
                 'an absolute path into the data directory is refused');
SELECT pg_temp.sh(format('ln -s %s %s%s-link', :'datadir', :'keydir', :'name')) AS linked \gset
SELECT set_config('tokenvault.key_file', format('%s%s-link/%s', :'keydir', :'name', :'name'), true) AS via_link \gset
SELECT throws_ok('SELECT tokenvault.create_key_file()', 'F0000', NULL,
                 'a path through a symbolic link into the data directory is refused');
SELECT pg_temp.sh(format('rm -f %s%s-link', :'keydir', :'name')) AS unlinked \gset

-- Unless the administrator says so
SELECT set_config('tokenvault.key_file', :'name', true) AS relative_again \gset
SELECT set_config('tokenvault.key_file_in_data_directory', 'on', true) AS allowed \gset
SELECT cmp_ok(tokenvault.create_key_file(), '>', 0::bigint,
              'with tokenvault.key_file_in_data_directory it may be there');
SELECT pg_temp.sh(format('rm -f %s/%s', :'datadir', :'name')) AS removed \gset
SELECT set_config('tokenvault.key_file_in_data_directory', 'off', true) AS disallowed \gset

-- No key source at all
SELECT set_config('tokenvault.key_file', '', true) AS unset \gset
SELECT throws_ok('SELECT * FROM tokenvault.key_ring()', 'F0000',
                 'tokenvault has no key ring: neither tokenvault.key_file nor tokenvault.key_command is set',
                 'without a key source, an error says which settings to set');

-- A database that holds secrets gets no new key file: its keys are to be restored.
SELECT set_config('tokenvault.key_file', :'keydir' || :'name', true) AS elsewhere \gset
SELECT tokenvault.create_key_file() AS first \gset
SELECT tokenvault.create_auth(tokenvault.create_user('tap-location'), tokenvault.create_client('API', 'api', 'api_key'),
                              NULL, jsonb_build_object('api_key', 'TVSECRET-loc-' || md5(random()::text))) AS a \gset
SELECT pg_temp.sh(format('rm -f %s%s', :'keydir', :'name')) AS forgotten \gset
-- as a new backend would after the restore: the ring is read afresh
SELECT set_config('tokenvault.key_file', :'keydir' || :'name', true) AS reread \gset
SELECT throws_ok(format('SELECT tokenvault.access_token(%L)', :'a'), '58P01',
                 format('key file "%s%s" does not exist', :'keydir', :'name'),
                 'a restore that forgot the key file fails, naming it');
SELECT throws_ok('SELECT tokenvault.create_key_file()', '55000', NULL,
                 'create_key_file() refuses where secrets are sealed');
SELECT is(pg_temp.sh(format('test -e %s%s && echo present || echo absent', :'keydir', :'name')), 'absent',
          'no new key file appeared');

-- Only a superuser chooses where keys live
CREATE ROLE tap_location_admin IN ROLE tokenvault_admin;
SET LOCAL ROLE tap_location_admin;
SELECT throws_ok($$SET tokenvault.key_file_in_data_directory = on$$, '42501', NULL,
                 'an administrator of tokenvault cannot allow a key file in the data directory');
RESET ROLE;

SELECT * FROM finish();
ROLLBACK;
