# tokenvault: PGXS build.  `make test` and `make demo` install what they need first.
EXTENSION  = tokenvault
MODULE_big = tokenvault
OBJS       = src/tokenvault.o src/access.o src/settings.o src/keyfile.o src/keyring.o src/crypto.o src/envelope.o \
             src/jsonb_member.o src/spi.o src/probe.o src/verdict.o src/auth.o src/tokens.o \
             src/host_policy.o src/http.o src/http_multi.o src/redact.o src/url_template.o src/oauth2.o src/oauth2_response.o \
             src/durable.o src/flight.o src/engine.o src/refresher.o src/autonomous.o src/answers.o src/webhooks.o src/worker.o \
             src/launcher.o src/ddl.o src/catalogue.o src/checks.o
PGFILEDESC = "tokenvault - encrypted credential vault"

# The version is written once, in tokenvault.control.
EXTVERSION := $(shell sed -n "s/^default_version = '\(.*\)'/\1/p" tokenvault.control)

# The install script of the current version is built from sql/, a file per
# concern, in this order (what depends on something comes after it).
SQL_SOURCES = $(addprefix sql/,$(addsuffix .sql,schema roles tables types common admissions crypto users clients auths \
              host_policy oauth2 refresh events webhooks worker solution_rules solutions tokens keys providers checks catalogue privileges))
DATA_built  = sql/$(EXTENSION)--$(EXTVERSION).sql
# Earlier releases install from their frozen scripts, and update through the
# deltas sql/tokenvault--OLD--NEW.sql (see README, "Shipping a change").
DATA        = $(filter-out sql/releases/$(EXTENSION)--$(EXTVERSION).sql,$(wildcard sql/releases/$(EXTENSION)--*.sql)) \
              $(wildcard sql/$(EXTENSION)--*--*.sql)

REGRESS      = setup users clients auths keys privileges solutions tokens
# --outputdir too: pg_regress looks for a test in <outputdir>/sql first, and
# sql/ holds the extension's SQL, whose file names are those of tests.
REGRESS_OPTS = --inputdir=test --outputdir=test --load-extension=tokenvault

PG_CONFIG ?= /usr/lib/postgresql/15/bin/pg_config
PG_CPPFLAGS = -Isrc -DTOKENVAULT_VERSION='"$(EXTVERSION)"'
PG_CFLAGS   = -Wall -Wextra -Wno-unused-parameter -Wno-missing-field-initializers -Wno-sign-compare $(if $(WERROR),-Werror)
SHLIB_LINK  = -lcurl -lcrypto

PGXS := $(shell $(PG_CONFIG) --pgxs 2>/dev/null)
ifneq ($(PGXS),)
include $(PGXS)
endif

# PGXS tracks no header dependencies here: a changed struct must rebuild its
# users, and a new version (compiled in: the User-Agent) every object.
$(OBJS): $(wildcard src/*.h) tokenvault.control

sql/$(EXTENSION)--$(EXTVERSION).sql: $(SQL_SOURCES) tokenvault.control
	{ printf '%s\n\n' '-- tokenvault $(EXTVERSION), built by make from the files of sql/: edit those, not this.' \
	    '\echo Use "CREATE EXTENSION tokenvault" to load this file. \quit'; \
	  for f in $(SQL_SOURCES); do cat $$f; echo; done; } >$@

# Installing into PostgreSQL's directories needs root; use sudo when we are not.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: deps build test demo bench
deps:
	test/install-deps.sh

build: deps
	$(MAKE) WERROR=1 all
	$(SUDO) $(MAKE) install

test: build
	test/run-tests.sh

demo: build
	test/demo.sh

bench: build
	bench/run.sh
