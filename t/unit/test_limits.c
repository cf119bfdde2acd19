
/*
 * The limits of the layers agree with each other (issue 13): each check
 * is a relation another part of the module relies on.
 */


#include <stdio.h>
#include <string.h>

#include "ngx_http_im_limits.h"
#include "ngx_http_im_token.h"
#include "ngx_http_im_json.h"
#include "ngx_http_im_content.h"
#include "ngx_http_im_pb.h"

#include "check.h"


static void
test_messages(void)
{
    /* a message with everything at its bound, in its JSON envelope, fits
     * a frame and a WebSocket message (escaping aside: content is JSON
     * text of the client's, sent as a string) */
    CHECK(NGX_HTTP_IM_MAX_CONTENT + NGX_HTTP_IM_MSG_EXTRA + 4096
          <= NGX_HTTP_IM_WS_MAX_MESSAGE);
    CHECK(NGX_HTTP_IM_WS_MAX_MESSAGE <= NGX_HTTP_IM_WS_MAX_FRAME
          || NGX_HTTP_IM_WS_MAX_FRAME >= 16 * 1024);

    /* a frame's protobuf fits the transcoder's input */
    CHECK(NGX_HTTP_IM_WS_MAX_MESSAGE <= NGX_HTTP_IM_PB_MAX_INPUT);

    /* the @ list: the same bound in the codec and the content check */
    CHECK(NGX_HTTP_IM_MAX_AT == NGX_HTTP_IM_CONTENT_MAX_AT);
    CHECK(NGX_HTTP_IM_MAX_AT <= NGX_HTTP_IM_MAX_LIST);

    /* a REST body holds the largest legal call: a batch send to
     * NGX_HTTP_IM_MAX_LIST recipients of the longest IDs, with a message
     * at its bounds */
    CHECK((size_t) NGX_HTTP_IM_MAX_LIST * (NGX_HTTP_IM_UID_MAX + 3)
          + NGX_HTTP_IM_MAX_CONTENT + NGX_HTTP_IM_MSG_EXTRA + 4096
          <= NGX_HTTP_IM_API_MAX_BODY);
}


static void
test_answers(void)
{
    /* GetNewestSeq for the most conversations, protobuf or JSON, fits
     * the default send queue, with a request of the largest size */
    CHECK(NGX_HTTP_IM_PB_NEWEST_SIZE(NGX_HTTP_IM_MAX_CONVS,
                                     NGX_HTTP_IM_WS_MAX_MESSAGE)
          <= NGX_HTTP_IM_WS_SEND_QUEUE);

    /* and the protobuf maps may hold that many entries */
    CHECK(NGX_HTTP_IM_PB_MAX_REPEATED >= NGX_HTTP_IM_MAX_CONVS);

    /* a conversation ID is "si_<uid>_<uid>" */
    CHECK(NGX_HTTP_IM_PB_CONV_MAX == 2 * NGX_HTTP_IM_UID_MAX + 4);

    /* a pull answer takes at most half the queue, and its messages are
     * bounded per request as per range */
    CHECK(NGX_HTTP_IM_PULL_BUDGET <= NGX_HTTP_IM_WS_SEND_QUEUE / 2);
    CHECK(NGX_HTTP_IM_PULL_MAX <= NGX_HTTP_IM_PULL_MAX_BOUND);
    CHECK(NGX_HTTP_IM_PULL_MAX_BOUND <= NGX_HTTP_IM_MAX_SEQS);

    /* one message always fits a pull answer */
    CHECK(NGX_HTTP_IM_MAX_CONTENT + NGX_HTTP_IM_MSG_EXTRA + 4096
          <= NGX_HTTP_IM_PULL_BUDGET);

    /* the protobuf transcoder holds the largest JSON answer */
    CHECK(NGX_HTTP_IM_WS_SEND_QUEUE <= NGX_HTTP_IM_PB_MAX_JSON);
    CHECK(NGX_HTTP_IM_CONV_BUDGET <= NGX_HTTP_IM_PB_MAX_JSON);
}


static void
test_rates(void)
{
    /* a burst is at least one second's worth, and a client syncing after
     * a reconnect (GetNewestSeq, 1006, a pull per 100 conversations of
     * the most) fits one burst */
    CHECK(NGX_HTTP_IM_WS_BURST >= NGX_HTTP_IM_WS_RATE);
    CHECK(NGX_HTTP_IM_API_BURST >= NGX_HTTP_IM_API_RATE);
    CHECK(2 + NGX_HTTP_IM_MAX_CONVS / 100 <= NGX_HTTP_IM_WS_BURST);

    /* the in-flight bound lets four pulls run at once */
    CHECK(NGX_HTTP_IM_WS_MAX_INFLIGHT % 4 == 0);
}


int
main(void)
{
    test_messages();
    test_answers();
    test_rates();

    return check_done();
}
