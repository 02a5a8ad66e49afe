-- Private token stores: {relatedId, key, value} tokens private to a role,
-- and an end user's tokens shared with roles by grants.
\set SHOW_CONTEXT never
CREATE ROLE regress_tv_crm IN ROLE tokenvault_app;
SELECT tokenvault.admit('regress_tv_crm', 'app');
CREATE ROLE regress_tv_billing IN ROLE tokenvault_app;
SELECT tokenvault.admit('regress_tv_billing', 'app');
CREATE ROLE regress_tv_admin IN ROLE tokenvault_admin;
SELECT tokenvault.admit('regress_tv_admin', 'admin');

------------------------------------------------------------------------------
-- The reference's projects, products and employees, as one role's tokens:
-- the entity id is the related id, an attribute the key, its value the
-- value (lists and objects as JSON text)
------------------------------------------------------------------------------

SET ROLE regress_tv_crm;
SELECT tokenvault.put_private_token('project1', 'name', 'The project number one');
SELECT tokenvault.put_private_token('project1', 'key_words', '["eggs", "ham"]');
SELECT tokenvault.put_private_token('project1', 'products', '["product1"]');
SELECT tokenvault.put_private_token('project1', 'employees', '["employee1", "employee2"]');
SELECT tokenvault.put_private_token('product1', 'name', 'Spam');
SELECT tokenvault.put_private_token('employee1', 'name', 'Jane Doe');
SELECT tokenvault.put_private_token('employee1', 'email', 'jane@example.com');
SELECT tokenvault.put_private_token('employee1', 'projects', '["project1"]');
SELECT tokenvault.put_private_token('employee2', 'name', 'John Doe');
SELECT tokenvault.put_private_token('employee2', 'projects', '["project1"]');

SELECT * FROM tokenvault.list_private_tokens('project1');
SELECT tokenvault.get_private_token('employee1', 'email');
-- the project's employees' names, by following the ids in the tokens
SELECT e AS employee, tokenvault.get_private_token(e, 'name') AS name
  FROM jsonb_array_elements_text(tokenvault.get_private_token('project1', 'employees')::jsonb) e;
-- a put replaces; a missing token is NULL; a delete says whether there was one
SELECT tokenvault.put_private_token('product1', 'name', 'Spam, eggs and ham');
SELECT tokenvault.get_private_token('product1', 'name');
SELECT tokenvault.get_private_token('product1', 'price') IS NULL AS missing_is_null;
SELECT tokenvault.delete_private_token('product1', 'name') AS deleted,
       tokenvault.delete_private_token('product1', 'name') AS deleted_again;
-- dots mean nothing to tokenvault; empty ids do not pass
SELECT tokenvault.put_private_token('org.example.project1', 'owner.email', 'a@b.c');
SELECT tokenvault.get_private_token('org.example.project1', 'owner.email');
SELECT try('SELECT tokenvault.put_private_token('''', ''name'', ''x'')');
SELECT try('SELECT tokenvault.put_private_token(''p'', NULL, ''x'')');
SELECT try('SELECT tokenvault.put_private_token(''p'', ''k'', NULL)');
SELECT count(*) AS tokens FROM tokenvault.list_private_tokens();
-- the table shows the role's own rows, never a value
SELECT related_id, key FROM tokenvault.private_tokens WHERE related_id = 'employee1' ORDER BY key;
SELECT try('SELECT value FROM tokenvault.private_tokens');
RESET ROLE;

-- another role sees none of them, and keeps its own apart
SET ROLE regress_tv_billing;
SELECT count(*) AS seen_through_functions FROM tokenvault.list_private_tokens();
SELECT count(*) AS seen_through_the_table FROM tokenvault.private_tokens;
SELECT tokenvault.get_private_token('project1', 'name') IS NULL AS not_visible;
SELECT tokenvault.put_private_token('project1', 'name', 'Billing''s own project1');
SELECT tokenvault.delete_private_token('project1', 'key_words') AS deleted_theirs;
RESET ROLE;
SET ROLE regress_tv_crm;
SELECT tokenvault.get_private_token('project1', 'name') AS still_crm_s,
       tokenvault.get_private_token('project1', 'key_words') AS still_there;
RESET ROLE;

-- an administrator lists every role's tokens (keys, not values) and changes none
SET ROLE regress_tv_admin;
SELECT owner, count(*) FROM tokenvault.private_tokens GROUP BY owner ORDER BY owner::text;
SELECT try('UPDATE tokenvault.private_tokens SET key = ''x''');
SELECT try('DELETE FROM tokenvault.private_tokens');
RESET ROLE;

------------------------------------------------------------------------------
-- User tokens: an end user's, shared with roles by an administrator
------------------------------------------------------------------------------

SELECT tokenvault.create_user('user-3001', 'Ada') AS ada \gset
SET ROLE regress_tv_crm;
SELECT try(format('SELECT tokenvault.put_user_token(%L, ''settings'', ''theme'', ''dark'')', :'ada'));
RESET ROLE;
SET ROLE regress_tv_admin;
SELECT tokenvault.grant_user_tokens(:'ada', 'regress_tv_crm', 'write');
SELECT tokenvault.grant_user_tokens(:'ada', 'regress_tv_billing', 'read', 'invoices');
SELECT grantee, privilege, related_id FROM tokenvault.user_token_grants WHERE user_id = :'ada' ORDER BY grantee::text;
RESET ROLE;

SET ROLE regress_tv_crm;
SELECT tokenvault.put_user_token(:'ada', 'settings', 'theme', 'dark');
SELECT tokenvault.put_user_token(:'ada', 'invoices', 'address', '1 Analytical Way');
SELECT * FROM tokenvault.list_user_tokens(:'ada');
RESET ROLE;
-- read means read; for one related id, that one only
SET ROLE regress_tv_billing;
SELECT tokenvault.get_user_token(:'ada', 'invoices', 'address');
SELECT * FROM tokenvault.list_user_tokens(:'ada');
SELECT try(format('SELECT tokenvault.get_user_token(%L, ''settings'', ''theme'')', :'ada'));
SELECT try(format('SELECT tokenvault.put_user_token(%L, ''invoices'', ''address'', ''elsewhere'')', :'ada'));
SELECT try(format('SELECT tokenvault.delete_user_token(%L, ''invoices'', ''address'')', :'ada'));
RESET ROLE;
-- a revoke applies to the next statement
SET ROLE regress_tv_admin;
SELECT tokenvault.revoke_user_tokens(:'ada', 'regress_tv_billing', 'invoices') AS revoked;
RESET ROLE;
SET ROLE regress_tv_billing;
SELECT try(format('SELECT tokenvault.get_user_token(%L, ''invoices'', ''address'')', :'ada'));
RESET ROLE;
-- grants are an administrator's
SET ROLE regress_tv_crm;
SELECT try(format('SELECT tokenvault.grant_user_tokens(%L, ''regress_tv_billing'', ''write'')', :'ada'));
RESET ROLE;
SELECT try(format('SELECT tokenvault.grant_user_tokens(%L, ''regress_tv_billing'', ''admin'')', :'ada'));
SELECT try(format('SELECT tokenvault.grant_user_tokens(%L, ''regress_tv_nobody'', ''read'')', :'ada'));

-- deleting the user deletes its tokens and ends the grants on them, which
-- stay as history
SELECT tokenvault.delete_user(:'ada');
SELECT (SELECT count(*) FROM tokenvault.user_tokens WHERE user_id = :'ada') AS tokens,
       (SELECT count(*) FROM tokenvault.user_token_grants WHERE user_id = :'ada' AND revoked_at IS NULL) AS live_grants,
       (SELECT count(*) FROM tokenvault.user_token_grants WHERE user_id = :'ada') AS grants_in_history;

-- Roles outlive the database: clean up
DELETE FROM tokenvault.private_tokens WHERE owner_name LIKE 'regress_tv_%';
DROP ROLE regress_tv_crm, regress_tv_billing, regress_tv_admin;
