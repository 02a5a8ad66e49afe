/*
 * settings.h: tokenvault's settings (GUCs), but for the key ring's own
 */
#ifndef TV_SETTINGS_H
#define TV_SETTINGS_H

extern int	tv_min_validity;	/* seconds */
extern char *tv_ca_file;
extern int	tv_http_timeout;	/* seconds */
extern int	tv_max_response_size;	/* kB */
extern char *tv_database;	/* empty: every database */
extern int	tv_max_databases;
extern int	tv_refresh_lead;	/* seconds */
extern int	tv_expiry_notice;	/* seconds */
extern int	tv_max_concurrent_refreshes;
extern int	tv_event_retention; /* seconds */
extern int	tv_min_refresh_interval;	/* seconds */
extern int	tv_max_refreshes_per_role;
extern int	tv_max_refreshes_per_database;
extern int	tv_synchronous_commit;	/* a SYNCHRONOUS_COMMIT_* level */

extern void tv_settings_define(void);
extern void tv_reload_if_asked(void);

#endif
