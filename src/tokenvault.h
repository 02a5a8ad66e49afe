/*
 * tokenvault.h: settings and helpers shared by the modules of tokenvault
 */
#ifndef TOKENVAULT_H
#define TOKENVAULT_H


#define TOKENVAULT_VERSION "0.5.0"

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
