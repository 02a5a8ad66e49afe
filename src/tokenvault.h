/*
 * tokenvault.h: the version
 */
#ifndef TOKENVAULT_H
#define TOKENVAULT_H

#define TOKENVAULT_VERSION "0.5.0"

#endif
