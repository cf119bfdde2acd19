
/*
 * ngx_im: the limits of every layer that other limits depend on, in one
 * place (docs/directives.md, docs/security.md), so that they can be
 * checked against each other: t/unit/test_limits.c asserts the relations
 * (a legal message fits a frame, the largest legal answer fits the send
 * queue, list bounds agree across layers).  Pure C: no nginx types.
 */


#ifndef _NGX_HTTP_IM_LIMITS_H_INCLUDED_
#define _NGX_HTTP_IM_LIMITS_H_INCLUDED_


/* directive defaults */
#define NGX_HTTP_IM_WS_MAX_FRAME      (64 * 1024)
#define NGX_HTTP_IM_WS_MAX_MESSAGE    (64 * 1024)
#define NGX_HTTP_IM_WS_SEND_QUEUE     (4 * 1024 * 1024)
#define NGX_HTTP_IM_WS_MAX_INFLIGHT   64
#define NGX_HTTP_IM_MAX_CONTENT       (16 * 1024)
#define NGX_HTTP_IM_API_MAX_BODY      (1024 * 1024)
#define NGX_HTTP_IM_PULL_MAX          100
#define NGX_HTTP_IM_WS_RATE           100
#define NGX_HTTP_IM_WS_BURST          200
#define NGX_HTTP_IM_API_RATE          50
#define NGX_HTTP_IM_API_BURST         100

/* directive bounds */
#define NGX_HTTP_IM_MAX_CONVS         10000   /* im_max_conversations */
#define NGX_HTTP_IM_PULL_MAX_BOUND    1000    /* im_pull_max */

/* all strings of a message beyond im_max_content */
#define NGX_HTTP_IM_MSG_EXTRA         (16 * 1024)

/* IDs (users, conversations, seqs, recipients) in one list of a call */
#define NGX_HTTP_IM_MAX_LIST          1000

/* messages and bytes of one pull answer (and half the send queue) */
#define NGX_HTTP_IM_MAX_SEQS          1000
#define NGX_HTTP_IM_PULL_BUDGET       (512 * 1024)

/* messages and bytes of one send.lua call (its MAX; store_batch.c) */
#define NGX_HTTP_IM_SEND_BATCH        64
#define NGX_HTTP_IM_SEND_BATCH_BYTES  (256 * 1024)

/* members of a group; groups a user's lists name (conv.lua MAXGROUPS) */
#define NGX_HTTP_IM_GROUP_MAX_MEMBERS 100000
#define NGX_HTTP_IM_USER_MAX_GROUPS   2000

/* a user's friends (and, apart, its blacklist), and friend applications
 * it keeps received (friend.lua) */
#define NGX_HTTP_IM_MAX_FRIENDS       10000
#define NGX_HTTP_IM_MAX_FRIEND_APPS   1000

/* users one WebSocket session may watch (2005 SubUserOnlineStatus) */
#define NGX_HTTP_IM_MAX_WATCH         1000

/* conversation records of one answer (conv.lua's BUDGET) */
#define NGX_HTTP_IM_CONV_BUDGET       (4 * 1024 * 1024)


#endif /* _NGX_HTTP_IM_LIMITS_H_INCLUDED_ */
