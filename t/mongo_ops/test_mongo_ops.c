
/*
 * ngx_im: the MongoDB task ops of ngx_http_im_mongo.c, run against a
 * real server (FerretDB from t/ferretdb, started by the Makefile, or
 * IM_MONGO_URI), outside nginx.
 *
 * The file is included whole, so its static functions are callable: a
 * task is built as its callers build one and run with
 * ngx_http_im_mongo_run() on a client of a mongoc pool, as a pool thread
 * would.  The few nginx functions and globals it uses are stubbed below;
 * ngx_snprintf() knows the formats this file uses and nothing else.
 */


#include "ngx_http_im_mongo.c"

#include "../unit/check.h"


#define DB  "im_ops_test"


/* nginx, stubbed */

static ngx_log_t      test_log;
static ngx_cycle_t    test_cycle = { .log = &test_log };

volatile ngx_cycle_t  *ngx_cycle = &test_cycle;
volatile ngx_msec_t    ngx_current_msec;
ngx_rbtree_t           ngx_event_timer_rbtree;
ngx_uint_t             ngx_exiting;
sig_atomic_t           ngx_quit;
sig_atomic_t           ngx_terminate;
ngx_http_im_worker_t  *ngx_http_im_worker;


void *
ngx_calloc(size_t size, ngx_log_t *log)
{
    return calloc(1, size);
}


u_char *
ngx_cpystrn(u_char *dst, u_char *src, size_t n)
{
    if (n == 0) {
        return dst;
    }

    while (--n) {
        *dst = *src;

        if (*dst == '\0') {
            return dst;
        }

        dst++;
        src++;
    }

    *dst = '\0';

    return dst;
}


/* %s, %*s, %L, %D, %uD: what ngx_http_im_mongo.c formats */
u_char * ngx_cdecl
ngx_snprintf(u_char *buf, size_t max, const char *fmt, ...)
{
    int          n, u, star;
    char         tmp[32];
    size_t       len;
    va_list      args;
    u_char      *p, *last;
    const char  *s;

    p = buf;
    last = buf + max;

    va_start(args, fmt);

    while (*fmt && p < last) {
        if (*fmt != '%') {
            *p++ = *fmt++;
            continue;
        }

        fmt++;
        u = star = 0;
        len = 0;

        if (*fmt == 'u') {
            u = 1;
            fmt++;
        }

        if (*fmt == '*') {
            star = 1;
            len = va_arg(args, size_t);
            fmt++;
        }

        s = tmp;

        switch (*fmt++) {

        case 's':
            s = va_arg(args, char *);
            if (!star) {
                len = strlen(s);
            }
            break;

        case 'L':
            n = snprintf(tmp, sizeof(tmp), "%lld",
                         (long long) va_arg(args, int64_t));
            len = (size_t) n;
            break;

        case 'D':
            n = u ? snprintf(tmp, sizeof(tmp), "%u", va_arg(args, uint32_t))
                  : snprintf(tmp, sizeof(tmp), "%d", va_arg(args, int32_t));
            len = (size_t) n;
            break;

        default:
            fprintf(stderr, "ngx_snprintf stub: format \"%s\"\n", fmt - 1);
            abort();
        }

        len = ngx_min(len, (size_t) (last - p));
        p = ngx_cpymem(p, s, len);
    }

    va_end(args);

    return p;
}


void ngx_cdecl
ngx_log_error_core(ngx_uint_t level, ngx_log_t *log, ngx_err_t err,
    const char *fmt, ...)
{
    printf("  log: %s\n", fmt);
}


ngx_thread_pool_t *
ngx_thread_pool_get(ngx_cycle_t *cycle, ngx_str_t *name)
{
    return NULL;
}


ngx_int_t
ngx_thread_task_post(ngx_thread_pool_t *tp, ngx_thread_task_t *task)
{
    return NGX_ERROR;
}


void
ngx_rbtree_insert(ngx_rbtree_t *tree, ngx_rbtree_node_t *node)
{
    abort();
}


void
ngx_rbtree_delete(ngx_rbtree_t *tree, ngx_rbtree_node_t *node)
{
    abort();
}


/* ngx_http_im_json.c's output buffer, the parts this file uses */

void
ngx_http_im_buf_init(ngx_http_im_buf_t *b, size_t max)
{
    ngx_memzero(b, sizeof(ngx_http_im_buf_t));
    b->max = max;
}


void
ngx_http_im_buf_free(ngx_http_im_buf_t *b)
{
    free(b->data);
    ngx_http_im_buf_init(b, b->max);
}


void
ngx_http_im_buf_add(ngx_http_im_buf_t *b, const void *p, size_t n)
{
    if (b->failed || n == 0) {
        return;
    }

    if (b->len + n > b->max) {
        b->failed = 1;
        return;
    }

    b->data = check_realloc(b->data, b->len + n);
    memcpy(b->data + b->len, p, n);
    b->len += n;
}


/* the test */

static mongoc_client_pool_t  *pool;
static mongoc_database_t     *db;


static ngx_http_im_mongo_task_t *
task(ngx_uint_t op, ngx_uint_t n)
{
    ngx_http_im_mongo_task_t  *t;

    t = ngx_http_im_mongo_task(op, n);
    if (t == NULL) {
        exit(2);
    }

    t->n = n;
    t->db = DB;

    return t;
}


/* appends s to t->in; returns its offset */
static size_t
in(ngx_http_im_mongo_task_t *t, const char *s)
{
    size_t  off;

    off = t->in.len;
    ngx_http_im_buf_add(&t->in, s, strlen(s));

    return off;
}


static void
item_conv(ngx_http_im_mongo_task_t *t, ngx_uint_t i, const char *conv)
{
    t->items[i].conv_off = in(t, conv);
    t->items[i].conv_len = strlen(conv);
}


static void
item_json(ngx_http_im_mongo_task_t *t, ngx_uint_t i, const char *json)
{
    t->items[i].off = in(t, json);
    t->items[i].len = strlen(json);
}


/* a MsgData of conv's seq, sent at "time", saying "text" */
static void
item_msg(ngx_http_im_mongo_task_t *t, ngx_uint_t i, const char *conv,
    int64_t seq, int64_t time, const char *text)
{
    char  json[256];

    snprintf(json, sizeof(json),
             "{\"serverMsgID\":\"m-%s-%lld-%s\",\"seq\":%lld,"
             "\"sendTime\":%lld,\"content\":\"%s\"}",
             conv, (long long) seq, text, (long long) seq,
             (long long) time, text);

    item_conv(t, i, conv);
    t->items[i].seq = seq;
    item_json(t, i, json);
}


static ngx_int_t
run(ngx_http_im_mongo_task_t *t)
{
    ngx_int_t         rc;
    mongoc_client_t  *client;

    client = mongoc_client_pool_pop(pool);
    rc = ngx_http_im_mongo_run(t, client);
    mongoc_client_pool_push(pool, client);

    if (rc == NGX_ERROR) {
        printf("  task error: %s\n", t->err);
    }

    return rc;
}


/* the one document of coll with this _id, or NULL; free with bson_destroy */
static bson_t *
get(const char *coll, const char *id)
{
    bson_t               *filter, *copy;
    const bson_t         *doc;
    mongoc_cursor_t      *cursor;
    mongoc_collection_t  *c;

    c = mongoc_database_get_collection(db, coll);
    filter = BCON_NEW("_id", BCON_UTF8(id));
    cursor = mongoc_collection_find_with_opts(c, filter, NULL, NULL);

    copy = mongoc_cursor_next(cursor, &doc) ? bson_copy(doc) : NULL;

    mongoc_cursor_destroy(cursor);
    bson_destroy(filter);
    mongoc_collection_destroy(c);

    return copy;
}


static int64_t
get_int(const bson_t *doc, const char *path)
{
    bson_iter_t  iter, field;

    if (doc == NULL || !bson_iter_init(&iter, doc)
        || !bson_iter_find_descendant(&iter, path, &field))
    {
        return -1;
    }

    return bson_iter_as_int64(&field);
}


static const char *
get_str(const bson_t *doc, const char *path)
{
    bson_iter_t  iter, field;

    if (doc == NULL || !bson_iter_init(&iter, doc)
        || !bson_iter_find_descendant(&iter, path, &field)
        || !BSON_ITER_HOLDS_UTF8(&field))
    {
        return "";
    }

    return bson_iter_utf8(&field, NULL);
}


static int64_t
rev_of(const char *id)
{
    int64_t   rev;
    bson_t   *doc;

    doc = get("conversation", id);
    rev = get_int(doc, "rev");

    if (doc) {
        bson_destroy(doc);
    }

    return rev;
}


static int
has_index(const char *coll, const char *name)
{
    int                   found;
    bson_iter_t           iter;
    const bson_t         *doc;
    mongoc_cursor_t      *cursor;
    mongoc_collection_t  *c;

    c = mongoc_database_get_collection(db, coll);
    cursor = mongoc_collection_find_indexes_with_opts(c, NULL);
    found = 0;

    while (mongoc_cursor_next(cursor, &doc)) {
        if (bson_iter_init_find(&iter, doc, "name")
            && BSON_ITER_HOLDS_UTF8(&iter)
            && strcmp(bson_iter_utf8(&iter, NULL), name) == 0)
        {
            found = 1;
        }
    }

    mongoc_cursor_destroy(cursor);
    mongoc_collection_destroy(c);

    return found;
}


static void
save(const char **json, ngx_uint_t n, ngx_int_t *rc,
    ngx_http_im_mongo_item_t *out)
{
    ngx_uint_t                 i;
    ngx_http_im_mongo_task_t  *t;

    t = task(NGX_HTTP_IM_MONGO_CONV_SAVE, n);

    for (i = 0; i < n; i++) {
        item_json(t, i, json[i]);
    }

    *rc = run(t);
    memcpy(out, t->items, n * sizeof(ngx_http_im_mongo_item_t));
    ngx_http_im_mongo_task_free(t);
}


static void
test_conv_save(void)
{
    ngx_int_t                 rc;
    ngx_http_im_mongo_item_t  it[8];

    static const char  *first[] = {
        "{\"_id\":\"u1:si_u1_u2\",\"ownerUserID\":\"u1\","
        "\"conversationID\":\"si_u1_u2\",\"rev\":1,\"isPinned\":false}",
        "{\"_id\":\"u1:sg_g1\",\"ownerUserID\":\"u1\","
        "\"conversationID\":\"sg_g1\",\"rev\":1,\"maxSeq\":77}",
        "{\"_id\":\"u2:si_u1_u2\",\"ownerUserID\":\"u2\","
        "\"conversationID\":\"si_u1_u2\",\"rev\":1}",
        "{\"_id\":\"u1:sg_g2\",\"ownerUserID\":\"u1\","
        "\"conversationID\":\"sg_g2\",\"rev\":3}",
        "{not json",
        "{\"_id\":\"u1:norev\",\"ownerUserID\":\"u1\"}",
        "{\"_id\":7,\"rev\":1}",
        "{\"_id\":\"u1:dollar\",\"rev\":1,\"$x\":1}"
    };

    static const char  *second[] = {
        /* newer: stored */
        "{\"_id\":\"u1:si_u1_u2\",\"ownerUserID\":\"u1\","
        "\"conversationID\":\"si_u1_u2\",\"rev\":2,\"isPinned\":true}",
        /* as new: kept as is */
        "{\"_id\":\"u1:sg_g1\",\"ownerUserID\":\"u1\","
        "\"conversationID\":\"sg_g1\",\"rev\":1,\"x\":1}",
        /* older: kept as is */
        "{\"_id\":\"u1:sg_g2\",\"ownerUserID\":\"u1\","
        "\"conversationID\":\"sg_g2\",\"rev\":2}",
        /* new */
        "{\"_id\":\"u1:sg_g3\",\"ownerUserID\":\"u1\","
        "\"conversationID\":\"sg_g3\",\"rev\":1}"
    };

    static const char  *stale[] = {
        "{\"_id\":\"u1:sg_g2\",\"ownerUserID\":\"u1\","
        "\"conversationID\":\"sg_g2\",\"rev\":1}"
    };

    printf("== CONV_SAVE\n");

    save(first, 8, &rc, it);
    CHECK(rc == NGX_OK);
    CHECK(!it[0].failed && !it[1].failed && !it[2].failed && !it[3].failed);
    CHECK(!it[0].duplicate && !it[3].duplicate);
    CHECK(it[4].failed && it[5].failed && it[6].failed && it[7].failed);
    CHECK(rev_of("u1:si_u1_u2") == 1);
    CHECK(rev_of("u1:sg_g2") == 3);
    CHECK(rev_of("u1:norev") == -1);
    CHECK(rev_of("u1:dollar") == -1);
    CHECK(has_index("conversation", "owner"));
    CHECK(has_index("msg", "conversation_seq"));

    /* duplicates amid the batch: FerretDB's answer cannot be mapped */
    save(second, 4, &rc, it);
    CHECK(rc == NGX_OK);
    CHECK(!it[0].failed && !it[1].failed && !it[2].failed && !it[3].failed);
    /* [0] too on FerretDB: stored by the bulk, then redone one by one */
    CHECK(it[1].duplicate && it[2].duplicate && !it[3].duplicate);
    CHECK(rev_of("u1:si_u1_u2") == 2);
    CHECK(rev_of("u1:sg_g1") == 1);
    CHECK(rev_of("u1:sg_g2") == 3);
    CHECK(rev_of("u1:sg_g3") == 1);

    {
        bson_t  *doc;

        doc = get("conversation", "u1:sg_g1");
        CHECK(get_int(doc, "x") == -1);
        CHECK(get_int(doc, "maxSeq") == 77);
        bson_destroy(doc);

        doc = get("conversation", "u1:si_u1_u2");
        doc = doc ? doc : bson_new();
        {
            bson_iter_t  iter;

            CHECK(bson_iter_init_find(&iter, doc, "isPinned")
                  && BSON_ITER_HOLDS_BOOL(&iter) && bson_iter_bool(&iter));
        }
        bson_destroy(doc);
    }

    /* one stale record: the bulk answer maps */
    save(stale, 1, &rc, it);
    CHECK(rc == NGX_OK);
    CHECK(it[0].duplicate && !it[0].failed);
    CHECK(rev_of("u1:sg_g2") == 3);
}


static void
test_insert_and_replace(void)
{
    bson_t                    *doc;
    ngx_int_t                  rc;
    ngx_http_im_mongo_task_t  *t;

    printf("== INSERT, MSG_REPLACE\n");

    t = task(NGX_HTTP_IM_MONGO_INSERT, 3);
    item_msg(t, 0, "si_u1_u2", 1, 1000, "one");
    item_msg(t, 1, "si_u1_u2", 2, 2000, "two");
    item_msg(t, 2, "si_u1_u2", 3, 1700000000000LL, "three");
    rc = run(t);
    CHECK(rc == NGX_OK);
    CHECK(!t->items[0].failed && !t->items[1].failed && !t->items[2].failed);
    ngx_http_im_mongo_task_free(t);

    doc = get("msg", "si_u1_u2:2");
    CHECK(strcmp(get_str(doc, "conversationID"), "si_u1_u2") == 0);
    CHECK(get_int(doc, "seq") == 2);
    CHECK(strcmp(get_str(doc, "msg.content"), "two") == 0);
    if (doc) {
        bson_destroy(doc);
    }

    /* a revoke, an upsert, a MsgData that does not parse */
    t = task(NGX_HTTP_IM_MONGO_MSG_REPLACE, 3);
    item_msg(t, 0, "si_u1_u2", 2, 2000, "revoked");
    item_msg(t, 1, "si_u1_u2", 9, 9000, "nine");
    item_conv(t, 2, "si_u1_u2");
    t->items[2].seq = 10;
    item_json(t, 2, "{\"content\":");
    rc = run(t);
    CHECK(rc == NGX_OK);
    CHECK(!t->items[0].failed && !t->items[1].failed && t->items[2].failed);
    ngx_http_im_mongo_task_free(t);

    doc = get("msg", "si_u1_u2:2");
    CHECK(strcmp(get_str(doc, "_id"), "si_u1_u2:2") == 0);
    CHECK(strcmp(get_str(doc, "conversationID"), "si_u1_u2") == 0);
    CHECK(get_int(doc, "seq") == 2);
    CHECK(strcmp(get_str(doc, "msg.content"), "revoked") == 0);
    CHECK(strcmp(get_str(doc, "msg.serverMsgID"), "m-si_u1_u2-2-revoked")
          == 0);
    if (doc) {
        bson_destroy(doc);
    }

    doc = get("msg", "si_u1_u2:9");
    CHECK(get_int(doc, "seq") == 9);
    CHECK(get_int(doc, "msg.sendTime") == 9000);
    if (doc) {
        bson_destroy(doc);
    }

    doc = get("msg", "si_u1_u2:10");
    CHECK(doc == NULL);
    if (doc) {
        bson_destroy(doc);
    }

    /* the same replacement twice: idempotent */
    t = task(NGX_HTTP_IM_MONGO_MSG_REPLACE, 2);
    item_msg(t, 0, "si_u1_u2", 2, 2000, "revoked");
    item_msg(t, 1, "si_u1_u2", 2, 2000, "revoked");
    rc = run(t);
    CHECK(rc == NGX_OK);
    CHECK(!t->items[0].failed && !t->items[1].failed);
    ngx_http_im_mongo_task_free(t);
}


/* v is the string s */
static int
str_is(yajl_val v, const char *s)
{
    const char  *str;

    str = YAJL_IS_STRING(v) ? YAJL_GET_STRING(v) : NULL;

    return str != NULL && strcmp(str, s) == 0;
}


/* the record of conversation conv in a CONV_LOAD answer */
static yajl_val
record(yajl_val list, const char *conv)
{
    size_t        i;
    yajl_val      v;
    const char   *path[] = { "conversationID", NULL };

    for (i = 0; i < YAJL_GET_ARRAY(list)->len; i++) {
        v = yajl_tree_get(YAJL_GET_ARRAY(list)->values[i], path,
                          yajl_t_string);
        if (str_is(v, conv)) {
            return YAJL_GET_ARRAY(list)->values[i];
        }
    }

    return NULL;
}


static yajl_val
load(const char *uid, int64_t limit, ngx_int_t *rc, char **text)
{
    char                       err[128];
    yajl_val                   v;
    ngx_http_im_mongo_task_t  *t;

    t = task(NGX_HTTP_IM_MONGO_CONV_LOAD, 0);
    in(t, uid);
    t->value = limit;

    *rc = run(t);

    *text = check_alloc(t->out.len + 1);
    memcpy(*text, t->out.data ? (char *) t->out.data : "", t->out.len);
    (*text)[t->out.len] = '\0';
    ngx_http_im_mongo_task_free(t);

    v = yajl_tree_parse(*text, err, sizeof(err));
    if (v == NULL || !YAJL_IS_ARRAY(v)) {
        printf("  not a JSON array: %s\n", *text);
        yajl_tree_free(v);
        return NULL;
    }

    return v;
}


static void
test_conv_load(void)
{
    char       *text;
    yajl_val    list, r, v;
    ngx_int_t   rc;

    const char  *max_seq[] = { "maxSeq", NULL };
    const char  *content[] = { "last", "content", NULL };
    const char  *send_time[] = { "last", "sendTime", NULL };
    const char  *last[] = { "last", NULL };
    const char  *owner[] = { "ownerUserID", NULL };

    printf("== CONV_LOAD\n");

    list = load("u1", 100, &rc, &text);
    CHECK(rc == NGX_OK && list != NULL);

    if (list) {
        /* u1: si_u1_u2, sg_g1, sg_g2, sg_g3; not u2's record */
        CHECK(YAJL_GET_ARRAY(list)->len == 4);

        r = record(list, "si_u1_u2");
        CHECK(r != NULL);
        v = yajl_tree_get(r, owner, yajl_t_string);
        CHECK(str_is(v, "u1"));
        v = yajl_tree_get(r, max_seq, yajl_t_number);
        CHECK(v && YAJL_IS_INTEGER(v) && YAJL_GET_INTEGER(v) == 9);
        v = yajl_tree_get(r, content, yajl_t_string);
        CHECK(str_is(v, "nine"));
        v = yajl_tree_get(r, send_time, yajl_t_number);
        CHECK(v && YAJL_IS_INTEGER(v) && YAJL_GET_INTEGER(v) == 9000);

        /* no messages; its own maxSeq is replaced, not repeated */
        r = record(list, "sg_g1");
        CHECK(r != NULL);
        v = yajl_tree_get(r, max_seq, yajl_t_number);
        CHECK(v && YAJL_IS_INTEGER(v) && YAJL_GET_INTEGER(v) == 0);
        v = yajl_tree_get(r, last, yajl_t_null);
        CHECK(v != NULL);
        CHECK(strstr(text, "77") == NULL);

        yajl_tree_free(list);
    }

    free(text);

    list = load("u1", 1, &rc, &text);
    CHECK(rc == NGX_OK && list && YAJL_GET_ARRAY(list)->len == 1);
    yajl_tree_free(list);
    free(text);

    list = load("nobody", 100, &rc, &text);
    CHECK(rc == NGX_OK && strcmp(text, "[]") == 0);
    yajl_tree_free(list);
    free(text);

    list = load("u1", 0, &rc, &text);
    CHECK(rc == NGX_OK && strcmp(text, "[]") == 0);
    yajl_tree_free(list);
    free(text);
}


static void
test_int64_text(void)
{
    char       *text;
    yajl_val    list;
    ngx_int_t   rc;

    static const char  *rec[] = {
        "{\"_id\":\"u3:si_u3_u4\",\"ownerUserID\":\"u3\","
        "\"conversationID\":\"si_u3_u4\",\"rev\":5000000000,"
        "\"updateTime\":1700000000123}"
    };

    ngx_http_im_mongo_item_t  it[1];
    ngx_http_im_mongo_task_t  *t;

    printf("== int64 as plain numbers\n");

    save(rec, 1, &rc, it);
    CHECK(rc == NGX_OK && !it[0].failed);

    t = task(NGX_HTTP_IM_MONGO_INSERT, 1);
    item_msg(t, 0, "si_u3_u4", 4, 1700000000456LL, "big");
    CHECK(run(t) == NGX_OK);
    ngx_http_im_mongo_task_free(t);

    list = load("u3", 10, &rc, &text);
    CHECK(rc == NGX_OK && list != NULL);
    CHECK(strstr(text, "\"rev\" : 5000000000") != NULL);
    CHECK(strstr(text, "\"updateTime\" : 1700000000123") != NULL);
    CHECK(strstr(text, "\"sendTime\" : 1700000000456") != NULL);
    CHECK(strstr(text, "\"maxSeq\" : 4") != NULL);
    CHECK(strstr(text, "$numberLong") == NULL);
    printf("  %s\n", text);

    yajl_tree_free(list);
    free(text);
}


static void
test_msg_purge(void)
{
    bson_t                    *doc;
    ngx_int_t                  rc;
    ngx_http_im_mongo_task_t  *t;

    printf("== MSG_PURGE\n");

    /* si_u1_u2: 1 (1000), 2 (2000), 3 (1.7e12), 9 (9000) */
    t = task(NGX_HTTP_IM_MONGO_MSG_PURGE, 2);
    item_conv(t, 0, "si_u1_u2");
    item_conv(t, 1, "sg_empty");
    t->value = 2500;
    rc = run(t);
    CHECK(rc == NGX_OK);
    CHECK(t->value == 2);
    CHECK(!t->items[0].failed && !t->items[1].failed);
    ngx_http_im_mongo_task_free(t);

    doc = get("msg", "si_u1_u2:1");
    CHECK(doc == NULL);
    if (doc) {
        bson_destroy(doc);
    }

    doc = get("msg", "si_u1_u2:9");
    CHECK(doc != NULL);
    if (doc) {
        bson_destroy(doc);
    }

    t = task(NGX_HTTP_IM_MONGO_MSG_PURGE, 1);
    item_conv(t, 0, "si_u1_u2");
    t->value = 1700000000001LL;
    rc = run(t);
    CHECK(rc == NGX_OK);
    CHECK(t->value == 2);
    ngx_http_im_mongo_task_free(t);

    doc = get("msg", "si_u1_u2:3");
    CHECK(doc == NULL);
    if (doc) {
        bson_destroy(doc);
    }
}


static void
test_cancelled(void)
{
    ngx_http_im_mongo_task_t  *t;

    printf("== a cancelled task\n");

    t = task(NGX_HTTP_IM_MONGO_CONV_LOAD, 0);
    in(t, "u1");
    t->value = 10;
    t->cancelled = 1;
    CHECK(run(t) == NGX_DECLINED);
    ngx_http_im_mongo_task_free(t);

    t = task(NGX_HTTP_IM_MONGO_MSG_PURGE, 1);
    item_conv(t, 0, "si_u3_u4");
    t->value = 1LL << 62;
    t->cancelled = 1;
    CHECK(run(t) == NGX_DECLINED);
    CHECK(t->value == 1LL << 62);
    ngx_http_im_mongo_task_free(t);
}


/* no server: every op fails as a whole, with a reason */
static void
test_down(void)
{
    ngx_uint_t                 i;
    mongoc_uri_t              *uri;
    mongoc_client_pool_t      *up;
    ngx_http_im_mongo_task_t  *t;

    static const ngx_uint_t  ops[] = {
        NGX_HTTP_IM_MONGO_CONV_SAVE, NGX_HTTP_IM_MONGO_CONV_LOAD,
        NGX_HTTP_IM_MONGO_MSG_REPLACE, NGX_HTTP_IM_MONGO_MSG_PURGE
    };

    printf("== no server\n");

    uri = mongoc_uri_new("mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=300"
                         "&connectTimeoutMS=300");
    up = mongoc_client_pool_new(uri);
    mongoc_client_pool_set_error_api(up, MONGOC_ERROR_API_VERSION_2);
    mongoc_uri_destroy(uri);

    /* past the indexes, which ran already, to the ops themselves */
    for (i = 0; i < CHECK_N(ops); i++) {
        mongoc_client_t  *client;

        t = task(ops[i], 1);
        item_msg(t, 0, "si_u1_u2", 20, 20, "x");
        if (ops[i] == NGX_HTTP_IM_MONGO_CONV_SAVE) {
            item_json(t, 0, "{\"_id\":\"u1:x\",\"rev\":1}");
        }
        t->value = 10;

        client = mongoc_client_pool_pop(up);
        CHECK_CASE(ngx_http_im_mongo_run(t, client) == NGX_ERROR,
                   t->err);
        CHECK(t->err[0] != '\0' && !t->items[0].failed);
        printf("  %s\n", t->err);
        mongoc_client_pool_push(up, client);
        ngx_http_im_mongo_task_free(t);
    }

    mongoc_client_pool_destroy(up);
}


/* a task's "out" as a C string (freed by the caller); frees the task */
static char *
out_text(ngx_http_im_mongo_task_t *t)
{
    char  *text;

    text = check_alloc(t->out.len + 1);
    memcpy(text, t->out.data ? (char *) t->out.data : "", t->out.len);
    text[t->out.len] = '\0';
    ngx_http_im_mongo_task_free(t);

    return text;
}


/* USER_INSERT, USER_LIST and USER_LOAD (the user kind of the store) */
static void
test_users(void)
{
    char                       err[128], *text;
    yajl_val                   v, users;
    ngx_int_t                  rc;
    ngx_http_im_mongo_task_t  *t;

    static const char  *first[] = {
        "{\"_id\":\"p:ua\",\"ownerUserID\":\"ua\",\"kind\":\"p\","
        "\"rev\":1,\"deleted\":false,\"doc\":{\"nickname\":\"Ann (a)\"}}",
        "{\"_id\":\"p:ub\",\"ownerUserID\":\"ub\",\"kind\":\"p\","
        "\"rev\":1,\"deleted\":false,\"doc\":{\"nickname\":\"Bob\"}}",
        "{\"_id\":\"f:ua:ub\",\"ownerUserID\":\"ua\",\"kind\":\"f\","
        "\"rev\":1,\"deleted\":false,\"doc\":{\"friendUserID\":\"ub\"}}"
    };

    static const char  *again[] = {
        "{\"_id\":\"p:uc\",\"ownerUserID\":\"uc\",\"kind\":\"p\","
        "\"rev\":1,\"deleted\":false,\"doc\":{\"nickname\":\"Cy\"}}",
        /* registered already: a duplicate amid the batch */
        "{\"_id\":\"p:ua\",\"ownerUserID\":\"ua\",\"kind\":\"p\","
        "\"rev\":1,\"deleted\":false,\"doc\":{\"nickname\":\"x\"}}",
        "{not json"
    };

    printf("== USER_INSERT, USER_LIST, USER_LOAD\n");

    t = task(NGX_HTTP_IM_MONGO_USER_INSERT, 3);
    item_json(t, 0, first[0]);
    item_json(t, 1, first[1]);
    item_json(t, 2, first[2]);
    CHECK(run(t) == NGX_OK);
    CHECK(!t->items[0].duplicate && !t->items[1].duplicate
          && !t->items[2].failed);
    ngx_http_im_mongo_task_free(t);
    CHECK(has_index("user", "owner"));

    t = task(NGX_HTTP_IM_MONGO_USER_INSERT, 3);
    item_json(t, 0, again[0]);
    item_json(t, 1, again[1]);
    item_json(t, 2, again[2]);
    CHECK(run(t) == NGX_OK);
    CHECK(!t->items[0].duplicate && !t->items[0].failed);
    CHECK(t->items[1].duplicate && t->items[2].failed);
    ngx_http_im_mongo_task_free(t);

    /* a nickname is a literal, matched anywhere, in any case */
    t = task(NGX_HTTP_IM_MONGO_USER_LIST, 0);
    in(t, "nick\n(A)");
    t->value = 0;
    t->stored = 10;
    rc = run(t);
    text = out_text(t);
    CHECK(rc == NGX_OK);
    v = yajl_tree_parse(text, err, sizeof(err));
    users = v ? yajl_tree_get(v, (const char *[]) { "users", NULL },
                              yajl_t_array) : NULL;
    CHECK(users && users->u.array.len == 1
          && strstr(text, "\"p:ua\"") != NULL);
    CHECK(v && strstr(text, "{\"total\":1,") == text);
    yajl_tree_free(v);
    free(text);

    t = task(NGX_HTTP_IM_MONGO_USER_LIST, 0);
    in(t, "\n");
    t->value = 1;
    t->stored = 1;
    rc = run(t);
    text = out_text(t);
    CHECK(rc == NGX_OK && strstr(text, "{\"total\":3,") == text
          && strstr(text, "\"p:ub\"") != NULL);
    free(text);

    /* a user's documents: its profile and its friend */
    t = task(NGX_HTTP_IM_MONGO_USER_LOAD, 0);
    in(t, "ua");
    t->value = 100;
    rc = run(t);
    text = out_text(t);
    v = yajl_tree_parse(text, err, sizeof(err));
    CHECK(rc == NGX_OK && v && YAJL_IS_ARRAY(v) && v->u.array.len == 2);
    yajl_tree_free(v);
    free(text);
}


int
main(int argc, char **argv)
{
    const char      *uri_text;
    bson_error_t     error;
    mongoc_uri_t    *uri;
    mongoc_client_t *client;

    uri_text = argc > 1 ? argv[1] : getenv("IM_MONGO_URI");
    if (uri_text == NULL) {
        fprintf(stderr, "usage: %s mongodb://HOST:PORT/\n", argv[0]);
        return 2;
    }

    test_log.log_level = NGX_LOG_DEBUG;

    mongoc_init();

    uri = mongoc_uri_new_with_error(uri_text, &error);
    if (uri == NULL) {
        fprintf(stderr, "%s\n", error.message);
        return 2;
    }

    ngx_http_im_mongo_uri_defaults(uri);
    pool = mongoc_client_pool_new(uri);
    mongoc_client_pool_set_error_api(pool, MONGOC_ERROR_API_VERSION_2);
    mongoc_uri_destroy(uri);

    client = mongoc_client_pool_pop(pool);
    db = mongoc_client_get_database(client, DB);
    (void) mongoc_database_drop(db, NULL);

    test_conv_save();
    test_insert_and_replace();
    test_conv_load();
    test_users();
    test_int64_text();
    test_msg_purge();
    test_cancelled();
    test_down();

    (void) mongoc_database_drop(db, NULL);
    mongoc_database_destroy(db);
    mongoc_client_pool_push(pool, client);
    mongoc_client_pool_destroy(pool);
    mongoc_cleanup();

    return check_done();
}
