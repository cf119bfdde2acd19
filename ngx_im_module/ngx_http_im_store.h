
/*
 * ngx_im: the store layer.  It owns every Redis key name, every script
 * call with its KEYS/ARGV order, every channel name and every reply's
 * parsing.  The layers above call typed functions and get typed results
 * through callbacks; none of them sees a redisReply or a key.
 *
 * Every function that takes a callback returns NGX_OK when the operation
 * was queued: the callback then runs exactly once, with err 0 or an error
 * code (90004 when Redis failed, disconnected or timed out).  Any other
 * return (NGX_DECLINED: Redis down or at its pending bound) means the
 * callback will not run; the caller answers 90004.  Strings and arrays
 * in a result live only while the callback runs.
 */


#ifndef _NGX_HTTP_IM_STORE_H_INCLUDED_
#define _NGX_HTTP_IM_STORE_H_INCLUDED_


#include "ngx_http_im_module.h"


typedef void (*ngx_http_im_store_done_pt)(void *data, ngx_int_t err);


#define NGX_HTTP_IM_STORE_DROPPED  -1


/* ----------------------------------------------------------------------
 * Life cycle and routing
 */

/*
 * What the store calls upward: the session layer registers it once per
 * worker, before ngx_http_im_store_init().
 */
typedef struct {
    /* a delivery for a user with sessions here (see below) */
    void  (*delivery)(ngx_str_t *uid, u_char *data, size_t len);
    /* the subscription of a user's deliveries answered: 1 subscribed,
     * 0 unsubscribed, NGX_HTTP_IM_STORE_DROPPED dropped or refused by
     * Redis (its slot moved: subscribe again) */
    void  (*subscribed)(ngx_str_t *uid, ngx_int_t ok);
    /* the routing connection came (back): subscribe every user again */
    void  (*resubscribe)(void);
    /* a message or control line on a group's channel */
    void  (*group_delivery)(ngx_str_t *gid, u_char *data, size_t len);
    /* the (un)subscription of a group's channel answered, as above */
    void  (*group_subscribed)(ngx_str_t *gid, ngx_int_t ok);
    /* a watched user's platforms changed: data holds the online
     * platform IDs, space-separated ("": offline) */
    void  (*presence)(ngx_str_t *uid, u_char *data, size_t len);
    /* the (un)subscription of a user's presence answered, as above */
    void  (*presence_subscribed)(ngx_str_t *uid, ngx_int_t ok);
} ngx_http_im_store_routes_t;

ngx_int_t ngx_http_im_store_init(ngx_cycle_t *cycle,
    ngx_http_im_store_routes_t *routes);

/* session.c's */
extern ngx_http_im_store_routes_t  ngx_http_im_session_routes;
void ngx_http_im_store_exit(void);

/* 1 while commands can be sent; 1 while subscriptions can be made */
ngx_int_t ngx_http_im_store_ready(void);
ngx_int_t ngx_http_im_store_routing_ready(void);

/* (un)subscribes this worker to a user's deliveries */
ngx_int_t ngx_http_im_store_subscribe(ngx_str_t *uid);
ngx_int_t ngx_http_im_store_unsubscribe(ngx_str_t *uid);

/* (un)subscribes this worker to a user's presence changes (WS 2005) */
ngx_int_t ngx_http_im_store_watch(ngx_str_t *uid, ngx_uint_t on);

/* tells every host's sessions of uid to start (on) or stop watching the
 * users ids (at most NGX_HTTP_IM_MAX_LIST): a watch delivery */
ngx_int_t ngx_http_im_store_watch_line(ngx_str_t *uid, ngx_uint_t on,
    ngx_str_t *ids, ngx_uint_t n, ngx_http_im_store_done_pt done,
    void *data);

/* this worker is alive (every 10 s), or gone (its presence with it) */
void ngx_http_im_store_worker_alive(void);
void ngx_http_im_store_worker_gone(void);


/*
 * A delivery, as the session layer reads it: a message of conversation
 * conv (json, its MsgData) sent by session sid of worker "self" (1: this
 * worker), or a kick of a platform (0: every platform).
 */
#define NGX_HTTP_IM_DELIVERY_MSG   1
#define NGX_HTTP_IM_DELIVERY_KICK  2
#define NGX_HTTP_IM_DELIVERY_GROUP 3     /* "g <arg>": json is <arg> */
#define NGX_HTTP_IM_DELIVERY_LOGIN 4     /* seats taken: json is the list,
                                          * see ngx_http_im_store_seat() */
#define NGX_HTTP_IM_DELIVERY_WATCH 5     /* "w <+|-><uid> <uid>...":
                                          * json is from the sign on */

typedef struct {
    ngx_uint_t                 kind;
    ngx_uint_t                 self;
    uint64_t                   sid;
    ngx_int_t                  platform;
    ngx_str_t                  conv;
    ngx_str_t                  json;
} ngx_http_im_delivery_t;

/* parses what routes->delivery got; NGX_ERROR when it is malformed */
ngx_int_t ngx_http_im_store_delivery_parse(u_char *data, size_t len,
    ngx_http_im_delivery_t *d);


/* one entry of a login's delivery: a session and what happens to it */
#define NGX_HTTP_IM_SEAT_NEW       'n'   /* the login: it goes live */
#define NGX_HTTP_IM_SEAT_KICKED    'k'   /* lost its seat; token kicked */
#define NGX_HTTP_IM_SEAT_REPLACED  'r'   /* lost it to its own token */

typedef struct {
    ngx_uint_t                 what;
    ngx_uint_t                 self;      /* a session of this worker */
    uint64_t                   sid;
} ngx_http_im_seat_t;

/*
 * Takes the next entry off a login delivery's list (d->json), advancing
 * it: NGX_OK, or NGX_DONE at its end, NGX_ERROR when it is malformed.
 */
ngx_int_t ngx_http_im_store_seat(ngx_str_t *list, ngx_http_im_seat_t *seat);


/* ----------------------------------------------------------------------
 * Tokens and users
 */

/* records a token issued to uid: err 0, or 1101 when registered is set
 * and uid is not a registered user */
ngx_int_t ngx_http_im_store_token_save(ngx_str_t *uid, ngx_str_t *token,
    ngx_int_t platform, time_t now, time_t expire, ngx_uint_t registered,
    ngx_http_im_store_done_pt done, void *data);

/* a verified token is still in the registry (not kicked: else 1506 or
 * 1507), and with check_user its user is registered (1101) */
ngx_int_t ngx_http_im_store_token_check(ngx_str_t *uid, ngx_str_t *token,
    ngx_uint_t check_user, ngx_http_im_store_done_pt done, void *data);

/* marks a platform's tokens kicked, then tells every host's sessions */
ngx_int_t ngx_http_im_store_token_kick(ngx_str_t *uid, ngx_int_t platform,
    ngx_http_im_store_done_pt done, void *data);


/*
 * A login under a multi-login policy, in one step: the token is checked
 * as ngx_http_im_store_token_check() does (err 1507, 1506, 1101), the
 * session is recorded in its user's presence, and the sessions whose
 * seat it takes (seats: a letter per platform 1..11, as
 * ngx_http_im_login_seats() makes them) are removed there, their tokens
 * marked kicked.  On err 0 a login delivery follows on the user's
 * channel, for every host: the new session goes live when it arrives
 * and the others close.
 */
ngx_int_t ngx_http_im_store_login(ngx_str_t *uid, ngx_str_t *token,
    ngx_int_t platform, uint64_t sid, u_char *seats, size_t nseats,
    ngx_http_im_store_done_pt done, void *data);


typedef struct {
    ngx_str_t                  user_id;
    ngx_str_t                  nickname;
    ngx_str_t                  face_url;
    ngx_str_t                  ex;
    long long                  create_time;
    ngx_uint_t                 found;        /* in results */
    ngx_uint_t                 load;         /* not in this Redis yet */
} ngx_http_im_store_user_t;

typedef void (*ngx_http_im_store_users_pt)(void *data, ngx_int_t err,
    ngx_http_im_store_user_t *users, ngx_uint_t n);

/* registers users (distinct IDs): err 0, or 1102 when one exists */
ngx_int_t ngx_http_im_store_users_register(ngx_http_im_store_user_t *users,
    ngx_uint_t n, long long now_ms, ngx_http_im_store_done_pt done,
    void *data);

/* the profiles of users, in order; unknown ones have found 0 */
ngx_int_t ngx_http_im_store_users_info(ngx_str_t *uids, ngx_uint_t n,
    ngx_http_im_store_users_pt done, void *data);


typedef struct {
    ngx_str_t                  user_id;
    ngx_int_t                 *platforms;
    ngx_uint_t                 nplatforms;
} ngx_http_im_store_online_t;

typedef void (*ngx_http_im_store_online_pt)(void *data, ngx_int_t err,
    ngx_http_im_store_online_t *users, ngx_uint_t n);

/* the platforms each user is online on, in order */
ngx_int_t ngx_http_im_store_users_online(ngx_str_t *uids, ngx_uint_t n,
    ngx_http_im_store_online_pt done, void *data);

typedef struct {
    ngx_int_t                  platform;
    ngx_str_t                  token;      /* "" if not recorded */
} ngx_http_im_store_device_t;

typedef struct {
    ngx_str_t                  user_id;
    ngx_http_im_store_device_t  *devices;
    ngx_uint_t                 ndevices;
} ngx_http_im_store_devices_t;

typedef void (*ngx_http_im_store_devices_pt)(void *data, ngx_int_t err,
    ngx_http_im_store_devices_t *users, ngx_uint_t n);

/* each user's online sessions (platform and token), in order */
ngx_int_t ngx_http_im_store_users_devices(ngx_str_t *uids, ngx_uint_t n,
    ngx_http_im_store_devices_pt done, void *data);

/* the device token of a push gateway for uid on a platform */
ngx_int_t ngx_http_im_store_push_token(ngx_str_t *uid, ngx_int_t platform,
    ngx_str_t *token, ngx_http_im_store_done_pt done, void *data);

/* records (on) or removes a session in its user's presence, with the
 * token it logged in with; background marks an app in the background
 * (its user may get offline pushes) */
ngx_int_t ngx_http_im_store_presence(ngx_str_t *uid, ngx_int_t platform,
    uint64_t sid, ngx_str_t *token, ngx_uint_t on, ngx_uint_t background,
    ngx_http_im_store_done_pt done, void *data);


/* ----------------------------------------------------------------------
 * Messages
 */

/* a message to store: its MsgData JSON has "seq":0, the 0 at seq_at */
typedef struct {
    ngx_str_t                  conv;
    ngx_str_t                  send_id;
    ngx_str_t                  recv_id;
    ngx_str_t                  client_msg_id;
    ngx_str_t                  server_msg_id;
    ngx_str_t                  json;
    size_t                     seq_at;
    long long                  send_time;
    uint64_t                   sid;          /* sending session, or 0 */
    ngx_uint_t                 force;        /* past the reservation */
    ngx_str_t                  group;        /* sg_: the group's ID */
    ngx_uint_t                 system;       /* a notification: no member */
    ngx_uint_t                 at_all;       /* @all */
    ngx_str_t                 *at;           /* the users @ (<= 1000) */
    ngx_uint_t                 nat;
    ngx_uint_t                 rules;        /* 1 the recipient's */
                                             /* blacklist, 2 and friends */
    ngx_uint_t                 load_recv;    /* its relations from MongoDB */
                                             /* first, if not loaded */
} ngx_http_im_store_msg_t;

#define NGX_HTTP_IM_STORE_SENT     1     /* stored now, with seq */
#define NGX_HTTP_IM_STORE_RESENT   2     /* known clientMsgID: the first */
#define NGX_HTTP_IM_STORE_RESEED   3     /* seed the seq from MongoDB */
#define NGX_HTTP_IM_STORE_RESERVE  4     /* reserve seqs past seq first */
#define NGX_HTTP_IM_STORE_LOAD     5     /* load the group from MongoDB */
#define NGX_HTTP_IM_STORE_LOAD_USER  6   /* ... the recipient's relations */

typedef struct {
    ngx_int_t                  err;
    ngx_uint_t                 status;
    long long                  seq;
    long long                  send_time;    /* RESENT */
    ngx_str_t                  server_msg_id;  /* RESENT */
    ngx_int_t                  online;       /* SENT: 0 when offline */
} ngx_http_im_store_sent_t;

typedef void (*ngx_http_im_store_sent_pt)(void *data,
    ngx_http_im_store_sent_t *r);

/*
 * Stores a message: dedup by clientMsgID, the next seq, the hot window,
 * both users' conversation indexes, the persistence queue, then the
 * deliveries to both users.  err 1101 when the recipient is not
 * registered, 1302 when it blacklisted the sender, 1303 when m->rules
 * asks for friendship and it has none, 90004 when the persistence
 * backlog is full.  A group
 * message (m->group set) is published once on the group's channel; err
 * 1201, 1203, 1204, 1402 or 1403 when the group refuses the sender.
 */
ngx_int_t ngx_http_im_store_msg_save(ngx_http_im_store_msg_t *m,
    ngx_http_im_store_sent_pt done, void *data);

/* moves a conversation's seq and reservation forward: seq < 0 leaves
 * the seq as it is; seqs above stored (the highest message MongoDB has)
 * up to seq hold no message, which unread counts leave out */
ngx_int_t ngx_http_im_store_seq_seed(ngx_str_t *conv, long long seq,
    long long reserved, long long stored, ngx_http_im_store_done_pt done,
    void *data);

typedef void (*ngx_http_im_store_count_pt)(void *data, ngx_int_t err,
    ngx_int_t n);

/* a message that is not stored: to the recipient's sessions only; n is
 * the number of workers it reached, err 1101 for an unknown recipient */
ngx_int_t ngx_http_im_store_msg_online(ngx_http_im_store_msg_t *m,
    ngx_http_im_store_count_pt done, void *data);


/* an offline-push job (fields in docs/api.md) */
typedef struct {
    ngx_str_t                  recv_id;
    ngx_str_t                  send_id;
    ngx_str_t                  conv;
    long long                  seq;
    ngx_str_t                  server_msg_id;
    long long                  content_type;
    long long                  session_type;
    ngx_str_t                  push_class;
    ngx_str_t                  title;
    ngx_str_t                  desc;
    ngx_str_t                  ex;
} ngx_http_im_store_job_t;

ngx_int_t ngx_http_im_store_push_job(ngx_http_im_store_job_t *job);


/* a message of a pull */
#define NGX_HTTP_IM_ITEM_FOUND     0
#define NGX_HTTP_IM_ITEM_MISSING   1     /* not in Redis: ask MongoDB */
#define NGX_HTTP_IM_ITEM_SKIPPED   2     /* left out for the budget */

typedef struct {
    ngx_uint_t                 state;
    ngx_str_t                  json;
} ngx_http_im_store_item_t;

typedef struct {
    ngx_int_t                  err;
    long long                  max;          /* the conversation's seq */
    ngx_uint_t                 is_end;       /* ranges: begin reached */
    long long                  first;        /* ranges: first item's seq */
    ngx_http_im_store_item_t  *items;
    ngx_uint_t                 n;
} ngx_http_im_store_msgs_t;

typedef void (*ngx_http_im_store_msgs_pt)(void *data,
    ngx_http_im_store_msgs_t *r);

/* the newest num messages with seq in [begin, end], at most budget bytes
 * (the newest always) */
ngx_int_t ngx_http_im_store_pull_range(ngx_str_t *conv, long long begin,
    long long end, long long num, size_t budget,
    ngx_http_im_store_msgs_pt done, void *data);

/* the messages of seqs (n <= 1000), in that order, at most budget bytes
 * (the first always) */
ngx_int_t ngx_http_im_store_pull_seqs(ngx_str_t *conv, long long *seqs,
    ngx_uint_t n, size_t budget, ngx_http_im_store_msgs_pt done,
    void *data);


/* a conversation's seqs as a user sees them */
typedef struct {
    ngx_str_t                  conv;
    long long                  max_seq;
    long long                  read_seq;
    long long                  time;         /* last message, ms */
} ngx_http_im_store_conv_t;

typedef void (*ngx_http_im_store_convs_pt)(void *data, ngx_int_t err,
    ngx_http_im_store_conv_t *convs, ngx_uint_t n);

/* the user's most recent conversations (at most max; no time) */
ngx_int_t ngx_http_im_store_newest(ngx_str_t *uid, ngx_uint_t max,
    ngx_http_im_store_convs_pt done, void *data);

/* the given conversations of a user, in order */
ngx_int_t ngx_http_im_store_conv_seqs(ngx_str_t *uid, ngx_str_t *convs,
    ngx_uint_t n, ngx_http_im_store_convs_pt done, void *data);


/* ----------------------------------------------------------------------
 * Conversation records and read state (conv.lua; docs/api.md)
 */

typedef struct {
    ngx_int_t                  err;
    ngx_str_t                  msg;          /* errMsg, with err */
    ngx_str_t                  answer;       /* the "data" JSON */
    ngx_str_t                  extra;        /* what the op tells besides */
} ngx_http_im_store_conv_res_t;

typedef void (*ngx_http_im_store_conv_pt)(void *data,
    ngx_http_im_store_conv_res_t *r);

/*
 * Runs one op of conv.lua for uid (list, all, get, owner, set, delete,
 * read, seqs, hide, clear, view, badge, relast, purge, incr, ids,
 * notnotify, pinned) with its arguments as a JSON object, which the
 * caller built and bounded.  With MongoDB, the user's records are loaded
 * first when this Redis never had them, and changed records are in
 * MongoDB before done() runs.
 */
ngx_int_t ngx_http_im_store_conv(ngx_str_t *uid, const char *op,
    ngx_str_t *args, ngx_http_im_store_conv_pt done, void *data);

/* replaces a stored message (a revoke): n 1, or 0 when Redis no longer
 * holds it */
ngx_int_t ngx_http_im_store_msg_replace(ngx_str_t *conv, long long seq,
    ngx_str_t *json, ngx_http_im_store_count_pt done, void *data);

/* the messages of conv sent before time (ms) leave Redis (n: the seqs
 * passed, at most 10,000 a call) */
ngx_int_t ngx_http_im_store_msg_purge(ngx_str_t *conv, long long time,
    ngx_http_im_store_count_pt done, void *data);

/* a MsgData that is not stored (seq 0) to every session of uid */
void ngx_http_im_store_notify(ngx_str_t *uid, ngx_str_t *conv,
    ngx_str_t *json);


/* ----------------------------------------------------------------------
 * Groups (group.lua; docs/api.md, "Groups")
 */

/* runs op of group.lua for gid as caller (admin: an app admin) with the
 * request body as its arguments; extra holds the effects JSON */
ngx_int_t ngx_http_im_store_group(ngx_str_t *gid, const char *op,
    ngx_str_t *caller, ngx_uint_t admin, ngx_str_t *args,
    ngx_http_im_store_conv_pt done, void *data);

/* loads group gid from MongoDB into Redis: err 0, or 90004 */
ngx_int_t ngx_http_im_store_group_load(ngx_str_t *gid,
    ngx_http_im_store_conv_pt done, void *data);

/* a stored message that changed (a revoke), to the group's sessions */
void ngx_http_im_store_group_publish(ngx_str_t *gid, ngx_str_t *conv,
    ngx_str_t *json);

/* (un)subscribes this worker to a group's messages */
ngx_int_t ngx_http_im_store_group_subscribe(ngx_str_t *gid, ngx_uint_t on);

/* tells the workers of uid's sessions that it joined gid */
void ngx_http_im_store_group_joined(ngx_str_t *uid, ngx_str_t *gid);

typedef void (*ngx_http_im_store_ids_pt)(void *data, ngx_int_t err,
    ngx_str_t *ids, ngx_uint_t n);

/* a page of a group's members, in join order (n < count: the last) */
ngx_int_t ngx_http_im_store_group_page(ngx_str_t *gid, ngx_uint_t start,
    ngx_uint_t count, ngx_http_im_store_ids_pt done, void *data);


/* ----------------------------------------------------------------------
 * Users' profiles and relations (friend.lua; docs/api.md, "Friends")
 */

/* runs op of friend.lua in uid's slot, as ngx_http_im_store_group() */
ngx_int_t ngx_http_im_store_friend(ngx_str_t *uid, const char *op,
    ngx_str_t *caller, ngx_uint_t admin, ngx_str_t *args,
    ngx_http_im_store_conv_pt done, void *data);

#define NGX_HTTP_IM_STORE_LIST_ALL   0
#define NGX_HTTP_IM_STORE_LIST_ID    1
#define NGX_HTTP_IM_STORE_LIST_NICK  2

typedef void (*ngx_http_im_store_list_pt)(void *data, ngx_int_t err,
    long long total, ngx_http_im_store_user_t *users, ngx_uint_t n);

/* a page of the registered users (store_user.c) */
ngx_int_t ngx_http_im_store_users_list(ngx_uint_t how, ngx_str_t *what,
    ngx_uint_t skip, ngx_uint_t limit, ngx_http_im_store_list_pt done,
    void *data);

/* without MongoDB: a user in the lists' indexes (old: its nickname's
 * previous entry; create_time 0: already listed) */
void ngx_http_im_store_users_index(ngx_str_t *uid, ngx_str_t *nick,
    ngx_str_t *old, long long create_time);

/* loads uid's profile and relations from MongoDB: err 0, or 90004 */
ngx_int_t ngx_http_im_store_user_load(ngx_str_t *uid,
    ngx_http_im_store_conv_pt done, void *data);


/* ----------------------------------------------------------------------
 * Persistence to MongoDB
 */

typedef struct {
    ngx_str_t                  id;           /* the queue entry */
    ngx_str_t                  conv;
    long long                  seq;
    ngx_str_t                  json;         /* empty: gone from Redis */
    ngx_uint_t                 failed;       /* MongoDB refused it */
} ngx_http_im_store_entry_t;

typedef void (*ngx_http_im_store_entries_pt)(void *data, ngx_int_t err,
    ngx_http_im_store_entry_t *e, ngx_uint_t n);

/* a batch of a queue for this worker: its own unacknowledged entries
 * first, then those of workers idle for claim ms, then new ones; tidy
 * forgets idle workers */
ngx_int_t ngx_http_im_store_persist_take(ngx_uint_t queue,
    ngx_uint_t count, ngx_msec_t claim, ngx_uint_t tidy,
    ngx_http_im_store_entries_pt done, void *data);

/* a batch is in MongoDB: acknowledged, and the hot window may shrink */
ngx_int_t ngx_http_im_store_persist_done(ngx_uint_t queue,
    ngx_http_im_store_entry_t *e, ngx_uint_t n,
    ngx_http_im_store_done_pt done, void *data);

/* how many queues there are (queue is 0 .. n-1): one on one Redis, more
 * in a cluster, where each lives in a slot of its own */
ngx_uint_t ngx_http_im_store_persist_queues(void);


#endif /* _NGX_HTTP_IM_STORE_H_INCLUDED_ */
