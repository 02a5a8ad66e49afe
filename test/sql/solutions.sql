-- Solutions, slots and instances: Tray Embedded's embedding model.
\set SHOW_CONTEXT never
SET timezone = 'UTC';

-- Generated ids are shown by name: shown() replaces each id in a document
-- with the label it was given here.
CREATE TABLE labels (label text, id uuid);
CREATE FUNCTION shown(doc jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    t text := doc::text;
    l record;
BEGIN
    FOR l IN SELECT * FROM labels LOOP
        t := replace(t, l.id::text, '<' || l.label || '>');
    END LOOP;
    RETURN t::jsonb;
END
$$;

------------------------------------------------------------------------------
-- The reference's "Get Solution Instance" node: Typeform > Sheets
------------------------------------------------------------------------------

SELECT tokenvault.create_user('bolo-zenden', 'Bolo Zenden') AS bolo \gset
SELECT tokenvault.create_client('Typeform', 'typeform', 'oauth2', '{"client_id": "tf", "auth_url": "https://api.typeform.com/oauth/authorize", "token_url": "https://api.typeform.com/oauth/token", "scopes": ["accounts:read"]}') AS typeform \gset
SELECT tokenvault.create_client('Google Sheets', 'google-sheets', 'oauth2', '{"client_id": "gs", "auth_url": "https://accounts.google.com/o/oauth2/v2/auth", "token_url": "https://oauth2.googleapis.com/token"}') AS sheets \gset
SELECT tokenvault.create_auth(:'bolo', :'typeform', 'Bolo''s Typeform', jsonb_build_object(
           'access_token', 'TVSECRET-at-' || md5(random()::text), 'expires_in', 3600)) AS tf_auth,
       tokenvault.create_auth(:'bolo', :'sheets', 'Bolo''s Sheets', jsonb_build_object(
           'access_token', 'TVSECRET-at-' || md5(random()::text), 'expires_in', 3600)) AS gs_auth \gset

SELECT tokenvault.create_solution('Quickstart Typeform > Sheets') AS sol \gset
-- scopes come from the slot: the end user does not choose them
SELECT tokenvault.add_slot(:'sol', 'external_typeform_authentication', 'auth', jsonb_build_object(
           'client_id', :'typeform', 'required', true, 'scopes', '["forms:read", "responses:read", "webhooks:write"]'::jsonb));
SELECT tokenvault.add_slot(:'sol', 'external_google_sheets_authentication', 'auth',
                           '{"service": "google-sheets", "required": true, "scopes": ["https://www.googleapis.com/auth/spreadsheets"]}');
SELECT tokenvault.add_slot(:'sol', 'external_spreadsheet_id', 'config', '{"required": true}');
SELECT tokenvault.add_slot(:'sol', 'external_form_id', 'config', '{"required": true}');
SELECT tokenvault.add_slot(:'sol', 'external_sheet_name', 'config', '{"default": "leads"}');
SELECT external_id, kind, service, scopes, required, force_unique, default_value
  FROM tokenvault.slots WHERE solution_id = :'sol' ORDER BY position;

-- created disabled; the sheet name is left to its default
SELECT tokenvault.create_instance(:'sol', :'bolo', 'Bolo Zenden Typeform > Sheets instance 1',
    jsonb_build_array(jsonb_build_object('externalId', 'external_typeform_authentication', 'authId', :'tf_auth'),
                      jsonb_build_object('externalId', 'external_google_sheets_authentication', 'authId', :'gs_auth')),
    '[{"externalId": "external_spreadsheet_id", "value": "1miJOZQvaVdzrwF1wuUSouHVch43Z9FyRvS5WP9wm1PM"},
      {"externalId": "external_form_id", "value": "Zx86yu9P"}]') AS inst \gset
SELECT enabled FROM tokenvault.instances WHERE id = :'inst';
SELECT tokenvault.update_instance(:'inst', enabled => true);

INSERT INTO labels VALUES ('instance', :'inst'), ('owner', :'bolo'), ('solution', :'sol'),
                          ('typeform auth', :'tf_auth'), ('sheets auth', :'gs_auth');
SELECT jsonb_pretty(shown(tokenvault.instance(:'inst')) - 'created') AS instance;
-- The reference's document with the generated ids and time put in.  Its
-- form id alone is shown bare; tokenvault JSON-encodes every value alike.
SELECT tokenvault.instance(:'inst') = jsonb_build_object(
    'id', :'inst',
    'name', 'Bolo Zenden Typeform > Sheets instance 1',
    'enabled', true,
    'owner', :'bolo',
    'created', (SELECT to_char(created_at, 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') FROM tokenvault.instances WHERE id = :'inst'),
    'solution', jsonb_build_object('id', :'sol', 'title', 'Quickstart Typeform > Sheets', 'description', ''),
    'authValues', jsonb_build_array(
        jsonb_build_object('externalId', 'external_typeform_authentication', 'authId', :'tf_auth'),
        jsonb_build_object('externalId', 'external_google_sheets_authentication', 'authId', :'gs_auth')),
    'configValues', '[{"externalId": "external_spreadsheet_id", "value": "\"1miJOZQvaVdzrwF1wuUSouHVch43Z9FyRvS5WP9wm1PM\""},
                      {"externalId": "external_form_id", "value": "\"Zx86yu9P\""},
                      {"externalId": "external_sheet_name", "value": "\"leads\""}]'::jsonb) AS is_the_reference;
SELECT tokenvault.instance(:'inst')->>'created' ~ '^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$' AS created_as_tray_writes_it;

------------------------------------------------------------------------------
-- The reference's mapping query: Roger Ramjet's Slack and Trello
------------------------------------------------------------------------------

SELECT tokenvault.create_user('roger-ramjet', 'Roger Ramjet') AS roger \gset
SELECT tokenvault.create_client('Slack', 'slack', 'oauth2', '{"client_id": "sl", "auth_url": "https://slack.com/oauth/v2/authorize", "token_url": "https://slack.com/api/oauth.v2.access"}') AS slack \gset
SELECT tokenvault.create_client('Trello', 'trello', 'api_key') AS trello \gset
SELECT tokenvault.create_auth(:'roger', :'slack', 'Roger Ramjet''s Slack Account', jsonb_build_object('access_token', 'TVSECRET-at-' || md5(random()::text))) AS slack1 \gset
SELECT tokenvault.create_auth(:'roger', :'trello', 'Roger Ramjet''s Trello Account', jsonb_build_object('api_key', 'TVSECRET-key-' || md5(random()::text))) AS trello1 \gset
SELECT tokenvault.create_auth(:'roger', :'slack', 'Roger Ramjet''s Slack Account 2', jsonb_build_object('access_token', 'TVSECRET-at-' || md5(random()::text))) AS slack2 \gset
SELECT tokenvault.create_solution('Slack channel solution') AS slack_sol \gset
SELECT tokenvault.add_slot(:'slack_sol', 'external_slack_authentication', 'auth', '{"service": "slack"}');
SELECT tokenvault.create_solution('Slack and Trello solution') AS both_sol \gset
SELECT tokenvault.add_slot(:'both_sol', 'external_trello_authentication', 'auth', '{"service": "trello"}');
SELECT tokenvault.add_slot(:'both_sol', 'external_slack_sales_dept_authentication', 'auth', '{"service": "slack"}');
SELECT tokenvault.create_instance(:'slack_sol', :'roger', 'Slack channel solution 1',
    jsonb_build_array(jsonb_build_object('externalId', 'external_slack_authentication', 'authId', :'slack1'))) AS inst1 \gset
SELECT tokenvault.create_instance(:'both_sol', :'roger', 'Slack and Trello solution 1',
    jsonb_build_array(jsonb_build_object('externalId', 'external_trello_authentication', 'authId', :'trello1'),
                      jsonb_build_object('externalId', 'external_slack_sales_dept_authentication', 'authId', :'slack2'))) AS inst2 \gset

INSERT INTO labels VALUES ('slack instance', :'inst1'), ('slack and trello instance', :'inst2'),
                          ('slack auth', :'slack1'), ('trello auth', :'trello1'), ('slack auth 2', :'slack2');
SELECT jsonb_pretty(shown(tokenvault.user_instances(:'roger'))) AS user_instances;
SELECT tokenvault.user_instances(:'roger') = jsonb_build_object(
    'solutionInstances', jsonb_build_array(
        jsonb_build_object('id', :'inst1', 'name', 'Slack channel solution 1', 'authValues', jsonb_build_array(
            jsonb_build_object('authId', :'slack1', 'externalId', 'external_slack_authentication'))),
        jsonb_build_object('id', :'inst2', 'name', 'Slack and Trello solution 1', 'authValues', jsonb_build_array(
            jsonb_build_object('authId', :'trello1', 'externalId', 'external_trello_authentication'),
            jsonb_build_object('authId', :'slack2', 'externalId', 'external_slack_sales_dept_authentication')))),
    'authentications', jsonb_build_array(
        jsonb_build_object('id', :'slack1', 'name', 'Roger Ramjet''s Slack Account'),
        jsonb_build_object('id', :'trello1', 'name', 'Roger Ramjet''s Trello Account'),
        jsonb_build_object('id', :'slack2', 'name', 'Roger Ramjet''s Slack Account 2'))) AS is_the_reference;
-- a user with nothing yet; an unknown user
SELECT tokenvault.create_user('nobody-yet') AS nobody \gset
SELECT tokenvault.user_instances(:'nobody');
SELECT try('SELECT tokenvault.user_instances(''00000000-0000-0000-0000-000000000001'')');

------------------------------------------------------------------------------
-- The rules
------------------------------------------------------------------------------

-- external ids are matched case-sensitively; an unknown one names those there are
SELECT try(format($$SELECT tokenvault.create_instance(%L, %L, 'x', '[{"externalId": "External_Typeform_Authentication", "authId": %s}]')$$,
                  :'sol', :'bolo', to_jsonb(:'tf_auth'::text)));
SELECT try(format($$SELECT tokenvault.update_instance(%L, config_values => '[{"externalId": "external_sheet", "value": "x"}]')$$, :'inst'));
-- a config slot is not an auth slot, and an entry has one shape
SELECT try(format($$SELECT tokenvault.update_instance(%L, auth_values => '[{"externalId": "external_form_id", "authId": %s}]')$$,
                  :'inst', to_jsonb(:'tf_auth'::text)));
SELECT try(format($$SELECT tokenvault.update_instance(%L, config_values => '[{"externalId": "external_form_id"}]')$$, :'inst'));
SELECT try(format($$SELECT tokenvault.update_instance(%L, config_values => '{"external_form_id": "x"}')$$, :'inst'));
SELECT try(format($$SELECT tokenvault.update_instance(%L, config_values => '[{"externalId": "external_form_id", "value": 1}, {"externalId": "external_form_id", "value": 2}]')$$, :'inst'));
SELECT try(format($$SELECT tokenvault.update_instance(%L, auth_values => '[{"externalId": "external_typeform_authentication", "authId": "tf"}]')$$, :'inst'));

-- an auth value must be the owner's own auth
SELECT try(format($$SELECT tokenvault.update_instance(%L, auth_values => '[{"externalId": "external_typeform_authentication", "authId": %s}]')$$,
                  :'inst', to_jsonb(:'slack1'::text)));
SELECT tokenvault.create_auth(:'roger', :'typeform', 'Roger''s Typeform', jsonb_build_object('access_token', 'TVSECRET-at-' || md5(random()::text))) AS roger_tf \gset
SELECT try(format($$SELECT tokenvault.update_instance(%L, auth_values => '[{"externalId": "external_typeform_authentication", "authId": %s}]')$$,
                  :'inst', to_jsonb(:'roger_tf'::text)));
-- of the slot's client, or of its service
SELECT tokenvault.create_client('Typeform EU', 'typeform', 'oauth2', '{"client_id": "tf-eu", "auth_url": "https://api.typeform.eu/oauth/authorize", "token_url": "https://api.typeform.eu/oauth/token"}') AS typeform_eu \gset
SELECT tokenvault.create_auth(:'bolo', :'typeform_eu', 'Bolo''s EU Typeform', jsonb_build_object('access_token', 'TVSECRET-at-' || md5(random()::text))) AS tf_eu_auth \gset
SELECT try(format($$SELECT tokenvault.update_instance(%L, auth_values => '[{"externalId": "external_typeform_authentication", "authId": %s}]')$$,
                  :'inst', to_jsonb(:'tf_eu_auth'::text)));
SELECT try(format($$SELECT tokenvault.update_instance(%L, auth_values => '[{"externalId": "external_google_sheets_authentication", "authId": %s}]')$$,
                  :'inst', to_jsonb(:'tf_auth'::text)));

-- required slots: filled before an instance is enabled, and while it is
SELECT tokenvault.create_instance(:'sol', :'bolo', 'half filled',
    jsonb_build_array(jsonb_build_object('externalId', 'external_google_sheets_authentication', 'authId', :'gs_auth'))) AS half \gset
SELECT try(format('SELECT tokenvault.update_instance(%L, enabled => true)', :'half'));
SELECT try(format($$SELECT tokenvault.update_instance(%L, config_values => '[{"externalId": "external_form_id", "value": null}]')$$, :'inst'));
SELECT enabled FROM tokenvault.instances WHERE id = :'inst';
-- disabled, it may be emptied; given values and the enabling, it starts
SELECT tokenvault.update_instance(:'inst', enabled => false, config_values => '[{"externalId": "external_form_id", "value": null}]');
SELECT tokenvault.update_instance(:'inst', enabled => true, config_values => '[{"externalId": "external_form_id", "value": "Zx86yu9P"}]');
SELECT enabled FROM tokenvault.instances WHERE id = :'inst';
-- a new required slot must be filled in every enabled instance first
SELECT try(format($$SELECT tokenvault.add_slot(%L, 'external_channel', 'config', '{"required": true}')$$, :'sol'));
SELECT tokenvault.add_slot(:'sol', 'external_channel', 'config', '{"required": true, "default": "#general"}');

-- config values are JSON; a default applies until a value is set, and again once it is cleared
SELECT tokenvault.update_instance(:'inst', config_values => '[{"externalId": "external_channel", "value": {"id": "C024BE91L", "members": 3}}]');
SELECT tokenvault.instance(:'inst')->'configValues'->3 AS set_value;
SELECT tokenvault.update_instance(:'inst', config_values => '[{"externalId": "external_channel", "value": null}]');
SELECT tokenvault.instance(:'inst')->'configValues'->3 AS default_value;

-- force unique: an auth in another instance cannot fill the slot, and the
-- auth in the slot cannot be used by another instance
SELECT tokenvault.create_solution('Unique Slack') AS uniq \gset
SELECT tokenvault.add_slot(:'uniq', 'external_slack', 'auth', '{"service": "slack", "force_unique": true}');
SELECT try(format($$SELECT tokenvault.create_instance(%L, %L, 'unique', '[{"externalId": "external_slack", "authId": %s}]')$$,
                  :'uniq', :'roger', to_jsonb(:'slack1'::text)));
SELECT tokenvault.create_auth(:'roger', :'slack', 'Roger''s new Slack', jsonb_build_object('access_token', 'TVSECRET-at-' || md5(random()::text))) AS slack3 \gset
INSERT INTO labels VALUES ('new slack auth', :'slack3');
SELECT tokenvault.create_instance(:'uniq', :'roger', 'unique', jsonb_build_array(jsonb_build_object('externalId', 'external_slack', 'authId', :'slack3'))) AS uniq_inst \gset
SELECT try(format($$SELECT tokenvault.update_instance(%L, auth_values => '[{"externalId": "external_slack_authentication", "authId": %s}]')$$,
                  :'inst1', to_jsonb(:'slack3'::text)));
-- within one instance an auth may fill two slots
SELECT tokenvault.update_instance(:'inst2', auth_values => jsonb_build_array(jsonb_build_object('externalId', 'external_slack_sales_dept_authentication', 'authId', :'slack1')));

-- static slots: the solution's auth in every instance, set by no one else
SELECT tokenvault.create_user('acme-company', 'ACME') AS acme \gset
SELECT tokenvault.create_client('Company FTP', 'ftp', 'basic') AS ftp \gset
SELECT tokenvault.create_auth(:'acme', :'ftp', 'ACME FTP login', jsonb_build_object('username', 'acme', 'password', 'TVSECRET-pw-' || md5(random()::text))) AS ftp_auth \gset
SELECT tokenvault.add_slot(:'sol', 'external_ftp', 'auth', jsonb_build_object('service', 'ftp', 'static_auth_id', :'ftp_auth', 'required', true));
INSERT INTO labels VALUES ('ftp auth', :'ftp_auth');
SELECT shown(tokenvault.instance(:'inst')->'authValues') AS auth_values;
SELECT shown(tokenvault.instance(:'half')->'authValues') AS auth_values;
SELECT try(format($$SELECT tokenvault.update_instance(%L, auth_values => '[{"externalId": "external_ftp", "authId": %s}]')$$,
                  :'inst', to_jsonb(:'ftp_auth'::text)));
SELECT try(format($$SELECT tokenvault.update_instance(%L, auth_values => '[{"externalId": "external_ftp", "authId": null}]')$$, :'inst'));
SELECT try(format($$SELECT tokenvault.add_slot(%L, 'external_ftp2', 'auth', '{"service": "ftp", "static_auth_id": %s, "force_unique": true}')$$,
                  :'sol', to_jsonb(:'ftp_auth'::text)));
SELECT try(format($$SELECT tokenvault.add_slot(%L, 'external_ftp2', 'auth', '{"service": "sftp", "static_auth_id": %s}')$$,
                  :'sol', to_jsonb(:'ftp_auth'::text)));
SELECT try(format('SELECT tokenvault.delete_auth(%L, force => true)', :'ftp_auth'));
SELECT try(format('SELECT tokenvault.delete_user(%L)', :'acme'));

-- scopes come from the slot: authorize_url_for_slot()
SELECT tokenvault.authorize_url_for_slot(:'sol', 'external_typeform_authentication', :'bolo', 'https://app.example/callback') AS url \gset
SELECT substr(:'url', 1, position('?' IN :'url')) AS endpoint,
       (SELECT string_agg(p, '&' ORDER BY p) FROM unnest(string_to_array(split_part(:'url', '?', 2), '&')) p
         WHERE p ~ '^(client_id|scope|redirect_uri|response_type)=') AS params;
SELECT (SELECT scopes FROM tokenvault.auth_states ORDER BY expires_at DESC LIMIT 1) AS state_scopes;
SELECT try(format($$SELECT tokenvault.authorize_url_for_slot(%L, 'external_ftp', %L, 'https://app.example/callback')$$, :'sol', :'bolo'));
SELECT try(format($$SELECT tokenvault.authorize_url_for_slot(%L, 'external_form_id', %L, 'https://app.example/callback')$$, :'sol', :'bolo'));
-- a slot that names a service takes the one authorization_code client of it
SELECT split_part(split_part(tokenvault.authorize_url_for_slot(:'sol', 'external_google_sheets_authentication', :'bolo', 'https://app.example/callback'),
                             'client_id=', 2), '&', 1) AS sheets_client_id;
SELECT try(format($$SELECT tokenvault.authorize_url_for_slot(%L, 'external_slack_sales_dept_authentication', %L, 'https://app.example/cb')$$, :'both_sol', :'roger'));
SELECT tokenvault.create_client('Slack again', 'slack', 'oauth2', '{"client_id": "sl2", "auth_url": "https://slack.com/oauth/v2/authorize", "token_url": "https://slack.com/api/oauth.v2.access"}') AS slack_again \gset
SELECT try(format($$SELECT tokenvault.authorize_url_for_slot(%L, 'external_slack_sales_dept_authentication', %L, 'https://app.example/cb')$$, :'both_sol', :'roger'));

-- deleting an auth an instance uses is refused, naming the instances ...
SELECT try(format('SELECT tokenvault.delete_auth(%L)', :'slack1'));
SELECT try(format('SELECT tokenvault.delete_user_auths(%L)', :'roger'));
SELECT try(format('SELECT tokenvault.delete_client(%L, force => true)', :'typeform'));
-- ... unless forced: the instances are disabled and say so
SELECT tokenvault.update_instance(:'inst1', enabled => true);
SELECT tokenvault.delete_auth(:'slack1', force => true);
SELECT name, enabled, shown(tokenvault.instance(id)->'authValues') AS auth_values
  FROM tokenvault.instances WHERE owner = :'roger' ORDER BY created_at;
INSERT INTO labels VALUES ('roger', :'roger'), ('slack solution', :'slack_sol'), ('slack and trello solution', :'both_sol'),
                          ('unique solution', :'uniq');
SELECT payload->>'instance_name' AS disabled FROM tokenvault.events WHERE kind = 'instance.disabled' ORDER BY id;
SELECT jsonb_pretty(shown(payload)) AS payload FROM tokenvault.events WHERE kind = 'instance.disabled' ORDER BY id LIMIT 1;

------------------------------------------------------------------------------
-- Administration: list, rename, change and remove
------------------------------------------------------------------------------

SELECT tokenvault.update_solution(:'slack_sol', title => 'Slack channels', description => 'Post to a channel');
SELECT title, description FROM tokenvault.solutions WHERE id = :'slack_sol';
SELECT s.title, count(i.id) AS instances
  FROM tokenvault.solutions s LEFT JOIN tokenvault.instances i ON i.solution_id = s.id
 GROUP BY s.id, s.title ORDER BY s.title;
SELECT try(format('SELECT tokenvault.delete_solution(%L)', :'slack_sol'));
SELECT tokenvault.delete_solution(:'slack_sol', force => true);
-- a slot changes its settings; the values in place are checked against them
SELECT tokenvault.update_slot(:'sol', 'external_sheet_name', '{"default": "sheet1"}');
SELECT tokenvault.instance(:'inst')->'configValues'->2 AS new_default;
SELECT try(format($$SELECT tokenvault.update_slot(%L, 'external_google_sheets_authentication', '{"service": "typeform"}')$$, :'sol'));
SELECT try(format($$SELECT tokenvault.update_slot(%L, 'external_sheet_name', '{"requried": true}')$$, :'sol'));
SELECT try(format($$SELECT tokenvault.update_slot(%L, 'External_Sheet_Name', '{"required": true}')$$, :'sol'));
SELECT try(format($$SELECT tokenvault.add_slot(%L, 'external_sheet_name', 'config')$$, :'sol'));
SELECT try(format($$SELECT tokenvault.add_slot(%L, 'x', 'auth', '{}')$$, :'sol'));
SELECT try(format($$SELECT tokenvault.add_slot(%L, 'x', 'secret')$$, :'sol'));
-- a slot goes with its values
SELECT tokenvault.delete_slot(:'sol', 'external_channel');
SELECT count(*) FROM tokenvault.slots WHERE solution_id = :'sol' AND external_id = 'external_channel';
SELECT tokenvault.update_instance(:'half', name => 'renamed');
SELECT tokenvault.delete_instance(:'half');
SELECT try(format('SELECT tokenvault.instance(%L)', :'half'));

-- deleting a user takes its instances along
SELECT tokenvault.delete_user(:'roger');
SELECT count(*) FROM tokenvault.instances WHERE owner = :'roger';

DROP TABLE labels;
DROP FUNCTION shown(jsonb);
