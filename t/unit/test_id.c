
/*
 * Unit tests of ngx_http_im_id.c: message IDs and conversation IDs.
 */


#include <stdint.h>

#include "ngx_http_im_id.h"
#include "check.h"


static void
test_single(void)
{
    size_t  n;
    char    out[256];

    n = ngx_http_im_conv_single("bob", 3, "alice", 5, out);
    CHECK(n == 12 && memcmp(out, "si_alice_bob", 12) == 0);

    n = ngx_http_im_conv_single("alice", 5, "bob", 3, out);
    CHECK(n == 12 && memcmp(out, "si_alice_bob", 12) == 0);

    /* a prefix sorts first; byte order, not locale order */
    n = ngx_http_im_conv_single("ab", 2, "a", 1, out);
    CHECK(n == 7 && memcmp(out, "si_a_ab", 7) == 0);
    n = ngx_http_im_conv_single("a", 1, "B", 1, out);
    CHECK(n == 6 && memcmp(out, "si_B_a", 6) == 0);

    n = ngx_http_im_conv_notification("sys", 3, "bob", 3, out);
    CHECK(n == 10 && memcmp(out, "sn_sys_bob", 10) == 0);
}


static void
test_member(void)
{
    size_t  i;
    char    big[400];

    static const struct {
        const char  *conv;
        const char  *uid;
        int          member;
    } cases[] = {
        { "si_alice_bob", "alice", 1 },
        { "si_alice_bob", "bob", 1 },
        { "si_alice_bob", "carol", 0 },
        { "si_alice_bob", "ali", 0 },
        { "si_alice_bob", "bo", 0 },
        { "sn_sys_bob", "bob", 1 },
        { "sn_sys_bob", "sys", 1 },
        { "sg_group1", "alice", 0 },
        { "si_alice_bob_x", "alice", 0 },
        { "si_alice", "alice", 0 },
        { "si__alice", "alice", 0 },
        { "si_alice_", "alice", 0 },
        { "xx_alice_bob", "alice", 0 },
        { "si_alice_b:b", "alice", 0 },
        { "", "alice", 0 },
    };

    for (i = 0; i < CHECK_N(cases); i++) {
        CHECK_CASE(ngx_http_im_conv_member(cases[i].conv,
                                           strlen(cases[i].conv),
                                           cases[i].uid,
                                           strlen(cases[i].uid))
                   == cases[i].member, cases[i].conv);
    }

    /* the other side must be a user ID too: this bounds the length */
    memcpy(big, "si_alice_", 9);
    memset(big + 9, 'A', 65);
    CHECK(!ngx_http_im_conv_member(big, 9 + 65, "alice", 5));
    CHECK(ngx_http_im_conv_member(big, 9 + 64, "alice", 5));
    memset(big + 9, 'A', 300);
    CHECK(!ngx_http_im_conv_member(big, 9 + 300, "alice", 5));
}


static void
test_ids(void)
{
    char      a[33], b[33];
    uint64_t  r1, r2;

    a[32] = b[32] = '\0';

    ngx_http_im_id_format(0x0123456789abcdefULL, 1, a);
    CHECK(strcmp(a, "0123456789abcdef0000000000000001") == 0);

    ngx_http_im_id_format(0x0123456789abcdefULL, 2, b);
    CHECK(strcmp(a, b) != 0);

    ngx_http_im_id_format(UINT64_MAX, UINT64_MAX, a);
    CHECK(strcmp(a, "ffffffffffffffffffffffffffffffff") == 0);

    CHECK(ngx_http_im_id_random(&r1) && ngx_http_im_id_random(&r2));
    CHECK(r1 != r2);
}


static void
test_peer(void)
{
    char  out[64 + 1];

    CHECK(ngx_http_im_conv_peer("si_alice_bob", 12, "alice", 5, out) == 3);
    CHECK(strcmp(out, "bob") == 0);
    CHECK(ngx_http_im_conv_peer("si_alice_bob", 12, "bob", 3, out) == 5);
    CHECK(strcmp(out, "alice") == 0);
    CHECK(ngx_http_im_conv_peer("sn_sys_bob", 10, "bob", 3, out) == 3);
    CHECK(strcmp(out, "sys") == 0);
    CHECK(ngx_http_im_conv_peer("si_bob_bob", 10, "bob", 3, out) == 3);
    CHECK(strcmp(out, "bob") == 0);

    /* not a member, or not a conversation of two users */
    CHECK(ngx_http_im_conv_peer("si_alice_bob", 12, "carol", 5, out) == 0);
    CHECK(ngx_http_im_conv_peer("si_alice_bob", 12, "ali", 3, out) == 0);
    CHECK(ngx_http_im_conv_peer("sg_group1", 9, "group1", 6, out) == 0);
    CHECK(ngx_http_im_conv_peer("si_a_b_c", 8, "a", 1, out) == 0);
    CHECK(ngx_http_im_conv_peer("si_", 3, "a", 1, out) == 0);
}


int
main(void)
{
    test_single();
    test_member();
    test_ids();
    test_peer();

    return check_done();
}
