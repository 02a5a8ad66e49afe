/*
 * tokenvault.h: the version
 */
#ifndef TOKENVAULT_H
#define TOKENVAULT_H

/*
 * TOKENVAULT_VERSION, the extension's version as a string, comes from the
 * Makefile (-DTOKENVAULT_VERSION), which reads it from tokenvault.control's
 * default_version: the one place it is written.
 */
#ifndef TOKENVAULT_VERSION
#error "TOKENVAULT_VERSION is defined by the Makefile"
#endif

#endif
