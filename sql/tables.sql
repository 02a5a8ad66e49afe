-- The tables, their indexes and sequences, which are dumped, and row level security enabled

CREATE TABLE users (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    external_user_id text NOT NULL UNIQUE
                     CHECK (external_user_id <> '' AND length(external_user_id) <= 1024),
    name             text,
    created_at       timestamptz NOT NULL DEFAULT now()
);

-- A client is how the application reaches one service: an OAuth2 client, or
-- the shape of the basic, api_key or noauth credentials its users hold.
-- The provider catalogue (providers.sql, catalogue.sql): what connecting a
-- well-known service takes, as data.  Rows without added_by ship with the
-- extension and are replaced by its updates; add_provider's are kept.
CREATE TABLE providers (
    key             text PRIMARY KEY CHECK (key ~ '^[a-z][a-z0-9_]{0,62}$'),
    name            text NOT NULL CHECK (name <> ''),
    auth_type       text NOT NULL CHECK (auth_type IN ('oauth2', 'api_key', 'basic')),
    grant_type      text CHECK (grant_type IN ('authorization_code', 'client_credentials')),
    auth_url        text,
    token_url       text,
    refresh_url     text,
    revoke_url      text,
    scopes          text[] NOT NULL DEFAULT '{}',
    required_scopes text[] NOT NULL DEFAULT '{}',
    scope_separator text NOT NULL DEFAULT ' ' CHECK (scope_separator IN (' ', ',')),
    client_auth     text NOT NULL DEFAULT 'basic' CHECK (client_auth IN ('basic', 'post')),
    body_format     text NOT NULL DEFAULT 'form' CHECK (body_format IN ('form', 'json')),
    token_path      text,
    token_lifetime  integer CHECK (token_lifetime > 0),
    never_expires   boolean NOT NULL DEFAULT false,
    pkce            boolean NOT NULL DEFAULT false,
    extra_params    jsonb NOT NULL DEFAULT '{}',
    rotates_refresh_token boolean NOT NULL DEFAULT false,
    refresh_scopes  boolean NOT NULL DEFAULT false,
    -- {"shop": {"from": "auth", "example": "acme", "description": "..."}}
    tenant_params   jsonb NOT NULL DEFAULT '{}',
    allowed_hosts   text[],
    settings        jsonb NOT NULL DEFAULT '{}',   -- further client settings (quirks)
    api_key_header  text,
    api_key_prefix  text,
    verify_url      text,
    verify_method   text NOT NULL DEFAULT 'GET' CHECK (verify_method IN ('GET', 'POST')),
    verify_ok_field text,
    docs_url        text NOT NULL,
    checked_on      date NOT NULL,
    added_by        name,           -- NULL: shipped with the extension
    CHECK ((auth_type = 'oauth2') = (token_url IS NOT NULL))
);

CREATE TABLE clients (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name            text NOT NULL CHECK (name <> ''),
    service         text NOT NULL CHECK (service <> ''),
    type            text NOT NULL CHECK (type IN ('oauth2', 'basic', 'api_key', 'noauth')),
    grant_type      text NOT NULL DEFAULT 'none'
                    CHECK (grant_type IN ('authorization_code', 'client_credentials', 'password', 'none')),
    client_id       text,
    auth_url        text,
    token_url       text,
    refresh_url     text,
    revoke_url      text,
    scopes          text[] NOT NULL DEFAULT '{}',
    client_auth     text NOT NULL DEFAULT 'basic' CHECK (client_auth IN ('basic', 'post')),
    token_lifetime  integer CHECK (token_lifetime > 0),
    extra_params    jsonb NOT NULL DEFAULT '{}',
    api_key_header  text,
    api_key_prefix  text,
    secret          bytea,          -- sealed {"client_secret": ...}
    owner           name NOT NULL,
    visibility      text NOT NULL DEFAULT 'shared' CHECK (visibility IN ('private', 'shared')),
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    -- provider quirks
    body_format     text NOT NULL DEFAULT 'form' CHECK (body_format IN ('form', 'json')),
    token_path      text CHECK (token_path <> ''),
    expires_in_unit text NOT NULL DEFAULT 'seconds'
                    CHECK (expires_in_unit IN ('seconds', 'milliseconds')),
    scope_separator text NOT NULL DEFAULT ' ' CHECK (scope_separator IN (' ', ',')),
    pkce            boolean NOT NULL DEFAULT true,
    refresh_every   integer CHECK (refresh_every > 0),
    -- the hosts a URL with {placeholders} may become (url_template.c)
    allowed_hosts   text[] CHECK (cardinality(allowed_hosts) > 0),
    -- plain http to this client's provider (tests, private networks)
    allow_insecure_http boolean NOT NULL DEFAULT false,
    -- the catalogue row it was made from (providers.sql), and the values
    -- its client-wide {params} were filled with
    provider        text,
    provider_params jsonb,
    -- more provider quirks (README, "Provider quirks")
    required_scopes text[] NOT NULL DEFAULT '{}',
    refresh_scopes  boolean NOT NULL DEFAULT false,
    never_expires   boolean NOT NULL DEFAULT false,
    token_scheme    text CHECK (token_scheme ~ '^[-A-Za-z0-9!#$%&''*+.^_`|~]{1,64}$'),
    token_path_exchange_only boolean NOT NULL DEFAULT false,   -- refreshes answer at the top (Slack)
    token_header    text CHECK (token_header ~ '^[-A-Za-z0-9!#$%&''*+.^_`|~]{1,64}$'),
    field_names     jsonb,
    issued_at_unit  text CHECK (issued_at_unit IN ('seconds', 'milliseconds')),
    error_field     text,
    error_description_field text,
    reauth_errors   text[],
    -- health checks (checks.sql)
    verify_url      text,
    verify_method   text NOT NULL DEFAULT 'GET' CHECK (verify_method IN ('GET', 'POST')),
    verify_ok_field text,
    verify_headers  jsonb,
    check_every     integer CHECK (check_every > 0),
    CHECK ((type = 'oauth2') = (grant_type <> 'none'))
);

-- Everything secret sits in the one sealed column; the rest stays queryable,
-- and expires_at is the source of truth for expiry.
CREATE TABLE auths (
    id                 uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id            uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    client_id          uuid NOT NULL REFERENCES clients (id),
    name               text NOT NULL CHECK (name <> ''),
    service            text NOT NULL,
    scopes             text[] NOT NULL DEFAULT '{}',
    status             text NOT NULL DEFAULT 'active'
                       CHECK (status IN ('active', 'needs_reauth', 'expired', 'revoked', 'error')),
    token_type         text,
    expires_at         timestamptz,
    refresh_expires_at timestamptz,
    refresh_at         timestamptz,
    last_refreshed_at  timestamptz,
    failure_count      integer NOT NULL DEFAULT 0,
    last_error         text,
    version            bigint NOT NULL DEFAULT 1,
    expiry_notified_at timestamptz,
    secret             bytea NOT NULL,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    -- a refresh request went out then and its answer is not stored yet;
    -- committed (synchronously) before the request is sent, so that after
    -- a crash or a failover the row says a refresh token may have been spent
    refresh_sent_at    timestamptz,
    -- why an earlier refresh's answer was lost, until a refresh settles it
    refresh_lost       text CHECK (refresh_lost IN ('failover', 'restart', 'no answer')),
    -- health checks (checks.sql): the last one's time and outcome, the next one's time
    last_checked_at    timestamptz,
    last_check         text CHECK (last_check IN ('ok', 'refused', 'failed')),
    check_at           timestamptz
);
CREATE INDEX auths_user_id_idx ON auths (user_id);
CREATE INDEX auths_client_id_idx ON auths (client_id);
CREATE INDEX auths_refresh_at_idx ON auths (refresh_at) WHERE refresh_at IS NOT NULL;
CREATE INDEX auths_check_at_idx ON auths (check_at) WHERE check_at IS NOT NULL;
SELECT pg_catalog.pg_extension_config_dump('users', '');
SELECT pg_catalog.pg_extension_config_dump('clients', '');
SELECT pg_catalog.pg_extension_config_dump('auths', '');

-- Authorizations under way: one row from authorize_url() to
-- complete_authorization(), at most ten minutes.
CREATE TABLE auth_states (
    state        text PRIMARY KEY,
    client_id    uuid NOT NULL REFERENCES clients (id) ON DELETE CASCADE,
    user_id      uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    auth_id      uuid REFERENCES auths (id) ON DELETE CASCADE,
    name         text,
    scopes       text[] NOT NULL,
    redirect_uri text NOT NULL,
    verifier     bytea,         -- sealed PKCE code verifier
    expires_at   timestamptz NOT NULL,
    fields       jsonb          -- the auth's {params} given to authorize_url (Shopify's shop)
);
CREATE INDEX auth_states_expires_at_idx ON auth_states (expires_at);

CREATE TABLE events (
    id           bigserial PRIMARY KEY,
    kind         text NOT NULL,
    auth_id      uuid,
    payload      jsonb NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    delivered_at timestamptz,    -- every webhook has it (at once when there is none)
    client_id    uuid            -- the auth's client, or the client: who may read it (privileges.sql)
);
CREATE INDEX events_auth_id_idx ON events (auth_id);
CREATE INDEX events_delivered_at_idx ON events (delivered_at);

CREATE TABLE webhooks (
    id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    url        text NOT NULL,
    secret     bytea NOT NULL,  -- sealed HMAC key
    kinds      text[],          -- NULL: every kind
    enabled    boolean NOT NULL DEFAULT true,
    created_at timestamptz NOT NULL DEFAULT now(),
    owner      name,            -- who added it: a private client's events reach its owner's only
    previous_secret bytea,      -- sealed; during a rotation deliveries are signed with both
    allow_insecure_http boolean NOT NULL DEFAULT false,
    failing_since timestamptz   -- the first failure since the last delivery it accepted
);

CREATE TABLE webhook_deliveries (
    id              bigserial PRIMARY KEY,
    webhook_id      uuid NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    event_id        bigint NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    auth_id         uuid,
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    delivered_at    timestamptz,
    last_status     integer,
    last_error      text
);

-- the head of each (webhook, auth) queue is what may be sent
CREATE INDEX webhook_deliveries_pending_idx ON webhook_deliveries (webhook_id, auth_id, id)
    WHERE delivered_at IS NULL;
-- what may be sent next: the heads, due (those behind a head wait at infinity)
CREATE INDEX webhook_deliveries_due_idx ON webhook_deliveries (next_attempt_at)
    WHERE delivered_at IS NULL;
CREATE INDEX webhook_deliveries_event_id_idx ON webhook_deliveries (event_id);
SELECT pg_catalog.pg_extension_config_dump('events', '');
SELECT pg_catalog.pg_extension_config_dump('events_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('webhooks', '');
SELECT pg_catalog.pg_extension_config_dump('webhook_deliveries', '');
SELECT pg_catalog.pg_extension_config_dump('webhook_deliveries_id_seq', '');

CREATE TABLE solutions (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    title       text NOT NULL CHECK (title <> '' AND length(title) <= 1024),
    description text NOT NULL DEFAULT '' CHECK (length(description) <= 65536),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- What an instance of a solution fills, addressed by its external id: an
-- auth of one client or service, or a config value.  External ids compare
-- byte for byte (COLLATE "C"), so they are case-sensitive whatever the
-- database's collation.  A static slot holds the one auth every instance
-- uses; it is never copied into the instances.
CREATE TABLE slots (
    solution_id    uuid NOT NULL REFERENCES solutions (id) ON DELETE CASCADE,
    external_id    text COLLATE "C" NOT NULL CHECK (external_id <> '' AND length(external_id) <= 255),
    kind           text NOT NULL CHECK (kind IN ('auth', 'config')),
    position       integer NOT NULL,
    client_id      uuid REFERENCES clients (id),
    service        text CHECK (service <> ''),
    scopes         text[],
    required       boolean NOT NULL DEFAULT false,
    force_unique   boolean NOT NULL DEFAULT false,
    static_auth_id uuid REFERENCES auths (id),
    default_value  jsonb CHECK (jsonb_typeof(default_value) <> 'null'),
    created_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (solution_id, external_id),
    CONSTRAINT slots_auth_takes_client_or_service
        CHECK (CASE WHEN kind = 'auth' THEN num_nonnulls(client_id, service) = 1
                    ELSE num_nonnulls(client_id, service) = 0 END),
    CONSTRAINT slots_auth_settings CHECK (kind = 'auth' OR (scopes IS NULL AND NOT force_unique
                                                         AND static_auth_id IS NULL)),
    CONSTRAINT slots_config_settings CHECK (kind = 'config' OR default_value IS NULL),
    CONSTRAINT slots_static_not_unique CHECK (static_auth_id IS NULL OR NOT force_unique)
);
CREATE INDEX slots_client_id_idx ON slots (client_id) WHERE client_id IS NOT NULL;
CREATE INDEX slots_static_auth_id_idx ON slots (static_auth_id) WHERE static_auth_id IS NOT NULL;

CREATE TABLE instances (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    solution_id uuid NOT NULL REFERENCES solutions (id),
    owner       uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name        text NOT NULL CHECK (name <> '' AND length(name) <= 1024),
    enabled     boolean NOT NULL DEFAULT false,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (id, solution_id)
);
CREATE INDEX instances_owner_idx ON instances (owner);
CREATE INDEX instances_solution_id_idx ON instances (solution_id);

-- The solution_id column lets the keys tie each value to a slot of its own
-- instance's solution.
CREATE TABLE instance_auth_values (
    instance_id uuid NOT NULL,
    solution_id uuid NOT NULL,
    external_id text COLLATE "C" NOT NULL,
    auth_id     uuid NOT NULL REFERENCES auths (id),
    PRIMARY KEY (instance_id, external_id),
    FOREIGN KEY (instance_id, solution_id) REFERENCES instances (id, solution_id) ON DELETE CASCADE,
    FOREIGN KEY (solution_id, external_id) REFERENCES slots (solution_id, external_id) ON DELETE CASCADE
);
CREATE INDEX instance_auth_values_auth_id_idx ON instance_auth_values (auth_id);
CREATE INDEX instance_auth_values_slot_idx ON instance_auth_values (solution_id, external_id);

CREATE TABLE instance_config_values (
    instance_id uuid NOT NULL,
    solution_id uuid NOT NULL,
    external_id text COLLATE "C" NOT NULL,
    value       jsonb NOT NULL CHECK (jsonb_typeof(value) <> 'null'),
    PRIMARY KEY (instance_id, external_id),
    FOREIGN KEY (instance_id, solution_id) REFERENCES instances (id, solution_id) ON DELETE CASCADE,
    FOREIGN KEY (solution_id, external_id) REFERENCES slots (solution_id, external_id) ON DELETE CASCADE
);
CREATE INDEX instance_config_values_slot_idx ON instance_config_values (solution_id, external_id);
SELECT pg_catalog.pg_extension_config_dump('solutions', '');
SELECT pg_catalog.pg_extension_config_dump('slots', '');
SELECT pg_catalog.pg_extension_config_dump('instances', '');
SELECT pg_catalog.pg_extension_config_dump('instance_auth_values', '');
SELECT pg_catalog.pg_extension_config_dump('instance_config_values', '');

-- {relatedId, key, value} tokens private to the role that wrote them.  The
-- role is held by its OID (regrole: a dump writes it as a name, and a
-- restore finds that name's OID), so a role renamed keeps its tokens and a
-- role dropped leaves them to no later role of the same name.  The value is
-- sealed with the owner's name (as it was then), related id and key as its
-- associated data, so a value copied onto another row does not open.
-- Related ids and keys may hold any character, dots included; they are only
-- compared.
CREATE TABLE private_tokens (
    owner      regrole NOT NULL,
    owner_name name NOT NULL,
    related_id text NOT NULL CHECK (related_id <> '' AND length(related_id) <= 1024),
    key        text NOT NULL CHECK (key <> '' AND length(key) <= 1024),
    value      bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (owner, related_id, key)
);

-- Tokens of an end user's account, shared with roles by user_token_grants.
CREATE TABLE user_tokens (
    user_id    uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    related_id text NOT NULL CHECK (related_id <> '' AND length(related_id) <= 1024),
    key        text NOT NULL CHECK (key <> '' AND length(key) <= 1024),
    value      bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, related_id, key)
);

-- A role may read, or read and write, a user's tokens: all of them (related
-- id NULL) or those of one related id.  Members of the role inherit it.
-- The grants are their own history: a revoke (or a new grant in its place,
-- or the user's deletion) marks a row, never deletes it, so that whoever
-- shared a user's tokens, an administrator with itself included, leaves a
-- trace; which is why the history outlives the user (no foreign key).
-- Only rows not revoked grant anything.
CREATE TABLE user_token_grants (
    user_id    uuid NOT NULL,
    grantee    regrole NOT NULL,
    privilege  text NOT NULL CHECK (privilege IN ('read', 'write')),
    related_id text CHECK (related_id <> ''),
    granted_by name NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz,
    revoked_by name,
    grantee_name name,           -- with the OID, who the grant is for; NULL: unknown (before 0.7.0, a role dropped)
    CHECK ((revoked_at IS NULL) = (revoked_by IS NULL))
);
-- one live grant per user, role and related id
CREATE UNIQUE INDEX user_token_grants_live_key ON user_token_grants (user_id, grantee, related_id) NULLS NOT DISTINCT
    WHERE revoked_at IS NULL;
SELECT pg_catalog.pg_extension_config_dump('private_tokens', '');
SELECT pg_catalog.pg_extension_config_dump('user_tokens', '');
SELECT pg_catalog.pg_extension_config_dump('user_token_grants', '');

-- Through the table, a role sees its own private tokens only (the policies
-- are in privileges.sql).
ALTER TABLE private_tokens ENABLE ROW LEVEL SECURITY;

-- The roles that may use tokenvault in this database (admissions.sql): the
-- roles it grants to are cluster-wide, and reach every database.
CREATE TABLE admissions (
    role        regrole PRIMARY KEY,
    level       text NOT NULL CHECK (level IN ('app', 'admin')),
    admitted_by name NOT NULL,
    admitted_at timestamptz NOT NULL DEFAULT now()
);
SELECT pg_catalog.pg_extension_config_dump('admissions', '');
-- the catalogue's rows that add_provider added (the others come with the extension)
SELECT pg_catalog.pg_extension_config_dump('providers', 'WHERE added_by IS NOT NULL');

-- What an application reads of the tables it may read is limited by the
-- policies in privileges.sql: nothing in a database that did not admit it,
-- nothing of a client private to another role.
ALTER TABLE users ENABLE ROW LEVEL SECURITY;
ALTER TABLE clients ENABLE ROW LEVEL SECURITY;
ALTER TABLE auths ENABLE ROW LEVEL SECURITY;
ALTER TABLE events ENABLE ROW LEVEL SECURITY;
ALTER TABLE webhooks ENABLE ROW LEVEL SECURITY;
ALTER TABLE webhook_deliveries ENABLE ROW LEVEL SECURITY;
ALTER TABLE solutions ENABLE ROW LEVEL SECURITY;
ALTER TABLE slots ENABLE ROW LEVEL SECURITY;
ALTER TABLE instances ENABLE ROW LEVEL SECURITY;
ALTER TABLE instance_auth_values ENABLE ROW LEVEL SECURITY;
ALTER TABLE instance_config_values ENABLE ROW LEVEL SECURITY;
ALTER TABLE user_token_grants ENABLE ROW LEVEL SECURITY;
