
/*
 * ngx_im: web origins (RFC 6454), for CORS and the WebSocket Origin
 * check (docs/api.md, CORS).  An origin is compared in one canonical
 * form: scheme and host in lower case, the scheme's default port left
 * out.  Pure C: no nginx types.
 */


#ifndef _NGX_HTTP_IM_ORIGIN_H_INCLUDED_
#define _NGX_HTTP_IM_ORIGIN_H_INCLUDED_


#include <stddef.h>


/* longest origin accepted, in a header or in the configuration */
#define NGX_HTTP_IM_ORIGIN_MAX        512

/* the longest scheme and host name; a port has at most 5 digits */
#define NGX_HTTP_IM_ORIGIN_SCHEME_MAX 32
#define NGX_HTTP_IM_ORIGIN_HOST_MAX   253


/*
 * Writes the canonical form of the origin in[0..len) ("scheme://host" or
 * "scheme://host:port") to out, which holds NGX_HTTP_IM_ORIGIN_MAX
 * bytes (not NUL-terminated).  Returns its length, or -1 when in is not
 * a serialized origin: no path, query, user info, wildcard or other
 * byte a browser never sends, a port of 1..65535.  "null" (an opaque
 * origin) is not an origin here either.
 */
int ngx_http_im_origin_canon(const char *in, size_t len, char *out);


/*
 * Like ngx_http_im_origin_canon(), for the origin of a request itself:
 * the scheme it came by and its Host header ("host" or "host:port").
 */
int ngx_http_im_origin_of_host(const char *scheme, const char *host,
    size_t len, char *out);


#endif /* _NGX_HTTP_IM_ORIGIN_H_INCLUDED_ */
