
/*
 * ngx_im: message content per contentType (see ngx_http_im_content.h and
 * docs/content-types.md).
 *
 * Each contentType has a table of the members its content may hold.  A
 * member of the wrong JSON type is always an error.  "Required" and
 * "non-empty" apply in strict mode only: the top-level content is checked
 * strictly, and so is a required nested object; an optional nested object
 * is only type-checked.  This is what lets the seed OA notification carry
 * empty pictureElem / videoElem / fileElem with mixType 0.
 */


#include <stdio.h>
#include <string.h>

#include <yajl/yajl_tree.h>

#include "ngx_http_im_json.h"
#include "ngx_http_im_content.h"


/* member types */
#define NGX_HTTP_IM_CF_ANY        0
#define NGX_HTTP_IM_CF_STR        1
#define NGX_HTTP_IM_CF_INT        2
#define NGX_HTTP_IM_CF_NUM        3
#define NGX_HTTP_IM_CF_BOOL       4
#define NGX_HTTP_IM_CF_OBJ        5
#define NGX_HTTP_IM_CF_ARR        6

/* member flags */
#define NGX_HTTP_IM_CF_REQ        0x01  /* present, not null (strict) */
#define NGX_HTTP_IM_CF_NONEMPTY   0x02  /* string or array (strict) */
#define NGX_HTTP_IM_CF_NONNEG     0x04  /* integer >= 0 */
#define NGX_HTTP_IM_CF_ITEM_NE    0x08  /* string items non-empty (strict) */

/* room for a member's path, e.g. "pictureElem.sourcePicture.url" */
#define NGX_HTTP_IM_CONTENT_PATHLEN  96


typedef struct ngx_http_im_content_field_s  ngx_http_im_content_field_t;

struct ngx_http_im_content_field_s {
    const char                         *name;
    unsigned                            type;
    unsigned                            flags;
    unsigned                            item;    /* type of array items */
    size_t                              max;     /* array items, 0: any */
    const ngx_http_im_content_field_t  *fields;  /* of an object member */
};


typedef struct {
    long long                           content_type;
    long long                           mix_type;  /* -1: not in text */
    char                               *err;
    size_t                              errlen;
} ngx_http_im_content_ctx_t;


typedef int (*ngx_http_im_content_check_pt)(ngx_http_im_content_ctx_t *ctx,
    yajl_val content);


typedef struct {
    long long                           content_type;
    const char                         *title;
    const ngx_http_im_content_field_t  *fields;  /* NULL: any object */
    ngx_http_im_content_check_pt        check;   /* rules beyond the table */
} ngx_http_im_content_type_t;


static int ngx_http_im_content_fields(ngx_http_im_content_ctx_t *ctx,
    yajl_val obj, const char *prefix, const ngx_http_im_content_field_t *f,
    int strict);
static int ngx_http_im_content_field(ngx_http_im_content_ctx_t *ctx,
    yajl_val obj, const char *prefix, const ngx_http_im_content_field_t *f,
    int strict);
static int ngx_http_im_content_items(ngx_http_im_content_ctx_t *ctx,
    yajl_val arr, const char *prefix, const ngx_http_im_content_field_t *f,
    int strict);
static const char *ngx_http_im_content_mistyped(yajl_val v,
    unsigned type);
static int ngx_http_im_content_error(ngx_http_im_content_ctx_t *ctx,
    const char *prefix, const char *name, const char *what);
static int ngx_http_im_content_text(ngx_http_im_content_ctx_t *ctx,
    yajl_val content);
static int ngx_http_im_content_location(ngx_http_im_content_ctx_t *ctx,
    yajl_val content);
static int ngx_http_im_content_oa(ngx_http_im_content_ctx_t *ctx,
    yajl_val content);
static const ngx_http_im_content_type_t *ngx_http_im_content_find(
    long long content_type);


#define ngx_http_im_cf(name, type, flags)                                   \
    { name, NGX_HTTP_IM_CF_##type, flags, NGX_HTTP_IM_CF_ANY, 0, NULL }

#define ngx_http_im_cf_obj(name, flags, fields)                             \
    { name, NGX_HTTP_IM_CF_OBJ, flags, NGX_HTTP_IM_CF_ANY, 0, fields }

#define ngx_http_im_cf_arr(name, flags, item, max)                          \
    { name, NGX_HTTP_IM_CF_ARR, flags, NGX_HTTP_IM_CF_##item, max, NULL }

#define ngx_http_im_cf_null   { NULL, 0, 0, 0, 0, NULL }


/* 101 TextElem: "content" or "text", checked by ngx_http_im_content_text */
static const ngx_http_im_content_field_t  ngx_http_im_content_text_fields[] = {
    ngx_http_im_cf("content", STR, 0),
    ngx_http_im_cf("text", STR, 0),
    ngx_http_im_cf_null
};


/* PictureBaseInfo; "url" matters only where the picture is required */
static const ngx_http_im_content_field_t  ngx_http_im_content_pic_info[] = {
    ngx_http_im_cf("uuid", STR, 0),
    ngx_http_im_cf("type", STR, 0),
    ngx_http_im_cf("size", INT, NGX_HTTP_IM_CF_NONNEG),
    ngx_http_im_cf("width", INT, NGX_HTTP_IM_CF_NONNEG),
    ngx_http_im_cf("height", INT, NGX_HTTP_IM_CF_NONNEG),
    ngx_http_im_cf("url", STR, NGX_HTTP_IM_CF_REQ|NGX_HTTP_IM_CF_NONEMPTY),
    ngx_http_im_cf_null
};


/* 102 PictureElem */
static const ngx_http_im_content_field_t  ngx_http_im_content_picture[] = {
    ngx_http_im_cf("sourcePath", STR, 0),
    ngx_http_im_cf_obj("sourcePicture", NGX_HTTP_IM_CF_REQ,
                       ngx_http_im_content_pic_info),
    ngx_http_im_cf_obj("bigPicture", 0, ngx_http_im_content_pic_info),
    ngx_http_im_cf_obj("snapshotPicture", 0, ngx_http_im_content_pic_info),
    ngx_http_im_cf_null
};


/* 103 SoundElem */
static const ngx_http_im_content_field_t  ngx_http_im_content_sound[] = {
    ngx_http_im_cf("uuid", STR, 0),
    ngx_http_im_cf("soundPath", STR, 0),
    ngx_http_im_cf("sourceUrl", STR,
                   NGX_HTTP_IM_CF_REQ|NGX_HTTP_IM_CF_NONEMPTY),
    ngx_http_im_cf("dataSize", INT, NGX_HTTP_IM_CF_NONNEG),
    ngx_http_im_cf("duration", INT,
                   NGX_HTTP_IM_CF_REQ|NGX_HTTP_IM_CF_NONNEG),
    ngx_http_im_cf("soundType", STR, 0),
    ngx_http_im_cf_null
};


/* 104 VideoElem */
static const ngx_http_im_content_field_t  ngx_http_im_content_video[] = {
    ngx_http_im_cf("videoPath", STR, 0),
    ngx_http_im_cf("videoUUID", STR, 0),
    ngx_http_im_cf("videoUrl", STR,
                   NGX_HTTP_IM_CF_REQ|NGX_HTTP_IM_CF_NONEMPTY),
    ngx_http_im_cf("videoType", STR, 0),
    ngx_http_im_cf("videoSize", INT, NGX_HTTP_IM_CF_NONNEG),
    ngx_http_im_cf("duration", INT,
                   NGX_HTTP_IM_CF_REQ|NGX_HTTP_IM_CF_NONNEG),
    ngx_http_im_cf("snapshotPath", STR, 0),
    ngx_http_im_cf("snapshotUUID", STR, 0),
    ngx_http_im_cf("snapshotSize", INT, NGX_HTTP_IM_CF_NONNEG),
    ngx_http_im_cf("snapshotUrl", STR, 0),
    ngx_http_im_cf("snapshotWidth", INT, NGX_HTTP_IM_CF_NONNEG),
    ngx_http_im_cf("snapshotHeight", INT, NGX_HTTP_IM_CF_NONNEG),
    ngx_http_im_cf("snapshotType", STR, 0),
    ngx_http_im_cf_null
};


/* 105 FileElem */
static const ngx_http_im_content_field_t  ngx_http_im_content_file[] = {
    ngx_http_im_cf("filePath", STR, 0),
    ngx_http_im_cf("uuid", STR, 0),
    ngx_http_im_cf("sourceUrl", STR,
                   NGX_HTTP_IM_CF_REQ|NGX_HTTP_IM_CF_NONEMPTY),
    ngx_http_im_cf("fileName", STR,
                   NGX_HTTP_IM_CF_REQ|NGX_HTTP_IM_CF_NONEMPTY),
    ngx_http_im_cf("fileSize", INT, NGX_HTTP_IM_CF_NONNEG),
    ngx_http_im_cf("fileType", STR, 0),
    ngx_http_im_cf_null
};


/* 106 AtTextElem */
static const ngx_http_im_content_field_t  ngx_http_im_content_at_text[] = {
    ngx_http_im_cf("text", STR, NGX_HTTP_IM_CF_REQ|NGX_HTTP_IM_CF_NONEMPTY),
    ngx_http_im_cf_arr("atUserList",
                       NGX_HTTP_IM_CF_REQ|NGX_HTTP_IM_CF_ITEM_NE, STR,
                       NGX_HTTP_IM_CONTENT_MAX_AT),
    ngx_http_im_cf_arr("atUsersInfo", 0, OBJ, 0),
    ngx_http_im_cf_obj("quoteMessage", 0, NULL),
    ngx_http_im_cf("isAtSelf", BOOL, 0),
    ngx_http_im_cf_null
};


/* 107 MergeElem */
static const ngx_http_im_content_field_t  ngx_http_im_content_merger[] = {
    ngx_http_im_cf("title", STR, NGX_HTTP_IM_CF_REQ),
    ngx_http_im_cf_arr("abstractList", 0, STR, 0),
    ngx_http_im_cf_arr("multiMessage",
                       NGX_HTTP_IM_CF_REQ|NGX_HTTP_IM_CF_NONEMPTY, OBJ, 0),
    ngx_http_im_cf_arr("messageEntityList", 0, OBJ, 0),
    ngx_http_im_cf_null
};


/* 108 CardElem */
static const ngx_http_im_content_field_t  ngx_http_im_content_card[] = {
    ngx_http_im_cf("userID", STR, NGX_HTTP_IM_CF_REQ|NGX_HTTP_IM_CF_NONEMPTY),
    ngx_http_im_cf("nickname", STR, 0),
    ngx_http_im_cf("faceURL", STR, 0),
    ngx_http_im_cf("ex", STR, 0),
    ngx_http_im_cf_null
};


/* 109 LocationElem; the coordinates' ranges: ngx_http_im_content_location */
static const ngx_http_im_content_field_t  ngx_http_im_content_loc[] = {
    ngx_http_im_cf("description", STR, 0),
    ngx_http_im_cf("longitude", NUM, NGX_HTTP_IM_CF_REQ),
    ngx_http_im_cf("latitude", NUM, NGX_HTTP_IM_CF_REQ),
    ngx_http_im_cf_null
};


/* 110 CustomElem */
static const ngx_http_im_content_field_t  ngx_http_im_content_custom[] = {
    ngx_http_im_cf("data", STR, NGX_HTTP_IM_CF_REQ|NGX_HTTP_IM_CF_NONEMPTY),
    ngx_http_im_cf("description", STR, 0),
    ngx_http_im_cf("extension", STR, 0),
    ngx_http_im_cf_null
};


/* 113 TypingElem: online only (ngx_http_im_msg_send()) */
static const ngx_http_im_content_field_t  ngx_http_im_content_typing[] = {
    ngx_http_im_cf("msgTips", STR, 0),
    ngx_http_im_cf_null
};


/* 114 QuoteElem */
static const ngx_http_im_content_field_t  ngx_http_im_content_quote[] = {
    ngx_http_im_cf("text", STR, NGX_HTTP_IM_CF_REQ|NGX_HTTP_IM_CF_NONEMPTY),
    ngx_http_im_cf_obj("quoteMessage", NGX_HTTP_IM_CF_REQ, NULL),
    ngx_http_im_cf_arr("messageEntityList", 0, OBJ, 0),
    ngx_http_im_cf_null
};


/*
 * 1400 OANotificationElem.  The four elems are optional here, so only
 * their members' types are checked; ngx_http_im_content_oa() then checks
 * the one that "mixType" selects against the tables below.
 */
static const ngx_http_im_content_field_t  ngx_http_im_content_oa_fields[] = {
    ngx_http_im_cf("notificationName", STR,
                   NGX_HTTP_IM_CF_REQ|NGX_HTTP_IM_CF_NONEMPTY),
    ngx_http_im_cf("notificationFaceURL", STR, 0),
    ngx_http_im_cf("notificationType", INT, 0),
    ngx_http_im_cf("text", STR, NGX_HTTP_IM_CF_REQ),
    ngx_http_im_cf("externalUrl", STR, 0),
    ngx_http_im_cf("url", STR, 0),
    ngx_http_im_cf("mixType", INT, 0),
    ngx_http_im_cf_obj("pictureElem", 0, ngx_http_im_content_picture),
    ngx_http_im_cf_obj("soundElem", 0, ngx_http_im_content_sound),
    ngx_http_im_cf_obj("videoElem", 0, ngx_http_im_content_video),
    ngx_http_im_cf_obj("fileElem", 0, ngx_http_im_content_file),
    ngx_http_im_cf("ex", STR, 0),
    ngx_http_im_cf_null
};


static const ngx_http_im_content_field_t  ngx_http_im_content_oa_url[] = {
    ngx_http_im_cf("url", STR, NGX_HTTP_IM_CF_REQ|NGX_HTTP_IM_CF_NONEMPTY),
    ngx_http_im_cf_null
};

static const ngx_http_im_content_field_t  ngx_http_im_content_oa_pic[] = {
    ngx_http_im_cf_obj("sourcePicture", NGX_HTTP_IM_CF_REQ,
                       ngx_http_im_content_oa_url),
    ngx_http_im_cf_null
};

static const ngx_http_im_content_field_t  ngx_http_im_content_oa_video[] = {
    ngx_http_im_cf("videoUrl", STR,
                   NGX_HTTP_IM_CF_REQ|NGX_HTTP_IM_CF_NONEMPTY),
    ngx_http_im_cf_null
};

static const ngx_http_im_content_field_t  ngx_http_im_content_oa_file[] = {
    ngx_http_im_cf("sourceUrl", STR,
                   NGX_HTTP_IM_CF_REQ|NGX_HTTP_IM_CF_NONEMPTY),
    ngx_http_im_cf_null
};


/* the elem each mixType requires, indexed by mixType */
static const ngx_http_im_content_field_t  ngx_http_im_content_oa_mix[][2] = {
    { ngx_http_im_cf_null, ngx_http_im_cf_null },
    { ngx_http_im_cf_obj("pictureElem", NGX_HTTP_IM_CF_REQ,
                         ngx_http_im_content_oa_pic),
      ngx_http_im_cf_null },
    { ngx_http_im_cf_obj("videoElem", NGX_HTTP_IM_CF_REQ,
                         ngx_http_im_content_oa_video),
      ngx_http_im_cf_null },
    { ngx_http_im_cf_obj("fileElem", NGX_HTTP_IM_CF_REQ,
                         ngx_http_im_content_oa_file),
      ngx_http_im_cf_null }
};


static const ngx_http_im_content_type_t  ngx_http_im_content_types[] = {

    { NGX_HTTP_IM_CONTENT_TEXT, "[Text]",
      ngx_http_im_content_text_fields, ngx_http_im_content_text },

    { NGX_HTTP_IM_CONTENT_PICTURE, "[Picture]",
      ngx_http_im_content_picture, NULL },

    { NGX_HTTP_IM_CONTENT_VOICE, "[Voice]",
      ngx_http_im_content_sound, NULL },

    { NGX_HTTP_IM_CONTENT_VIDEO, "[Video]",
      ngx_http_im_content_video, NULL },

    { NGX_HTTP_IM_CONTENT_FILE, "[File]",
      ngx_http_im_content_file, NULL },

    { NGX_HTTP_IM_CONTENT_AT_TEXT, "[@]",
      ngx_http_im_content_at_text, NULL },

    { NGX_HTTP_IM_CONTENT_MERGER, "[Chat history]",
      ngx_http_im_content_merger, NULL },

    { NGX_HTTP_IM_CONTENT_CARD, "[Card]",
      ngx_http_im_content_card, NULL },

    { NGX_HTTP_IM_CONTENT_LOCATION, "[Location]",
      ngx_http_im_content_loc, ngx_http_im_content_location },

    { NGX_HTTP_IM_CONTENT_CUSTOM, "[Custom]",
      ngx_http_im_content_custom, NULL },

    { NGX_HTTP_IM_CONTENT_REVOKE, "[Revoked]", NULL, NULL },

    { NGX_HTTP_IM_CONTENT_READ_RECEIPT, "[Read]", NULL, NULL },

    { NGX_HTTP_IM_CONTENT_TYPING, "[Typing]",
      ngx_http_im_content_typing, NULL },

    { NGX_HTTP_IM_CONTENT_QUOTE, "[Quote]",
      ngx_http_im_content_quote, NULL },

    { NGX_HTTP_IM_CONTENT_OA_NOTIFICATION, "[Notification]",
      ngx_http_im_content_oa_fields, ngx_http_im_content_oa }
};


/* 1501 GroupCreated .. 1520 GroupNameSet: {"detail": the tips JSON} */
static const ngx_http_im_content_type_t  ngx_http_im_content_group_note = {
    NGX_HTTP_IM_CONTENT_GROUP_FIRST, "[Group notification]", NULL, NULL
};

/* 1201 .. 1210 friend notifications, 1303 UserInfoUpdated: the same */
static const ngx_http_im_content_type_t  ngx_http_im_content_friend_note = {
    NGX_HTTP_IM_CONTENT_FRIEND_FIRST, "[Notification]", NULL, NULL
};


int
ngx_http_im_content_check(long long content_type, yajl_val content,
    char *err, size_t errlen)
{
    ngx_http_im_content_ctx_t          ctx;
    const ngx_http_im_content_type_t  *t;

    if (err && errlen) {
        err[0] = '\0';
    }

    t = ngx_http_im_content_find(content_type);

    if (t == NULL) {
        if (err && errlen) {
            snprintf(err, errlen, "contentType %lld is not supported",
                     content_type);
        }

        return -1;
    }

    if (content == NULL || !YAJL_IS_OBJECT(content)) {
        if (err && errlen) {
            snprintf(err, errlen,
                     "content must be a JSON object for contentType %lld",
                     content_type);
        }

        return -1;
    }

    ctx.content_type = content_type;
    ctx.mix_type = -1;
    ctx.err = err;
    ctx.errlen = errlen;

    if (t->fields
        && ngx_http_im_content_fields(&ctx, content, NULL, t->fields, 1)
           != 0)
    {
        return -1;
    }

    if (t->check && t->check(&ctx, content) != 0) {
        return -1;
    }

    return 0;
}


int
ngx_http_im_content_known(long long content_type)
{
    return ngx_http_im_content_find(content_type) != NULL;
}


const char *
ngx_http_im_content_title(long long content_type)
{
    const ngx_http_im_content_type_t  *t;

    t = ngx_http_im_content_find(content_type);

    if (t) {
        return t->title;
    }

    if (content_type >= NGX_HTTP_IM_NOTIFICATION_BEGIN
        && content_type < NGX_HTTP_IM_NOTIFICATION_END)
    {
        return "[Notification]";
    }

    return "[New message]";
}


static const ngx_http_im_content_type_t *
ngx_http_im_content_find(long long content_type)
{
    size_t  i;

    if (content_type >= NGX_HTTP_IM_CONTENT_GROUP_FIRST
        && content_type <= NGX_HTTP_IM_CONTENT_GROUP_LAST)
    {
        return &ngx_http_im_content_group_note;
    }

    if ((content_type >= NGX_HTTP_IM_CONTENT_FRIEND_FIRST
         && content_type <= NGX_HTTP_IM_CONTENT_FRIEND_LAST)
        || content_type == NGX_HTTP_IM_CONTENT_USER_INFO)
    {
        return &ngx_http_im_content_friend_note;
    }

    for (i = 0; i < sizeof(ngx_http_im_content_types)
                    / sizeof(ngx_http_im_content_types[0]); i++)
    {
        if (ngx_http_im_content_types[i].content_type == content_type) {
            return &ngx_http_im_content_types[i];
        }
    }

    return NULL;
}


static int
ngx_http_im_content_fields(ngx_http_im_content_ctx_t *ctx, yajl_val obj,
    const char *prefix, const ngx_http_im_content_field_t *f, int strict)
{
    for ( /* void */ ; f->name; f++) {
        if (ngx_http_im_content_field(ctx, obj, prefix, f, strict) != 0) {
            return -1;
        }
    }

    return 0;
}


/*
 * Checks member "f" of "obj".  "prefix" is the path of "obj" (NULL at the
 * top), so errors name e.g. "pictureElem.sourcePicture.url".
 */

static int
ngx_http_im_content_field(ngx_http_im_content_ctx_t *ctx, yajl_val obj,
    const char *prefix, const ngx_http_im_content_field_t *f, int strict)
{
    int          req;
    char         path[NGX_HTTP_IM_CONTENT_PATHLEN];
    yajl_val     v;
    const char  *what;

    req = strict && (f->flags & NGX_HTTP_IM_CF_REQ);

    v = ngx_http_im_json_get(obj, f->name);

    if (v == NULL || YAJL_IS_NULL(v)) {
        return req ? ngx_http_im_content_error(ctx, prefix, f->name,
                                               "is required")
                   : 0;
    }

    what = ngx_http_im_content_mistyped(v, f->type);

    if (what) {
        return ngx_http_im_content_error(ctx, prefix, f->name, what);
    }

    switch (f->type) {

    case NGX_HTTP_IM_CF_STR:
        if (strict && (f->flags & NGX_HTTP_IM_CF_NONEMPTY)
            && v->u.string[0] == '\0')
        {
            return ngx_http_im_content_error(ctx, prefix, f->name,
                                             "must not be empty");
        }

        break;

    case NGX_HTTP_IM_CF_INT:
        if ((f->flags & NGX_HTTP_IM_CF_NONNEG) && v->u.number.i < 0) {
            return ngx_http_im_content_error(ctx, prefix, f->name,
                                             "must not be negative");
        }

        break;

    case NGX_HTTP_IM_CF_OBJ:
        if (f->fields == NULL) {
            break;
        }

        if (prefix) {
            snprintf(path, sizeof(path), "%s.%s", prefix, f->name);

        } else {
            snprintf(path, sizeof(path), "%s", f->name);
        }

        return ngx_http_im_content_fields(ctx, v, path, f->fields, req);

    case NGX_HTTP_IM_CF_ARR:
        return ngx_http_im_content_items(ctx, v, prefix, f, strict);

    default:
        break;
    }

    return 0;
}


static int
ngx_http_im_content_items(ngx_http_im_content_ctx_t *ctx, yajl_val arr,
    const char *prefix, const ngx_http_im_content_field_t *f, int strict)
{
    char         item[NGX_HTTP_IM_CONTENT_PATHLEN + 24];
    size_t       i, n;
    yajl_val     v;
    const char  *what;

    n = arr->u.array.len;

    if (strict && (f->flags & NGX_HTTP_IM_CF_NONEMPTY) && n == 0) {
        return ngx_http_im_content_error(ctx, prefix, f->name,
                                         "must not be empty");
    }

    if (f->max && n > f->max) {
        return ngx_http_im_content_error(ctx, prefix, f->name,
                                         "has too many entries");
    }

    what = NULL;

    for (i = 0; i < n; i++) {
        v = arr->u.array.values[i];

        if (v == NULL || YAJL_IS_NULL(v)) {
            if (f->item == NGX_HTTP_IM_CF_ANY) {
                continue;
            }

            what = "must not be null";
            break;
        }

        what = ngx_http_im_content_mistyped(v, f->item);

        if (what) {
            break;
        }

        if (f->item == NGX_HTTP_IM_CF_STR && strict
            && (f->flags & NGX_HTTP_IM_CF_ITEM_NE)
            && v->u.string[0] == '\0')
        {
            what = "must not be empty";
            break;
        }
    }

    if (what == NULL) {
        return 0;
    }

    snprintf(item, sizeof(item), "%s[%zu]", f->name, i);

    return ngx_http_im_content_error(ctx, prefix, item, what);
}


/*
 * Returns NULL when the non-null value "v" is of JSON type "type", else
 * the error text.
 */

static const char *
ngx_http_im_content_mistyped(yajl_val v, unsigned type)
{
    switch (type) {

    case NGX_HTTP_IM_CF_STR:
        return YAJL_IS_STRING(v) ? NULL : "must be a string";

    case NGX_HTTP_IM_CF_INT:
        return YAJL_IS_INTEGER(v) ? NULL : "must be an integer";

    case NGX_HTTP_IM_CF_NUM:
        /* integers are valid doubles too; overflowing numbers are not */
        return YAJL_IS_DOUBLE(v) ? NULL : "must be a number";

    case NGX_HTTP_IM_CF_BOOL:
        return (YAJL_IS_TRUE(v) || YAJL_IS_FALSE(v))
               ? NULL : "must be a boolean";

    case NGX_HTTP_IM_CF_OBJ:
        return YAJL_IS_OBJECT(v) ? NULL : "must be an object";

    case NGX_HTTP_IM_CF_ARR:
        return YAJL_IS_ARRAY(v) ? NULL : "must be an array";

    default: /* NGX_HTTP_IM_CF_ANY */
        return NULL;
    }
}


/*
 * Writes 'content field "[<prefix>.]<name>" <what> for contentType N'
 * (and " mixType M" when set); returns -1.
 */

static int
ngx_http_im_content_error(ngx_http_im_content_ctx_t *ctx,
    const char *prefix, const char *name, const char *what)
{
    char  mix[32];

    if (ctx->err == NULL || ctx->errlen == 0) {
        return -1;
    }

    mix[0] = '\0';

    if (ctx->mix_type >= 0) {
        snprintf(mix, sizeof(mix), " mixType %lld", ctx->mix_type);
    }

    snprintf(ctx->err, ctx->errlen,
             "content field \"%s%s%s\" %s for contentType %lld%s",
             prefix ? prefix : "", prefix ? "." : "", name, what,
             ctx->content_type, mix);

    return -1;
}


/*
 * 101: "content" (OpenIM's TextElem) or "text" (the admin API of
 * MISSION item 9); both are strings when present (the table checked
 * that), and the first non-empty one is the text.
 */

static int
ngx_http_im_content_text(ngx_http_im_content_ctx_t *ctx, yajl_val content)
{
    int       present;
    yajl_val  c, t;

    c = ngx_http_im_json_get(content, "content");
    t = ngx_http_im_json_get(content, "text");

    if ((c && YAJL_IS_STRING(c) && c->u.string[0] != '\0')
        || (t && YAJL_IS_STRING(t) && t->u.string[0] != '\0'))
    {
        return 0;
    }

    present = (c && YAJL_IS_STRING(c)) || (t && YAJL_IS_STRING(t));

    if (ctx->err && ctx->errlen) {
        snprintf(ctx->err, ctx->errlen,
                 "content field \"content\" or \"text\" %s "
                 "for contentType %lld",
                 present ? "must not be empty" : "is required",
                 ctx->content_type);
    }

    return -1;
}


/* 109: the table checked that both are numbers; here, their ranges */

static int
ngx_http_im_content_location(ngx_http_im_content_ctx_t *ctx,
    yajl_val content)
{
    double    d;
    yajl_val  v;

    v = ngx_http_im_json_get(content, "longitude");
    d = v->u.number.d;

    if (d < -180.0 || d > 180.0) {
        return ngx_http_im_content_error(ctx, NULL, "longitude",
                                         "must be in -180..180");
    }

    v = ngx_http_im_json_get(content, "latitude");
    d = v->u.number.d;

    if (d < -90.0 || d > 90.0) {
        return ngx_http_im_content_error(ctx, NULL, "latitude",
                                         "must be in -90..90");
    }

    return 0;
}


/*
 * 1400: "mixType" is 0..3 (absent: 0).  Text-only notifications need a
 * non-empty "text"; the others need the elem they attach, with its URL.
 */

static int
ngx_http_im_content_oa(ngx_http_im_content_ctx_t *ctx, yajl_val content)
{
    int        rc;
    yajl_val   v;
    long long  mix;

    v = ngx_http_im_json_get(content, "mixType");
    mix = (v && YAJL_IS_INTEGER(v)) ? v->u.number.i : 0;

    if (mix < NGX_HTTP_IM_OA_MIX_TEXT || mix > NGX_HTTP_IM_OA_MIX_FILE) {
        return ngx_http_im_content_error(ctx, NULL, "mixType",
                                         "must be 0..3");
    }

    ctx->mix_type = mix;

    if (mix == NGX_HTTP_IM_OA_MIX_TEXT) {
        v = ngx_http_im_json_get(content, "text");

        rc = (v && YAJL_IS_STRING(v) && v->u.string[0] != '\0')
             ? 0 : ngx_http_im_content_error(ctx, NULL, "text",
                                             "must not be empty");

    } else {
        rc = ngx_http_im_content_fields(ctx, content, NULL,
                                        ngx_http_im_content_oa_mix[mix], 1);
    }

    ctx->mix_type = -1;

    return rc;
}
