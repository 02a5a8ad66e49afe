/*
 * hex.h: one hexadecimal digit's value (key files, percent-encoded text)
 */
#ifndef TV_HEX_H
#define TV_HEX_H

/* The digit's value, or -1 for a character that is none. */
static inline int
tv_hex_value(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

#endif
