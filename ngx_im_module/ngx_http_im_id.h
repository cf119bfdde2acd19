
/*
 * ngx_im: identifiers and conversation IDs.  Pure C, no nginx types.
 */


#ifndef _NGX_HTTP_IM_ID_H_INCLUDED_
#define _NGX_HTTP_IM_ID_H_INCLUDED_


#include <stddef.h>


#define NGX_HTTP_IM_ID_LEN  32


#include <stdint.h>


/*
 * 32 lowercase hex digits from a random per-process prefix and a counter:
 * unique without drawing randomness per message.
 */
void ngx_http_im_id_format(uint64_t prefix, uint64_t counter, char *out);

/* 64 random bits; returns 0 on failure */
int ngx_http_im_id_random(uint64_t *v);

/*
 * Writes the single-chat conversation ID "si_<a>_<b>", with a and b in
 * byte order; out must hold a_len + b_len + 4 bytes.  Returns its length.
 */
size_t ngx_http_im_conv_single(const char *a, size_t a_len, const char *b,
    size_t b_len, char *out);

/* "sn_<sendID>_<recvID>" */
size_t ngx_http_im_conv_notification(const char *send, size_t send_len,
    const char *recv, size_t recv_len, char *out);

/*
 * 1 when uid is one of the two users of a "si_" or "sn_" conversation and
 * both sides are valid user IDs (so the ID is at most 132 bytes).  User
 * IDs cannot contain '_', so the split is unambiguous.
 */
/* 1 for "sg_<valid group ID>": membership is the group's to tell */
int ngx_http_im_conv_group(const char *conv, size_t conv_len);

int ngx_http_im_conv_member(const char *conv, size_t conv_len,
    const char *uid, size_t uid_len);

/*
 * The other user of a "si_" or "sn_" conversation of uid, written with a
 * NUL to out (NGX_HTTP_IM_UID_MAX + 1 bytes).  Returns its length, or 0
 * when uid is not a member.  A conversation with oneself: uid.
 */
size_t ngx_http_im_conv_peer(const char *conv, size_t conv_len,
    const char *uid, size_t uid_len, char *out);


#endif /* _NGX_HTTP_IM_ID_H_INCLUDED_ */
