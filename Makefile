# tokenvault: PGXS build.  `make test` and `make demo` install what they need first.
EXTENSION  = tokenvault
MODULE_big = tokenvault
OBJS       = src/tokenvault.o src/keyring.o src/crypto.o src/auth.o src/http.o src/oauth2.o src/refresh.o src/worker.o src/events.o src/tokens.o src/sqlfuncs.o
DATA       = tokenvault--0.1.0.sql tokenvault--0.1.0--0.2.0.sql tokenvault--0.2.0--0.3.0.sql tokenvault--0.3.0--0.4.0.sql tokenvault--0.4.0--0.5.0.sql
PGFILEDESC = "tokenvault - encrypted credential vault"

REGRESS      = setup users clients auths keys privileges solutions tokens
# --outputdir too: pg_regress looks for a test in <outputdir>/sql first, and
# sql/ holds the extension's SQL, whose file names are those of tests.
REGRESS_OPTS = --inputdir=test --outputdir=test --load-extension=tokenvault

PG_CONFIG ?= /usr/lib/postgresql/15/bin/pg_config
PG_CPPFLAGS = -Isrc
PG_CFLAGS   = -Wall -Wextra -Wno-unused-parameter -Wno-missing-field-initializers -Wno-sign-compare $(if $(WERROR),-Werror)
SHLIB_LINK  = -lcurl -lcrypto

# PGXS tracks no header dependencies here: a changed struct must rebuild its users.
$(OBJS): $(wildcard src/*.h)

PGXS := $(shell $(PG_CONFIG) --pgxs 2>/dev/null)
ifneq ($(PGXS),)
include $(PGXS)
endif

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
