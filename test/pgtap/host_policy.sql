-- The host policy's decisions, without connecting anywhere: private,
-- link-local, metadata, unspecified and disguised addresses are refused;
-- the test cluster's allow-list (127.0.0.0/8, ::1) admits loopback.
BEGIN;
SELECT plan(36);

SELECT is(tokenvault.address_class(a::inet), c, format('%s is %s', a, c))
  FROM (VALUES ('127.0.0.1', 'loopback'), ('127.255.0.9', 'loopback'), ('::1', 'loopback'),
               ('10.1.2.3', 'private'), ('172.16.0.1', 'private'), ('172.31.255.255', 'private'),
               ('192.168.1.1', 'private'), ('fd12:3456::1', 'private'), ('fc00::1', 'private'),
               ('169.254.169.254', 'link-local'), ('fe80::1', 'link-local'),
               ('0.0.0.0', 'unspecified'), ('::', 'unspecified'),
               ('::ffff:169.254.169.254', 'link-local'), ('::ffff:10.0.0.1', 'private'),
               ('::ffff:127.0.0.1', 'loopback'), ('100.64.0.1', 'shared address space'),
               ('224.0.0.1', 'multicast or reserved'), ('255.255.255.255', 'multicast or reserved'),
               ('::10.0.0.1', 'multicast or reserved'), ('64:ff9b::a9fe:a9fe', 'multicast or reserved'),
               ('192.0.0.8', 'multicast or reserved'), ('198.18.0.1', 'multicast or reserved'),
               ('fec0::1', 'private'), ('64:ff9b:1::a00:1', 'multicast or reserved'),
               ('2002:a9fe:a9fe::1', 'link-local'), ('2002:7f00:1::', 'loopback'),
               ('2002:808:808::1', 'public'),
               ('172.32.0.1', 'public'), ('2001:db8::1', 'public')) t(a, c);

SELECT isnt(tokenvault.host_policy('metadata.internal', '169.254.169.254'), NULL,
            'the cloud metadata address is refused, whatever name led there');
SELECT isnt(tokenvault.host_policy('api.example.com', '10.0.0.7'), NULL,
            'a public name that resolves to a private address is refused (DNS rebinding)');
SELECT isnt(tokenvault.host_policy('api.example.com', '::ffff:192.168.0.1'), NULL,
            'so is one that resolves to an IPv4-mapped private address');
SELECT is(tokenvault.host_policy('api.example.com', '172.32.0.1'), NULL, 'a public address passes');
SELECT is(tokenvault.host_policy('localhost', '127.0.0.1'), NULL,
          'an address in an allowed network (the tests'' loopback) passes');

CREATE ROLE tap_policy_app IN ROLE tokenvault_app;
SELECT tokenvault.admit('tap_policy_app', 'app');
SELECT ok(NOT has_function_privilege('tap_policy_app', 'tokenvault.host_policy(text, inet)', 'EXECUTE'),
          'an application does not probe the policy');

SELECT * FROM finish();
ROLLBACK;
