/*
 * ddl.h: the statements about databases and the extension the launcher must hear of
 */
#ifndef TV_DDL_H
#define TV_DDL_H

extern void tv_ddl_install(void);

#endif
