-- tokenvault 0.6.0 -> 0.6.1: the auth status 'refreshing', which nothing ever set, is no longer allowed

\echo Use "ALTER EXTENSION tokenvault UPDATE TO '0.6.1'" to load this file. \quit

ALTER TABLE auths
    DROP CONSTRAINT auths_status_check,
    ADD CONSTRAINT auths_status_check CHECK (status IN ('active', 'needs_reauth', 'expired', 'revoked', 'error'));
