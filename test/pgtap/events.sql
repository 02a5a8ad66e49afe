-- The worker's SQL side, without a worker: schedules and backoff, expiry
-- notices, events and their payload, webhook deliveries, stats, privileges.
BEGIN;
SELECT plan(48);

SELECT tokenvault.create_user('tap-events', 'Tap Events') AS u \gset
SELECT tokenvault.create_client('Code', 'code-svc', 'oauth2', jsonb_build_object(
           'client_id', 'tap', 'client_secret', 'TVSECRET-cs-' || md5(random()::text),
           'auth_url', 'https://provider.invalid/authorize', 'token_url', 'https://provider.invalid/token')) AS c \gset
SELECT tokenvault.create_client('Every hour', 'hourly', 'oauth2', jsonb_build_object(
           'client_id', 'tap', 'auth_url', 'https://provider.invalid/authorize',
           'token_url', 'https://provider.invalid/token', 'refresh_every', 3600)) AS hourly \gset
SELECT tokenvault.create_client('Key', 'key-svc', 'api_key', '{}') AS k \gset

-- refresh_at
SELECT tokenvault.create_auth(:'u', :'c', 'with refresh', jsonb_build_object(
           'access_token', 'TVSECRET-at-' || md5(random()::text), 'refresh_token', 'TVSECRET-rt-' || md5(random()::text),
           'expires_in', 86400)) AS a_rt \gset
SELECT tokenvault.create_auth(:'u', :'c', 'no refresh', jsonb_build_object(
           'access_token', 'TVSECRET-at-' || md5(random()::text), 'expires_in', 86400)) AS a_nort \gset
SELECT tokenvault.create_auth(:'u', :'hourly', 'hourly', jsonb_build_object(
           'access_token', 'TVSECRET-at-' || md5(random()::text), 'refresh_token', 'TVSECRET-rt-' || md5(random()::text),
           'expires_in', 86400)) AS a_hourly \gset
SELECT tokenvault.create_auth(:'u', :'k', 'key', jsonb_build_object('api_key', 'TVSECRET-ak-' || md5(random()::text))) AS a_key \gset

SELECT is((SELECT refresh_at FROM tokenvault.auths WHERE id = :'a_rt'),
          (SELECT expires_at - current_setting('tokenvault.refresh_lead')::interval FROM tokenvault.auths WHERE id = :'a_rt'),
          'a refreshable auth is due refresh_lead before it expires');
SELECT is((SELECT refresh_at FROM tokenvault.auths WHERE id = :'a_nort'), NULL, 'no refresh token: never due');
SELECT tokenvault.create_auth(:'u', :'c', 'short', jsonb_build_object(
           'access_token', 'TVSECRET-at-' || md5(random()::text), 'refresh_token', 'TVSECRET-rt-' || md5(random()::text),
           'expires_in', 10)) AS a_short \gset
SELECT ok((SELECT refresh_at BETWEEN now() + interval '4.9 s' AND now() + interval '5.1 s'
             FROM tokenvault.auths WHERE id = :'a_short'),
          'a token that lives less than refresh_lead is refreshed half-way, not over and over');
SELECT is(tokenvault._schedule(c, true, now(), now()), now() + interval '1 second',
          'a token already expired when obtained is refreshed a second later, not at once')
  FROM tokenvault.clients c WHERE c.id = :'c';
SELECT ok(NOT tokenvault._normalize_token(c, '{"access_token": "x", "expires_in": 0}') ? 'expires_in',
          'a provider''s expires_in of 0 is read as no lifetime given')
  FROM tokenvault.clients c WHERE c.id = :'c';
SELECT is((SELECT refresh_at FROM tokenvault.auths WHERE id = :'a_key'), NULL, 'an API key: never due');
SELECT ok((SELECT refresh_at BETWEEN now() + interval '59 min' AND now() + interval '61 min'
             FROM tokenvault.auths WHERE id = :'a_hourly'), 'refresh_every makes it due sooner');
SELECT tokenvault.update_auth(:'a_rt', data => jsonb_build_object(
           'access_token', 'TVSECRET-at-' || md5(random()::text), 'refresh_token', 'TVSECRET-rt-' || md5(random()::text),
           'expires_in', 7200));
SELECT ok((SELECT refresh_at BETWEEN now() + interval '1 h 58 min' AND now() + interval '1 h 59 min 1 s'
             FROM tokenvault.auths WHERE id = :'a_rt'), 'new data moves the schedule');
UPDATE tokenvault.auths SET status = 'needs_reauth' WHERE id = :'a_rt';
SELECT is((SELECT refresh_at FROM tokenvault.auths WHERE id = :'a_rt'), NULL, 'needs_reauth: never due');

-- backoff
SELECT ok((SELECT bool_and(tokenvault._backoff(1, NULL) BETWEEN now() + interval '5 s' AND now() + interval '10 s')
             FROM generate_series(1, 50)), 'the first retry comes 5 to 10 s later');
SELECT ok((SELECT bool_and(tokenvault._backoff(4, NULL) BETWEEN now() + interval '40 s' AND now() + interval '80 s')
             FROM generate_series(1, 50)), 'the fourth 40 to 80 s later');
SELECT ok((SELECT bool_and(tokenvault._backoff(1000, NULL) BETWEEN now() + interval '15 min' AND now() + interval '30 min')
             FROM generate_series(1, 50)), 'never more than 30 min apart, never less than 15 once capped');
SELECT ok((SELECT count(DISTINCT tokenvault._backoff(3, NULL)) > 40 FROM generate_series(1, 50)), 'with jitter');
SELECT ok(tokenvault._backoff(1, 600) >= now() + interval '600 s', 'never sooner than Retry-After');

-- verdicts as oauth2.c makes them
CREATE FUNCTION pg_temp.done(token jsonb) RETURNS tokenvault.verdict LANGUAGE sql AS
    $$ SELECT ROW('done', 200, NULL, NULL, NULL, token)::tokenvault.verdict $$;
CREATE FUNCTION pg_temp.failed(outcome text, message text, error text DEFAULT NULL) RETURNS tokenvault.verdict
    LANGUAGE sql AS $$ SELECT ROW(outcome::tokenvault.outcome, 0, error, message, NULL, NULL)::tokenvault.verdict $$;

-- a failed refresh: backoff and an event; a later success: recovered
SELECT tokenvault.create_auth(:'u', :'c', 'failing', jsonb_build_object(
           'access_token', 'TVSECRET-at-' || md5(random()::text), 'refresh_token', 'TVSECRET-rt-' || md5(random()::text),
           'expires_in', 600)) AS a_fail \gset
SELECT tokenvault._refresh_apply(:'a_fail', (SELECT version FROM tokenvault.auths WHERE id = :'a_fail'), NULL,
           pg_temp.failed('retryable', 'HTTP status 503'));
SELECT ok((SELECT refresh_at BETWEEN now() + interval '5 s' AND now() + interval '10 s' AND failure_count = 1
             FROM tokenvault.auths WHERE id = :'a_fail'), 'a retryable failure backs off');
SELECT is((SELECT payload->>'error' FROM tokenvault.events WHERE auth_id = :'a_fail' AND kind = 'auth.refresh_failed'),
          'HTTP status 503', 'auth.refresh_failed carries the error');
SELECT tokenvault._refresh_apply(:'a_fail', (SELECT version FROM tokenvault.auths WHERE id = :'a_fail'),
           NULL, pg_temp.done(jsonb_build_object('access_token', 'TVSECRET-at-' || md5(random()::text), 'expires_in', 3600)));
SELECT is((SELECT kind FROM tokenvault.events WHERE auth_id = :'a_fail' ORDER BY id DESC LIMIT 1), 'auth.recovered',
          'a success after failures is auth.recovered');
SELECT ok((SELECT refresh_at = expires_at - current_setting('tokenvault.refresh_lead')::interval AND failure_count = 0
             FROM tokenvault.auths WHERE id = :'a_fail'), '... and the schedule is back to normal');
SELECT tokenvault._refresh_apply(:'a_fail', (SELECT version FROM tokenvault.auths WHERE id = :'a_fail'), NULL,
           pg_temp.failed('needs_reauth', 'invalid_grant: grant revoked', 'invalid_grant'));
SELECT ok((SELECT status = 'needs_reauth' AND refresh_at IS NULL FROM tokenvault.auths WHERE id = :'a_fail'),
          'needs_reauth stops the tries');
SELECT is((SELECT count(*) FROM tokenvault.events WHERE auth_id = :'a_fail' AND kind = 'auth.needs_reauth'), 1::bigint,
          'and says so once');

-- the payload
SELECT is((SELECT array_agg(k ORDER BY k) FROM tokenvault.events, jsonb_object_keys(payload) k
            WHERE auth_id = :'a_fail' AND kind = 'auth.recovered'),
          ARRAY['authId', 'authentication_name', 'event', 'expires_at', 'external_user_id', 'service_name', 'user_id'],
          'the payload has Tray''s fields and the event');
SELECT is((SELECT payload FROM tokenvault.events WHERE auth_id = :'a_fail' AND kind = 'auth.recovered'),
          (SELECT jsonb_build_object('event', 'auth.recovered', 'authentication_name', 'failing', 'service_name', 'code-svc',
                                     'user_id', :'u'::uuid, 'authId', :'a_fail'::uuid, 'external_user_id', 'tap-events',
                                     'expires_at', to_char(expires_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'))
             FROM tokenvault.auths WHERE id = :'a_fail'), '... with their values, expires_at in UTC');
SELECT ok((SELECT bool_and(payload::text !~ 'TVSECRET') FROM tokenvault.events), 'no event holds a secret');

-- expiry notices
SELECT tokenvault.create_auth(:'u', :'c', 'dies tomorrow', jsonb_build_object(
           'access_token', 'TVSECRET-at-' || md5(random()::text), 'expires_in', 86400)) AS a_dies \gset
SELECT tokenvault.create_auth(:'u', :'c', 'dies late', jsonb_build_object(
           'access_token', 'TVSECRET-at-' || md5(random()::text), 'expires_in', 30 * 86400)) AS a_late \gset
SELECT tokenvault.create_auth(:'u', :'c', 'refresh token dies', jsonb_build_object(
           'access_token', 'TVSECRET-at-' || md5(random()::text), 'refresh_token', 'TVSECRET-rt-' || md5(random()::text),
           'expires_in', 3600, 'refresh_token_expires_in', 2 * 86400)) AS a_rtdies \gset
SELECT tokenvault.create_auth(:'u', :'c', 'dead', jsonb_build_object(
           'access_token', 'TVSECRET-at-' || md5(random()::text), 'expires_in', 86400)) AS a_dead \gset
UPDATE tokenvault.auths SET expires_at = now() - interval '1 s' WHERE id = :'a_dead';
SELECT tokenvault._worker_tick();
SELECT tokenvault._worker_tick();
SELECT is((SELECT count(*) FROM tokenvault.events WHERE auth_id = :'a_dies' AND kind = 'auth.expiring'), 1::bigint,
          'no refresh token, expiring within expiry_notice: exactly one auth.expiring');
SELECT is((SELECT payload->>'expires_at' FROM tokenvault.events WHERE auth_id = :'a_dies' AND kind = 'auth.expiring'),
          (SELECT to_char(expires_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') FROM tokenvault.auths WHERE id = :'a_dies'),
          '... naming when it expires');
SELECT is((SELECT count(*) FROM tokenvault.events WHERE auth_id = :'a_late' AND kind = 'auth.expiring'), 0::bigint,
          'not before the window');
SELECT is((SELECT payload->>'expires_at' FROM tokenvault.events WHERE auth_id = :'a_rtdies' AND kind = 'auth.expiring'),
          (SELECT to_char(refresh_expires_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') FROM tokenvault.auths WHERE id = :'a_rtdies'),
          'a refresh token that expires: announced for when it does');
SELECT is((SELECT count(*) FROM tokenvault.events WHERE auth_id = :'a_hourly' AND kind = 'auth.expiring'), 0::bigint,
          'a refreshable auth is not announced');
SELECT is((SELECT count(*) FROM tokenvault.events WHERE auth_id = :'a_rt' AND kind = 'auth.expiring'), 1::bigint,
          'one that needs reauthorization is');
SELECT is((SELECT status FROM tokenvault.auths WHERE id = :'a_dead'), 'expired', 'past its expiry: expired');
SELECT is((SELECT count(*) FROM tokenvault.events WHERE auth_id = :'a_dead' AND kind = 'auth.expired'), 1::bigint,
          '... and auth.expired once');

-- deletion
SELECT tokenvault.delete_auth(:'a_late');
SELECT is((SELECT payload->>'authentication_name' FROM tokenvault.events WHERE auth_id = :'a_late' AND kind = 'auth.deleted'),
          'dies late', 'delete_auth emits auth.deleted');
SELECT tokenvault.create_user('tap-events-2') AS u2 \gset
SELECT tokenvault.create_auth(:'u2', :'k', 'key2', jsonb_build_object('api_key', 'TVSECRET-ak-' || md5(random()::text))) AS a_u2 \gset
SELECT tokenvault.delete_user(:'u2');
SELECT is((SELECT payload->>'external_user_id' FROM tokenvault.events WHERE auth_id = :'a_u2' AND kind = 'auth.deleted'),
          'tap-events-2', 'delete_user: each auth''s auth.deleted still names the user');

-- webhooks
SELECT throws_ok($$SELECT tokenvault.add_webhook('ftp://x', 'TVSECRET-wh-0123456789abcdef')$$, '22023',
                 'webhook URL must be an http or https URL', 'a webhook URL is http(s)');
SELECT throws_ok($$SELECT tokenvault.add_webhook('https://hooks.invalid/x', 'short')$$, '22023',
                 'webhook secret must be at least 32 characters, of at least 8 different ones', 'a short secret is refused');
SELECT throws_ok($$SELECT tokenvault.add_webhook('https://hooks.invalid/x', 'TVSECRET-wh-0123456789abcdef', '{auth.nope}')$$,
                 '22023', 'unknown event kind in {auth.nope}', 'an unknown kind is refused');
SELECT throws_ok($$SELECT tokenvault.add_webhook('http://hooks.invalid/x', 'TVSECRET-wh-0123456789abcdef')$$,
                 '22023', 'plain http is not allowed for webhooks', 'plain http needs allow_insecure_http');
SELECT tokenvault.add_webhook('https://hooks.invalid/all', 'TVSECRET-wh-' || md5('all')) AS w_all \gset
SELECT tokenvault.add_webhook('https://hooks.invalid/del', 'TVSECRET-wh-' || md5('del'), '{auth.deleted}') AS w_del \gset
SELECT ok((SELECT position(convert_to('TVSECRET', 'UTF8') IN secret) = 0 FROM tokenvault.webhooks WHERE id = :'w_all'),
          'the webhook secret is sealed');
SELECT tokenvault.create_auth(:'u', :'k', 'hooked', jsonb_build_object('api_key', 'TVSECRET-ak-' || md5(random()::text))) AS a_h \gset
SELECT tokenvault.update_auth(:'a_h', 'hooked 2');
SELECT tokenvault.delete_auth(:'a_h');
SELECT is((SELECT array_agg(w.url ORDER BY w.url) FROM tokenvault.webhook_deliveries d JOIN tokenvault.webhooks w ON w.id = d.webhook_id
            WHERE d.auth_id = :'a_h'), ARRAY['https://hooks.invalid/all', 'https://hooks.invalid/del'],
          'each webhook gets the kinds it asked for');
SELECT tokenvault._refresh_apply(:'a_rtdies', (SELECT version FROM tokenvault.auths WHERE id = :'a_rtdies'), NULL,
           pg_temp.failed('retryable', 'one'));
SELECT tokenvault._refresh_apply(:'a_rtdies', (SELECT version FROM tokenvault.auths WHERE id = :'a_rtdies'), NULL,
           pg_temp.failed('retryable', 'two'));
CREATE TEMP TABLE claim1 AS SELECT d.* FROM tokenvault._webhook_claim(100) c, unnest(c.deliveries) d;
SELECT is((SELECT count(*) FROM claim1 d WHERE d.body LIKE '%' || :'a_rtdies' || '%'), 1::bigint,
          'of one auth''s events, one delivery goes at a time');
SELECT is((SELECT d.secret FROM claim1 d WHERE d.url LIKE '%/del' LIMIT 1),
          'TVSECRET-wh-' || md5('del'), 'a claimed delivery carries the opened secret (for the worker to sign with)');
SELECT tokenvault._webhook_result((SELECT d.id FROM claim1 d WHERE d.body LIKE '%' || :'a_rtdies' || '%'),
                                  500, 'HTTP status 500');
SELECT ok((SELECT attempts = 1 AND last_status = 500 AND d.delivered_at IS NULL
                  AND next_attempt_at BETWEEN now() + interval '1 s' AND now() + interval '2 s'
             FROM tokenvault.webhook_deliveries d JOIN tokenvault.events e ON e.id = d.event_id
            WHERE e.payload->>'error' = 'one'), 'a 500 is tried again 1 to 2 s later');
SELECT tokenvault._webhook_result(d.id, 204, 'HTTP status 204') FROM tokenvault.webhook_deliveries d WHERE d.auth_id = :'a_h';
SELECT ok((SELECT delivered_at IS NOT NULL FROM tokenvault.events WHERE auth_id = :'a_h' AND kind = 'auth.deleted'),
          'an event every webhook has is delivered');
SELECT is(tokenvault.delete_webhook(:'w_del')::text, '', 'delete_webhook');

-- stats and privileges
SELECT is((SELECT auths_due FROM tokenvault.stats), (SELECT count(*) FROM tokenvault.auths WHERE refresh_at <= now()),
          'stats counts the auths due');
SELECT ok((SELECT worker_state IN ('absent', 'idle', 'working', 'starting') FROM tokenvault.stats),
          'stats names the worker''s state');
SELECT ok(has_table_privilege('tokenvault_app', 'tokenvault.events', 'SELECT')
          AND has_table_privilege('tokenvault_app', 'tokenvault.stats', 'SELECT'), 'the app reads events and stats');
SELECT ok(NOT has_column_privilege('tokenvault_admin', 'tokenvault.webhooks', 'secret', 'SELECT')
          AND NOT has_function_privilege('tokenvault_app', 'tokenvault.add_webhook(text, text, text[], boolean)', 'EXECUTE'),
          'webhooks are the admin''s, and their secret nobody''s');

SELECT * FROM finish();
ROLLBACK;
