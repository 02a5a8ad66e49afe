-- What C and SQL pass each other: typed rows, not JSON (src/verdict.h, src/engine.c, src/webhooks.c)

-- What became of a token request or a refresh.  src/verdict.h lists the
-- same labels in the same order.
CREATE TYPE outcome AS ENUM ('done', 'needs_reauth', 'retryable', 'error');

-- A token request's verdict, as oauth2.c judges the provider's answer.
CREATE TYPE verdict AS (
    outcome     outcome,
    status      integer,    -- HTTP status, 0 when none came
    error       text,       -- the provider's OAuth2 error code
    message     text,       -- what went wrong, never a secret
    retry_after integer,    -- seconds, from Retry-After
    token       jsonb       -- the provider's token object, when done
);

-- A refresh's request, or (outcome set) why none is needed.
CREATE TYPE refresh_plan AS (
    outcome outcome,        -- NULL: send the request
    message text,
    kind    text,           -- 'refresh' or 'token': which URL and extra parameters
    version bigint,         -- the auth's, for _refresh_apply
    config  jsonb,          -- the client's settings, for oauth2.c
    params  jsonb,          -- the grant's parameters
    keep    jsonb           -- what of the credential a new token leaves in place
);

-- A webhook delivery to send, signed with the webhook's secret.
CREATE TYPE delivery AS (
    id     bigint,
    url    text,
    event  text,
    body   text,
    secret text,
    previous_secret text,         -- during a rotation; NULL otherwise
    allow_insecure_http boolean
);

-- A health check's request (checks.sql): the auth's verify URL and headers.
-- Holds a credential: internal only.
CREATE TYPE check_request AS (
    auth_id  uuid,
    url      text,
    method   text,
    headers  text[],        -- "Name: value" lines
    ok_field text,          -- a boolean field of a 2xx answer that must be true, or NULL
    allow_insecure_http boolean
);

-- What a health check found: ok, refused (the credential is no longer
-- good: 401, 403, or the ok field false) or failed (no verdict: a network
-- failure, a 5xx, anything else).  The message quotes no answer.
CREATE TYPE check_verdict AS (
    outcome text,
    status  integer,        -- HTTP status, 0 when none came
    message text
);
