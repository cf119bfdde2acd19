
/*
 * ngx_im: the assertion harness of the unit tests in t/unit/.
 *
 * Header-only; each test program includes it once.  CHECK() counts a
 * check and reports a failed one by file, line and condition; CHECK_CASE()
 * adds the name of the case, for checks made over a table.  check_named()
 * counts a check whose failure the caller explains.  check_done() prints
 * the one final line "N passed, N failed" and returns the exit status.
 * check_alloc(), check_realloc() and check_strdup() exit with status 2
 * when memory runs out.
 *
 * A program that includes ngx_http_im_json.h before this file also gets
 * check_parse() and check_buf_is().
 */


#ifndef _NGX_HTTP_IM_CHECK_H_INCLUDED_
#define _NGX_HTTP_IM_CHECK_H_INCLUDED_


#include <stdio.h>
#include <stdlib.h>
#include <string.h>


#define CHECK_N(a)  (sizeof(a) / sizeof((a)[0]))

#define CHECK(cond)                                                         \
    check_at((cond) != 0, __FILE__, __LINE__, #cond, NULL)

#define CHECK_CASE(cond, name)                                              \
    check_at((cond) != 0, __FILE__, __LINE__, #cond, name)


static unsigned  check_passed;
static unsigned  check_failed;


/* counts one check; returns "ok" */

static inline int
check_count(int ok)
{
    if (ok) {
        check_passed++;

    } else {
        check_failed++;
    }

    return ok;
}


/* CHECK(), CHECK_CASE(); "name" may be NULL */

static inline int
check_at(int ok, const char *file, int line, const char *cond,
    const char *name)
{
    if (check_count(ok)) {
        return 1;
    }

    if (name) {
        printf("FAIL %s:%d: %s [%s]\n", file, line, cond, name);

    } else {
        printf("FAIL %s:%d: %s\n", file, line, cond);
    }

    /* a crash later must not lose the line */
    fflush(stdout);

    return 0;
}


/* a check named "name"; "why" says what went wrong if it failed */

static inline int
check_named(int ok, const char *name, const char *why)
{
    if (check_count(ok)) {
        return 1;
    }

    printf("FAIL %s: %s\n", name, why);
    fflush(stdout);

    return 0;
}


/* prints the final line; returns the exit status of main() */

static inline int
check_done(void)
{
    printf("%u passed, %u failed\n", check_passed, check_failed);

    return check_failed ? 1 : 0;
}


/* malloc() that never fails: the test stops instead */

static inline void *
check_alloc(size_t n)
{
    void  *p;

    p = malloc(n ? n : 1);
    if (p == NULL) {
        fprintf(stderr, "out of memory\n");
        exit(2);
    }

    return p;
}


static inline void *
check_realloc(void *p, size_t n)
{
    p = realloc(p, n ? n : 1);
    if (p == NULL) {
        fprintf(stderr, "out of memory\n");
        exit(2);
    }

    return p;
}


static inline char *
check_strdup(const char *s)
{
    size_t   n;
    char    *p;

    n = strlen(s) + 1;
    p = check_alloc(n);

    return memcpy(p, s, n);
}


#ifdef _NGX_HTTP_IM_JSON_H_INCLUDED_

/* the JSON text of a test; NULL, with the error shown, if it is not JSON */

static inline yajl_val
check_parse(const char *json)
{
    char      err[NGX_HTTP_IM_JSON_ERRLEN];
    yajl_val  v;

    v = ngx_http_im_json_parse((const unsigned char *) json, strlen(json),
                               err, sizeof(err));
    if (v == NULL) {
        printf("  bad test JSON: %s: %s\n", err, json);
    }

    return v;
}


/* the buffer holds exactly "s" and has not failed; shows both if not */

static inline int
check_buf_is(const ngx_http_im_buf_t *b, const char *s)
{
    if (b->failed || b->len != strlen(s)
        || (b->len && memcmp(b->data, s, b->len) != 0))
    {
        printf("  got: %.*s\n  exp: %s\n", (int) b->len,
               b->data ? (char *) b->data : "", s);
        return 0;
    }

    return 1;
}

#endif /* _NGX_HTTP_IM_JSON_H_INCLUDED_ */


#endif /* _NGX_HTTP_IM_CHECK_H_INCLUDED_ */
