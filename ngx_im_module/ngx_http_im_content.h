
/*
 * ngx_im: message content per contentType.  Checks that a message's
 * "content" object carries the fields its contentType needs (the Elem
 * structs of OpenIM: TextElem, PictureElem, SoundElem, ...), and names
 * the default offline-push title of each type.  Pure C (libc, yajl); no
 * nginx types, so it is unit-tested outside nginx.
 *
 * The rules are documented in docs/content-types.md.
 */


#ifndef _NGX_HTTP_IM_CONTENT_H_INCLUDED_
#define _NGX_HTTP_IM_CONTENT_H_INCLUDED_


#include <stddef.h>

#include <yajl/yajl_tree.h>


#define NGX_HTTP_IM_CONTENT_TEXT            101
#define NGX_HTTP_IM_CONTENT_PICTURE         102
#define NGX_HTTP_IM_CONTENT_VOICE           103
#define NGX_HTTP_IM_CONTENT_VIDEO           104
#define NGX_HTTP_IM_CONTENT_FILE            105
#define NGX_HTTP_IM_CONTENT_AT_TEXT         106
#define NGX_HTTP_IM_CONTENT_MERGER          107
#define NGX_HTTP_IM_CONTENT_CARD            108
#define NGX_HTTP_IM_CONTENT_LOCATION        109
#define NGX_HTTP_IM_CONTENT_CUSTOM          110
#define NGX_HTTP_IM_CONTENT_REVOKE          111
#define NGX_HTTP_IM_CONTENT_READ_RECEIPT    112
#define NGX_HTTP_IM_CONTENT_TYPING          113
#define NGX_HTTP_IM_CONTENT_GROUP_FIRST     1501  /* GroupCreated */
#define NGX_HTTP_IM_CONTENT_GROUP_LAST      1520  /* GroupNameSet */
#define NGX_HTTP_IM_CONTENT_FRIEND_FIRST    1201  /* ...ApplicationApproved */
#define NGX_HTTP_IM_CONTENT_FRIEND_LAST     1210  /* FriendsInfoUpdate */
#define NGX_HTTP_IM_CONTENT_USER_INFO       1303  /* UserInfoUpdated */
#define NGX_HTTP_IM_CONTENT_QUOTE           114
#define NGX_HTTP_IM_CONTENT_OA_NOTIFICATION 1400

/* OA notification mixType: text only, or text plus one attachment */
#define NGX_HTTP_IM_OA_MIX_TEXT             0
#define NGX_HTTP_IM_OA_MIX_PICTURE          1
#define NGX_HTTP_IM_OA_MIX_VIDEO            2
#define NGX_HTTP_IM_OA_MIX_FILE             3

/* OpenIM's notification range [1000, 5000) */
#define NGX_HTTP_IM_NOTIFICATION_BEGIN      1000
#define NGX_HTTP_IM_NOTIFICATION_END        5000

/* the most entries of an AtTextElem's "atUserList" */
#define NGX_HTTP_IM_CONTENT_MAX_AT          1000

/* a size for "err" buffers that fits every message of this file */
#define NGX_HTTP_IM_CONTENT_ERRLEN          160


/*
 * Validates a message's content for its contentType.  "content" is the
 * parsed JSON value of the content and must be an object.  Unknown
 * members are ignored; a null member counts as absent.  Returns 0, or -1
 * with an error text in "err" naming the field, for errCode 1001, e.g.
 * 'content field "text" is required for contentType 106' or
 * 'contentType 999 is not supported'.  "err" may be NULL.
 */
int ngx_http_im_content_check(long long content_type, yajl_val content,
    char *err, size_t errlen);

/*
 * Returns 1 when the contentType is one this server carries: 101..110,
 * 111 (revoke), 112 (read receipt), 114 (quote) and 1400 (OA
 * notification); 0 otherwise.
 */
int ngx_http_im_content_known(long long content_type);

/*
 * Returns the default offline-push title for a contentType, used when
 * offlinePushInfo.title is empty: "[Text]", "[Picture]", "[Voice]",
 * "[Video]", "[File]", "[@]", ..., "[Notification]".  Never NULL: other
 * notification types (1000..4999) give "[Notification]", anything else
 * "[New message]".  The string is static.
 */
const char *ngx_http_im_content_title(long long content_type);


#endif /* _NGX_HTTP_IM_CONTENT_H_INCLUDED_ */
