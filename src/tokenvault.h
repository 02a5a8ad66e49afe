/*
 * tokenvault.h: settings shared by the modules of tokenvault
 */
#ifndef TOKENVAULT_H
#define TOKENVAULT_H

#define TOKENVAULT_VERSION "0.2.0"

/* GUCs, defined in tokenvault.c */
extern char *tv_key_file;
extern char *tv_key_command;
extern int	tv_min_validity;	/* seconds */
extern bool tv_allow_insecure_http;
extern char *tv_ca_file;
extern int	tv_http_timeout;	/* seconds */
extern int	tv_max_response_size;	/* kB */

#endif
