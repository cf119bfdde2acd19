
/*
 * ngx_im: a server frame (2001, 2002, 2005) for many sessions, in each
 * session's encoding: JSON text, protobuf, or the JS SDK's JSON with
 * base64 protobuf data.  The JSON is written once; the other encodings
 * on first need, once.
 */


#include "ngx_http_im_module.h"
#include "ngx_http_im_pb.h"


static void ngx_http_im_frames_encode(ngx_http_im_frames_t *f,
    ngx_uint_t encoding);
static void ngx_http_im_frames_js_data(ngx_http_im_frames_t *f,
    ngx_str_t *data, ngx_http_im_buf_t *note);


/* the envelope of a server frame with empty operationID and msgIncr;
 * the caller writes the data object, then ngx_http_im_frames_end() */
void
ngx_http_im_frames_begin(ngx_http_im_frames_t *f, long long req_identifier)
{
    ngx_http_im_str_t  empty;

    ngx_memzero(f, sizeof(ngx_http_im_frames_t));

    f->built = 1;
    f->req_identifier = req_identifier;
    ngx_http_im_buf_init(&f->json, 0);
    ngx_http_im_buf_init(&f->pb, 0);
    ngx_http_im_buf_init(&f->js, 0);

    empty.data = "";
    empty.len = 0;

    ngx_http_im_resp_begin(&f->json, req_identifier, empty, empty, 0, "");
    f->head = f->json.len;
}


/* the frame in the session's encoding; the rest of it is never built */
void
ngx_http_im_frames_send(ngx_http_im_session_t *s, ngx_http_im_frames_t *f)
{
    ngx_uint_t  encoding;

    if (f->json.failed) {
        return;
    }

    encoding = ngx_http_im_session_encoding(s);

    switch (encoding) {

    case NGX_HTTP_IM_ENC_JSON:
        s->io->send(s, NGX_HTTP_IM_WS_OP_TEXT, f->json.data, f->json.len);
        return;

    case NGX_HTTP_IM_ENC_PB:
        if (f->pb.len == 0 && !f->pb_failed) {
            ngx_http_im_frames_encode(f, encoding);
        }

        if (!f->pb_failed) {
            s->io->send(s, NGX_HTTP_IM_WS_OP_BINARY, f->pb.data, f->pb.len);
        }

        return;

    default: /* NGX_HTTP_IM_ENC_JS */
        if (f->js.len == 0 && !f->js_failed) {
            ngx_http_im_frames_encode(f, encoding);
        }

        if (!f->js_failed) {
            s->io->send(s, NGX_HTTP_IM_WS_OP_BINARY, f->js.data, f->js.len);
        }
    }
}


static void
ngx_http_im_frames_encode(ngx_http_im_frames_t *f, ngx_uint_t encoding)
{
    int                             rc;
    char                            err[NGX_HTTP_IM_PB_ERRLEN];
    ngx_str_t                       data;
    ngx_http_im_buf_t              *out, note;
    ngx_http_im_str_t               empty, opid;
    ngx_http_im_pb_resp_encode_pt   encode;

    if (encoding == NGX_HTTP_IM_ENC_PB) {
        encode = ngx_http_im_pb_resp_encode;
        out = &f->pb;

    } else {
        encode = ngx_http_im_pb_js_resp_encode;
        out = &f->js;
    }

    empty.data = "";
    empty.len = 0;
    opid = empty;

    /* the data object ends before the envelope's last '}' */
    data.data = f->json.data + f->head;
    data.len = f->json.len - f->head - 1;
    ngx_http_im_buf_init(&note, 0);

    if (encoding == NGX_HTTP_IM_ENC_JS) {
        /* the SDK sends a push's operationID as a REST header */
        opid.data = "im-push";
        opid.len = 7;
        ngx_http_im_frames_js_data(f, &data, &note);
    }

    rc = encode(f->req_identifier, opid, empty, 0, "", data.data, data.len,
                out, err, sizeof(err));

    ngx_http_im_buf_free(&note);

    if (rc == 0) {
        return;
    }

    if (encoding == NGX_HTTP_IM_ENC_PB) {
        f->pb_failed = 1;

    } else {
        f->js_failed = 1;
    }

    ngx_log_error(NGX_LOG_ALERT, ngx_http_im_worker->log, 0,
                  "im: cannot encode a %L push: %s", f->req_identifier, err);
}


/*
 * The JS SDK takes notifications (1201 friend applications, 1501 group
 * changes, 2200 read receipts, ...) only from
 * PushMessages.notificationMsgs; in msgs it would list them as messages
 * of the conversation.  A 2001 of a notification conversation ("n_",
 * where api_conv.c pushes read receipts; "sn_") moves there, and so does
 * one of a notification that was never stored (a group notice told to
 * single users under "sg_", such as the 1503 join application).
 */
static void
ngx_http_im_frames_js_data(ngx_http_im_frames_t *f, ngx_str_t *data,
    ngx_http_im_buf_t *note)
{
    static u_char  msgs[] = "{\"msgs\":{\"";

    if (f->req_identifier != NGX_HTTP_IM_REQ_PUSH
        || data->len < sizeof(msgs) + 2
        || ngx_strncmp(data->data, msgs, sizeof(msgs) - 1) != 0)
    {
        return;
    }

    if (ngx_strncmp(data->data + sizeof(msgs) - 1, "sn_", 3) != 0
        && ngx_strncmp(data->data + sizeof(msgs) - 1, "n_", 2) != 0
        && !ngx_http_im_msg_json_is_note(data->data, data->len))
    {
        return;
    }

    ngx_http_im_buf_str(note, "{\"notificationMsgs\":");
    ngx_http_im_buf_add(note, data->data + 8, data->len - 8);

    if (!note->failed) {
        data->data = note->data;
        data->len = note->len;
    }
}


void
ngx_http_im_frames_free(ngx_http_im_frames_t *f)
{
    if (f->built) {
        ngx_http_im_buf_free(&f->json);
        ngx_http_im_buf_free(&f->pb);
        ngx_http_im_buf_free(&f->js);
    }
}
