#!/usr/bin/env bash
# Installation refuses a schema another role could write into, and internal
# helpers resolve to the one function meant (issue 15, finding 1).
#
# The attack: a database owner (no superuser) creates the schema tokenvault
# before a superuser runs CREATE EXTENSION, then plants an overload such as
# tokenvault._require(text, text), which a polymorphic helper loses to, in
# the schema of the superuser-owned SECURITY DEFINER functions.
set -euo pipefail
cd "$(dirname "$0")/../.."
source test/cluster.sh
source test/lib.sh
cluster_start

q <<'SQL'
CREATE ROLE squatter LOGIN;
CREATE DATABASE squat OWNER squatter;
CREATE DATABASE open_schema;
CREATE DATABASE full_schema;
CREATE DATABASE planted;
SQL

# 1. a schema a database owner made beforehand
PGDATABASE=squat PGUSER=squatter q -c 'CREATE SCHEMA tokenvault'
is "$(PGDATABASE=squat sqlstate 'CREATE EXTENSION tokenvault')" 42501 \
	"CREATE EXTENSION refuses a schema tokenvault owned by another role"
is "$(q -d squat -c "SELECT count(*) FROM pg_extension WHERE extname = 'tokenvault'")" 0 \
	"and nothing is installed there"
# what the squatter would have done next, had the install gone through
is "$(PGDATABASE=squat PGUSER=squatter sqlstate \
	'CREATE FUNCTION tokenvault._require(value text, what text) RETURNS text LANGUAGE sql AS $$ SELECT value $$')" ok \
	"(the squatter can still write its own schema, which the vault never uses)"

# 2. a superuser's schema where PUBLIC may create objects
q -d open_schema -c 'CREATE SCHEMA tokenvault; GRANT CREATE ON SCHEMA tokenvault TO PUBLIC'
is "$(PGDATABASE=open_schema sqlstate 'CREATE EXTENSION tokenvault')" 42501 \
	"CREATE EXTENSION refuses a schema where other roles may create objects"

# 3. a superuser's schema that already holds something
q -d full_schema -c 'CREATE SCHEMA tokenvault; CREATE FUNCTION tokenvault.f() RETURNS int LANGUAGE sql AS $$ SELECT 1 $$'
is "$(PGDATABASE=full_schema sqlstate 'CREATE EXTENSION tokenvault')" 42P06 \
	"CREATE EXTENSION refuses a schema that already holds objects"

# 4. an empty schema of the installing superuser (what pg_dump writes) is fine
q -d postgres -c 'CREATE SCHEMA tokenvault'
is "$(sqlstate 'CREATE EXTENSION tokenvault')" ok "an empty schema of the installing superuser is used"
is "$(q -c "SELECT count(*) FROM pg_namespace n, aclexplode(n.nspacl) a
            WHERE n.nspname = 'tokenvault' AND a.privilege_type = 'CREATE' AND a.grantee <> n.nspowner")" 0 \
	"and no one else may create objects in it"

# 5. overloads planted where only a superuser still could: the functions
# never call them.  Each records its call, and would make the caller a
# superuser as the squatter's did.
q -d planted >/dev/null <<'SQL'
CREATE EXTENSION tokenvault;
CREATE TABLE public.planted_calls (fn text);
GRANT INSERT ON public.planted_calls TO PUBLIC;
CREATE ROLE planted_app LOGIN IN ROLE tokenvault_app;
CREATE ROLE planted_admin LOGIN IN ROLE tokenvault_admin;
SELECT tokenvault.admit('planted_app', 'app'), tokenvault.admit('planted_admin', 'admin');
CREATE FUNCTION tokenvault._require(value text, what text) RETURNS text LANGUAGE sql
    AS $$ INSERT INTO public.planted_calls VALUES ('_require(text, text)'); SELECT value $$;
CREATE FUNCTION tokenvault._require(value uuid, what text) RETURNS uuid LANGUAGE sql
    AS $$ INSERT INTO public.planted_calls VALUES ('_require(uuid, text)'); SELECT value $$;
CREATE FUNCTION tokenvault._refuse_null(missing boolean, what varchar) RETURNS void LANGUAGE sql
    AS $$ INSERT INTO public.planted_calls VALUES ('_refuse_null(boolean, varchar)') $$;
CREATE FUNCTION tokenvault._refuse_null(missing text, what text) RETURNS void LANGUAGE sql
    AS $$ INSERT INTO public.planted_calls VALUES ('_refuse_null(text, text)') $$;
CREATE FUNCTION tokenvault._user_must_exist(user_id text) RETURNS void LANGUAGE sql
    AS $$ INSERT INTO public.planted_calls VALUES ('_user_must_exist(text)') $$;
SQL
PGDATABASE=planted PGUSER=planted_admin q >/dev/null <<'SQL'
SELECT tokenvault.create_client('API', 'api', 'api_key') AS c \gset
SELECT tokenvault.update_client(:'c', '{"api_key_header": "X-Key"}');
SQL
PGDATABASE=planted PGUSER=planted_app q >/dev/null <<'SQL'
SELECT tokenvault.create_user('planted-1', 'Ann') AS u \gset
SELECT tokenvault.find_user('planted-1');
SELECT id AS c FROM tokenvault.clients \gset
SELECT tokenvault.create_auth(:'u', :'c', NULL, jsonb_build_object('api_key', 'TVSECRET-pl-' || md5(random()::text))) AS a \gset
SELECT tokenvault.user_auths(:'u');
SELECT length(tokenvault.access_token(:'a')) > 0;
SELECT tokenvault.put_private_token('r', 'k', 'TVSECRET-pp-' || md5(random()::text));
SELECT tokenvault.delete_auth(:'a');
SELECT tokenvault.delete_user(:'u');
SQL
is "$(q -d planted -c 'SELECT coalesce(string_agg(fn, $$, $$), $$none$$) FROM public.planted_calls')" none \
	"no planted overload is ever called by the vault's functions"
is "$(q -d planted -c "SELECT rolsuper FROM pg_roles WHERE rolname = 'planted_app'")" f \
	"and the application did not become a superuser"

done_testing
