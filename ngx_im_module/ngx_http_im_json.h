
/*
 * ngx_im: the JSON codec.  A growable output buffer with JSON string
 * escaping, MsgData <-> JSON, the WebSocket request and response envelopes,
 * and small yajl helpers for handlers.  Pure C (libc, yajl, and the
 * UTF-8 validator of ngx_http_im_ws_frame.c); no nginx types, so it is
 * unit-tested and fuzzed outside nginx.
 *
 * Error texts written to "err" name the offending field, for errCode 1001,
 * e.g. 'field "contentType" must be an integer'.
 */


#ifndef _NGX_HTTP_IM_JSON_H_INCLUDED_
#define _NGX_HTTP_IM_JSON_H_INCLUDED_


#include <stddef.h>

#include <yajl/yajl_tree.h>


#define NGX_HTTP_IM_MAX_OPTIONS      16
#define NGX_HTTP_IM_MAX_AT           1000
#define NGX_HTTP_IM_JSON_MAX_DEPTH   64

/* a size for "err" buffers that fits every message of this file */
#define NGX_HTTP_IM_JSON_ERRLEN      160


/*
 * Output buffer on malloc().  "max" bounds its size (0: no bound).  When an
 * append would pass "max" or malloc() fails, "failed" is set and every
 * later append does nothing; the caller checks "failed" once at the end.
 */
typedef struct {
    unsigned char             *data;
    size_t                     len;
    size_t                     cap;
    size_t                     max;
    int                        failed;
} ngx_http_im_buf_t;


/* non-owning; "data" is never NULL once filled in by this file */
typedef struct {
    const char                *data;
    size_t                     len;
} ngx_http_im_str_t;


typedef struct {
    ngx_http_im_str_t          key;
    int                        value;
} ngx_http_im_msg_option_t;


typedef struct {
    ngx_http_im_str_t          title;
    ngx_http_im_str_t          desc;
    ngx_http_im_str_t          ex;
    ngx_http_im_str_t          ios_push_sound;
    int                        ios_badge_count;    /* JSON boolean */
} ngx_http_im_push_info_t;


/*
 * MsgData (DESIGN.md, 1.2).  After ngx_http_im_msg_from_json() the strings
 * point into the yajl tree it was given, which must outlive the message.
 * "at_user_ids" is malloc()ed by ngx_http_im_msg_from_json() and
 * "at_owned" is set then; ngx_http_im_msg_free() frees it.  A caller that
 * fills a message itself may point "at_user_ids" at its own array and
 * leave "at_owned" zero.
 */
typedef struct {
    ngx_http_im_str_t          send_id;
    ngx_http_im_str_t          recv_id;
    ngx_http_im_str_t          group_id;
    ngx_http_im_str_t          client_msg_id;
    ngx_http_im_str_t          server_msg_id;
    ngx_http_im_str_t          sender_nickname;
    ngx_http_im_str_t          sender_face_url;
    ngx_http_im_str_t          content;         /* JSON text, as a string */
    ngx_http_im_str_t          ex;

    long long                  sender_platform_id;
    long long                  session_type;
    long long                  msg_from;
    long long                  content_type;
    long long                  seq;
    long long                  send_time;
    long long                  create_time;
    long long                  status;

    size_t                     noptions;
    ngx_http_im_msg_option_t   options[NGX_HTTP_IM_MAX_OPTIONS];

    int                        has_push_info;
    ngx_http_im_push_info_t    offline_push_info;

    size_t                     nat;
    ngx_http_im_str_t         *at_user_ids;
    int                        at_owned;

    /* not MsgData: the bound of "content", im_max_content of the surface
     * that took the message, which its sender sets (0 refuses all) */
    size_t                     max_content;
} ngx_http_im_msg_t;


/*
 * A WebSocket request envelope.  The strings point into "root".  "data" is
 * never NULL after a successful parse: an absent or null "data" reads as a
 * shared empty object, which must not be freed.
 */
typedef struct {
    yajl_val                   root;
    yajl_val                   data;
    long long                  req_identifier;
    ngx_http_im_str_t          operation_id;
    ngx_http_im_str_t          msg_incr;
} ngx_http_im_req_t;


/* the buffer */

void ngx_http_im_buf_init(ngx_http_im_buf_t *b, size_t max);
void ngx_http_im_buf_free(ngx_http_im_buf_t *b);

/* empties the buffer and clears "failed"; the memory is kept */
void ngx_http_im_buf_reset(ngx_http_im_buf_t *b);

void ngx_http_im_buf_add(ngx_http_im_buf_t *b, const void *p, size_t n);
void ngx_http_im_buf_str(ngx_http_im_buf_t *b, const char *s);
void ngx_http_im_buf_int(ngx_http_im_buf_t *b, long long v);

/*
 * Appends "s" as a quoted JSON string: '"' and '\' are escaped, control
 * characters become \b \f \n \r \t or \u00XX, valid UTF-8 is copied as is,
 * and each byte of an invalid UTF-8 sequence becomes U+FFFD (as UTF-8, not
 * escaped), so the output is always valid JSON and valid UTF-8; and since
 * yajl can decode lone surrogate escapes into invalid UTF-8, this also
 * makes parse + re-encode idempotent.  The one exception is the overlong
 * C0 80, the parser's form of "\u0000" (see ngx_http_im_json_parse()):
 * it becomes "\u0000" again.  "s" may be NULL when "n" is 0.
 */
void ngx_http_im_buf_json_str(ngx_http_im_buf_t *b, const char *s, size_t n);

/*
 * Appends a yajl value as compact JSON; numbers keep their original text.
 * Nesting deeper than NGX_HTTP_IM_JSON_MAX_DEPTH fails the buffer.
 */
void ngx_http_im_buf_json_val(ngx_http_im_buf_t *b, yajl_val v);


/* parsing */

/*
 * Parses "len" bytes of JSON (no NUL needed).  Rejects, besides what yajl
 * rejects, NUL bytes, comments, nesting deeper than
 * NGX_HTTP_IM_JSON_MAX_DEPTH, text that is not strictly UTF-8 ("invalid
 * UTF-8": overlong forms, surrogates and code points above U+10FFFF
 * included), VT and FF outside strings ("invalid whitespace"), and a
 * string still open at the end ("unterminated string").  Returns the
 * tree, to be released with yajl_tree_free(), or NULL with
 * err = "invalid JSON: <reason>".
 * The tree's strings are NUL-terminated, so a "\u0000" escape in a
 * string (or key) is held as the two bytes C0 80 instead of cutting it
 * short (the raw bytes are refused as invalid UTF-8): the string getters
 * below refuse such a string, and ngx_http_im_buf_json_val() writes it
 * back as it came.  Escapes are not UTF-8 checked here: yajl decodes a
 * lone low surrogate escape ("\udc00") into invalid UTF-8, which the
 * string getters below refuse.
 */
yajl_val ngx_http_im_json_parse(const unsigned char *text, size_t len,
    char *err, size_t errlen);

/*
 * Parses a request envelope.  "reqIdentifier" must be an integer;
 * "operationID" and "msgIncr" strings (absent or null: empty); "data" an
 * object (absent or null: empty).  Returns 0, or -1 with an error text.
 * Fields parsed before an error stay set, so an error answer can echo
 * them.  Call ngx_http_im_req_free() in either case.
 */
int ngx_http_im_req_parse(const unsigned char *text, size_t len,
    ngx_http_im_req_t *req, char *err, size_t errlen);
void ngx_http_im_req_free(ngx_http_im_req_t *req);

/*
 * Writes {"reqIdentifier":..,"operationID":"..","msgIncr":"..",
 * "errCode":..,"errMsg":"..","data":  -- the caller then writes the data
 * value and calls ngx_http_im_resp_end(), which writes the closing '}'.
 * "err_msg" may be NULL.
 */
void ngx_http_im_resp_begin(ngx_http_im_buf_t *b, long long req_identifier,
    ngx_http_im_str_t operation_id, ngx_http_im_str_t msg_incr,
    int err_code, const char *err_msg);
void ngx_http_im_resp_end(ngx_http_im_buf_t *b);


/* MsgData */

/* an empty message: strings "", numbers 0, no options, no @ list */
void ngx_http_im_msg_init(ngx_http_im_msg_t *m);

/*
 * Fills "m" from a MsgData object; unknown fields are ignored, a NULL or
 * null "obj" gives an empty message.  Integers must be JSON integers, and
 * those that im.proto types int32 (senderPlatformID, sessionType,
 * msgFrom, contentType, status) must fit 32 bits; strings must be JSON
 * strings ("content" too) of valid UTF-8 without NUL bytes (see the
 * typed members below); null reads as ""/0.  "options" is
 * an object of booleans (at most 16), "atUserIDList" an array of strings
 * (at most 1000), "offlinePushInfo" an object whose "iOSBadgeCount" is a
 * boolean or an integer.  Returns 0, or -1 with an error text naming the
 * field; on -1 nothing needs freeing.  On 0 call ngx_http_im_msg_free().
 */
int ngx_http_im_msg_from_json(yajl_val obj, ngx_http_im_msg_t *m, char *err,
    size_t errlen);
void ngx_http_im_msg_free(ngx_http_im_msg_t *m);

/*
 * Appends "m" as one compact JSON object holding every field, in a fixed
 * order (OpenIM's): sendID, recvID, groupID, clientMsgID, serverMsgID,
 * senderPlatformID, senderNickname, senderFaceURL, sessionType, msgFrom,
 * contentType, content, seq, sendTime, createTime, status, options,
 * offlinePushInfo, atUserIDList, ex.  If "seq_at" is not NULL, it gets the
 * offset in b->data where the digits of "seq" begin: b->data[0 .. seq_at)
 * ends with "seq": and the digits run up to the next ','.  The offset is
 * meaningful only while b->failed is 0.
 */
void ngx_http_im_msg_to_json(const ngx_http_im_msg_t *m,
    ngx_http_im_buf_t *b, size_t *seq_at);

/*
 * Whether the first MsgData in a JSON text that ngx_http_im_msg_to_json()
 * wrote is a notification that was never stored: "seq" 0 and a
 * "contentType" of OpenIM's notification range (1000..4999).  Only a key
 * can match "name": in such a text, since quotes inside strings are
 * escaped.  Returns 1 or 0.
 */
int ngx_http_im_msg_json_is_note(const unsigned char *text, size_t len);


/* handler helpers */

/* a direct member of an object; NULL if absent or "obj" is no object */
yajl_val ngx_http_im_json_get(yajl_val obj, const char *key);

/*
 * Typed members.  An absent or null member is an error ('field "x" is
 * required') when "required" is set, otherwise it reads as ""/0/NULL.  A
 * member of another type is an error ('field "x" must be a string'), and
 * so is a string holding a NUL byte ('field "x" must not contain NUL
 * bytes'), which C code would read cut short, or invalid UTF-8 ('field
 * "x" is not valid UTF-8'), which a lone low surrogate escape such as
 * "\udc00" decodes into.  Return 0 or -1.
 */
int ngx_http_im_json_get_str(yajl_val obj, const char *key, int required,
    ngx_http_im_str_t *out, char *err, size_t errlen);
int ngx_http_im_json_get_int(yajl_val obj, const char *key, int required,
    long long *out, char *err, size_t errlen);
int ngx_http_im_json_get_bool(yajl_val obj, const char *key, int required,
    int *out, char *err, size_t errlen);
int ngx_http_im_json_get_array(yajl_val obj, const char *key, int required,
    yajl_val *out, char *err, size_t errlen);
int ngx_http_im_json_get_object(yajl_val obj, const char *key, int required,
    yajl_val *out, char *err, size_t errlen);

/*
 * A request body's top level: at most max members, each name once ('field
 * "x" appears twice'; the routes and scripts would each read another
 * one).  Bounded: max * max comparisons.  Returns 0 or -1.
 */
int ngx_http_im_json_members_unique(yajl_val obj, size_t max, char *err,
    size_t errlen);


#endif /* _NGX_HTTP_IM_JSON_H_INCLUDED_ */
