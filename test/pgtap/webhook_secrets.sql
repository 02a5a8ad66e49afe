-- Webhook secrets: strong or generated, and rotated with two at a time.
BEGIN;
SELECT plan(10);

SELECT throws_ok($$SELECT tokenvault.add_webhook('https://hooks.invalid/a', repeat('ab', 20))$$, '22023',
                 'webhook secret must be at least 32 characters, of at least 8 different ones',
                 'a long secret of two characters is refused');
SELECT throws_ok($$SELECT tokenvault.add_webhook('https://hooks.invalid/a', 'TVSECRET-0123456789abcdefghij')$$, '22023', NULL,
                 'a secret shorter than 32 characters is refused');
SELECT throws_ok($$SELECT tokenvault.add_webhook('https://hooks.invalid/a', NULL::text)$$, '22004', NULL,
                 'a NULL secret is refused, with a hint to leave it out');

SELECT * INTO TEMP made FROM tokenvault.add_webhook('https://hooks.invalid/generated', kinds => '{auth.deleted}');
SELECT is((SELECT length(secret) FROM made), 43, 'without a secret, add_webhook() generates 32 random bytes and returns them');
SELECT is((SELECT tokenvault._open_webhook(w.secret, w.id) FROM tokenvault.webhooks w JOIN made m ON m.webhook_id = w.id),
          (SELECT secret FROM made), '... which is the secret that signs');
SELECT isnt((SELECT secret FROM tokenvault.add_webhook('https://hooks.invalid/other')), (SELECT secret FROM made),
            'each generated secret is new');

SELECT throws_ok(format('SELECT tokenvault.rotate_webhook_secret(%L, %L)', (SELECT webhook_id FROM made), repeat('x', 40)),
                 '22023', NULL, 'a weak secret is refused in a rotation too');
SELECT tokenvault.rotate_webhook_secret((SELECT webhook_id FROM made), 'TVSECRET-rotated-' || md5('r')) IS NULL AS given \gset
SELECT throws_ok(format('SELECT tokenvault.rotate_webhook_secret(%L)', (SELECT webhook_id FROM made)), '55000', NULL,
                 'a second rotation waits for the first to finish');
SELECT is((SELECT tokenvault._open_webhook(w.previous_secret, w.id) FROM tokenvault.webhooks w JOIN made m ON m.webhook_id = w.id),
          (SELECT secret FROM made), 'during a rotation the old secret is kept, sealed, to sign as well');
SELECT is(tokenvault.finish_webhook_rotation((SELECT webhook_id FROM made))::text
          || tokenvault.finish_webhook_rotation((SELECT webhook_id FROM made))::text, 'truefalse',
          'finishing forgets the old secret, once');

SELECT * FROM finish();
ROLLBACK;
