
/*
 * ngx_im: presence subscriptions (2005 SubUserOnlineStatus).  A session
 * watches up to NGX_HTTP_IM_MAX_WATCH users; the worker subscribes to a
 * watched user's presence channel while at least one of its sessions
 * watches it, and pushes each change (a 2005 frame) to those sessions.
 */


#ifndef _NGX_HTTP_IM_PRESENCE_H_INCLUDED_
#define _NGX_HTTP_IM_PRESENCE_H_INCLUDED_


#include "ngx_http_im_module.h"


/*
 * Starts (on) or stops s watching uid.  Returns NGX_OK when it changed,
 * NGX_DECLINED when it already was so, NGX_BUSY when s watches
 * NGX_HTTP_IM_MAX_WATCH users already, NGX_ERROR out of memory.  A
 * watch whose subscription Redis cannot take now is kept, and made when
 * the subscriber connection comes back.
 */
ngx_int_t ngx_http_im_presence_watch(ngx_http_im_session_t *s,
    ngx_str_t *uid, ngx_uint_t on);

/* 1 when s watches uid */
ngx_uint_t ngx_http_im_presence_watching(ngx_http_im_session_t *s,
    ngx_str_t *uid);

/* the session closes: its watches go */
void ngx_http_im_presence_session_gone(ngx_http_im_session_t *s);

/* {"userID":<uid>,"onlinePlatformIDs":[...]}: one subscriber's entry */
void ngx_http_im_presence_entry(ngx_http_im_buf_t *b, ngx_str_t *uid,
    ngx_int_t *platforms, ngx_uint_t n);

/* a 2005 answer read uid's platforms (so a later check pushes only a
 * real change) */
void ngx_http_im_presence_seen(ngx_str_t *uid, ngx_int_t *platforms,
    ngx_uint_t n);

/* what the store routes here */
void ngx_http_im_presence_delivery(ngx_str_t *uid, u_char *data,
    size_t len);
void ngx_http_im_presence_subscribed(ngx_str_t *uid, ngx_int_t ok);
void ngx_http_im_presence_resubscribe(void);


#endif /* _NGX_HTTP_IM_PRESENCE_H_INCLUDED_ */
