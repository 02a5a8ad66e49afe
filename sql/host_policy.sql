-- Where outbound requests may connect (src/host_policy.c).  Every address a
-- token, revoke or webhook request is about to connect to is judged: a
-- public one passes; a loopback, private, link-local, unspecified or other
-- special one only when tokenvault.allowed_internal_hosts names the URL's
-- host or a network holding the address.

-- The kind of an address: public, loopback, private, link-local,
-- unspecified, shared address space, or multicast or reserved.
CREATE FUNCTION address_class(address inet) RETURNS text
    LANGUAGE c IMMUTABLE STRICT AS 'MODULE_PATHNAME', 'tv_address_class_sql';

-- What the connect-time check decides for a request to host that would
-- connect to address, without connecting: NULL if it may, else why not.
CREATE FUNCTION host_policy(host text, address inet) RETURNS text
    LANGUAGE c STABLE STRICT AS 'MODULE_PATHNAME', 'tv_host_policy_sql';
