
/*
 * ngx_im: what session.c calls of group.c (this worker's groups, by the
 * members it holds), and what it gives group.c to call back.
 */


#ifndef _NGX_HTTP_IM_GROUP_H_INCLUDED_
#define _NGX_HTTP_IM_GROUP_H_INCLUDED_


#include "ngx_http_im_store.h"


/* what group.c calls of session.c's, registered once per worker */
typedef struct {
    /* a group message for a member's sessions (f: zeroed, then kept
     * for the message's other members) */
    void                 (*push)(ngx_http_im_user_t *u,
                                 ngx_http_im_delivery_t *d,
                                 ngx_http_im_frames_t *f);
    /* every group of u is subscribed (or given up on) */
    void                 (*ready)(ngx_http_im_user_t *u);
    ngx_http_im_user_t  *(*find)(ngx_str_t *uid);
} ngx_http_im_group_users_t;

extern ngx_http_im_group_users_t  ngx_http_im_session_users;

/* group.c */
void ngx_http_im_group_init(ngx_http_im_group_users_t *users);
void ngx_http_im_group_load(ngx_http_im_user_t *u);
void ngx_http_im_group_user_gone(ngx_http_im_user_t *u);
void ngx_http_im_group_user_line(ngx_http_im_user_t *u, ngx_str_t *line);
void ngx_http_im_group_delivery(ngx_str_t *gid, u_char *data, size_t len);
void ngx_http_im_group_subscribed(ngx_str_t *gid, ngx_int_t ok);
void ngx_http_im_group_resubscribe(void);

/* push.c: a group message's jobs, for its offline members, later */
void ngx_http_im_push_group(ngx_http_im_store_job_t *job, ngx_str_t *gid);


#endif /* _NGX_HTTP_IM_GROUP_H_INCLUDED_ */
