-- The two roles tokenvault grants to, created once per cluster

-- Roles are cluster-wide and outlive the extension; create them only once.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'tokenvault_app') THEN
        CREATE ROLE tokenvault_app NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'tokenvault_admin') THEN
        CREATE ROLE tokenvault_admin NOLOGIN;
    END IF;
    IF NOT pg_has_role('tokenvault_admin', 'tokenvault_app', 'MEMBER') THEN
        GRANT tokenvault_app TO tokenvault_admin;
    END IF;
END
$$;
