/*
 * tokenvault.h: settings shared by the modules of tokenvault
 */
#ifndef TOKENVAULT_H
#define TOKENVAULT_H

#define TOKENVAULT_VERSION "0.1.0"

/* GUCs, defined in tokenvault.c */
extern char *tv_key_file;
extern char *tv_key_command;
extern int	tv_min_validity;	/* seconds */

#endif
