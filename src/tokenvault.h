/*
 * tokenvault.h: settings and helpers shared by the modules of tokenvault
 */
#ifndef TOKENVAULT_H
#define TOKENVAULT_H


/*
 * TOKENVAULT_VERSION, the extension's version as a string, comes from the
 * Makefile (-DTOKENVAULT_VERSION), which reads it from tokenvault.control's
 * default_version: the one place it is written.
 */

/* GUCs, defined in tokenvault.c */
extern char *tv_key_file;
extern char *tv_key_command;
extern int	tv_min_validity;	/* seconds */
extern bool tv_allow_insecure_http;
extern char *tv_ca_file;
extern int	tv_http_timeout;	/* seconds */
extern int	tv_max_response_size;	/* kB */
extern char *tv_database;
extern int	tv_refresh_lead;	/* seconds */
extern int	tv_expiry_notice;	/* seconds */
extern int	tv_max_concurrent_refreshes;
extern int	tv_event_retention; /* seconds */

#endif
