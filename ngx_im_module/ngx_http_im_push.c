
/*
 * ngx_im: offline-push jobs for group messages, off the send path.
 *
 * A group message is acknowledged once it is stored and published; its
 * offline members' jobs come later, from this worker's queue: a page of
 * members (NGX_HTTP_IM_GPUSH_PAGE) at a time, their presence, then one
 * job (docs/api.md, im:push) per member with no session, except the
 * sender; conv.lua's badge leaves out members whose recvMsgOpt wants no
 * offline push.
 *
 * That work grows with the group, so it is paced: one page in flight per
 * worker, and after each page a pause in proportion to the members it
 * checked and the jobs it made (NGX_HTTP_IM_GPUSH_MEMBERS and _JOBS per
 * second), so a 100,000-member group never takes Redis from everyone
 * else.  And it is shared: a message queued for a group whose earlier
 * message has not started yet takes that message's place (one job per
 * offline member for the newest, as a phone shows the newest anyway), so
 * a busy group costs a pass over its members per pass, not per message.
 *
 * The queue is bounded (NGX_HTTP_IM_GPUSH_QUEUE messages): past it a
 * message's jobs are dropped, counted and logged.  Like every push this
 * is best effort: a worker that stops loses its queue, and the members
 * still find the messages by seq.
 */


#include "ngx_http_im_module.h"
#include "ngx_http_im_group.h"


#define NGX_HTTP_IM_GPUSH_QUEUE   1024
#define NGX_HTTP_IM_GPUSH_PAGE    200
#define NGX_HTTP_IM_GPUSH_TICK    10       /* ms between pages, at least */
#define NGX_HTTP_IM_GPUSH_MEMBERS 20000    /* presence checks a second */
#define NGX_HTTP_IM_GPUSH_JOBS    2000     /* jobs a second */


typedef struct {
    ngx_queue_t                link;
    ngx_http_im_store_job_t    job;
    ngx_str_t                  gid;
    ngx_uint_t                 next;       /* the next member's rank */
    ngx_uint_t                 started;    /* a page went out */
} ngx_http_im_gpush_t;


static void ngx_http_im_gpush_tick(ngx_event_t *ev);
static void ngx_http_im_gpush_paged(void *data, ngx_int_t err,
    ngx_str_t *ids, ngx_uint_t n);
static void ngx_http_im_gpush_online(void *data, ngx_int_t err,
    ngx_http_im_store_online_t *users, ngx_uint_t n);
static void ngx_http_im_gpush_step(ngx_http_im_gpush_t *gp, ngx_uint_t n);
static void ngx_http_im_gpush_free(ngx_http_im_gpush_t *gp);


static ngx_queue_t   ngx_http_im_gpush_queue;
static ngx_uint_t    ngx_http_im_gpush_queued;
static ngx_uint_t    ngx_http_im_gpush_busy;
static ngx_event_t   ngx_http_im_gpush_timer;
static ngx_str_t    *ngx_http_im_gpush_ids;   /* the page in flight */
static ngx_uint_t    ngx_http_im_gpush_jobs;  /* made by the page */
static ngx_uint_t    ngx_http_im_gpush_checked;


/* queues the jobs of a group message (job->recv_id is not used) */
void
ngx_http_im_push_group(ngx_http_im_store_job_t *job, ngx_str_t *gid)
{
    u_char               *p;
    size_t                size;
    ngx_queue_t          *q;
    ngx_http_im_gpush_t  *gp, *old;

    if (ngx_http_im_gpush_timer.handler == NULL) {
        ngx_queue_init(&ngx_http_im_gpush_queue);
        ngx_http_im_gpush_timer.handler = ngx_http_im_gpush_tick;
        ngx_http_im_gpush_timer.log = ngx_cycle->log;
        ngx_http_im_gpush_timer.cancelable = 1;
    }

    /* an earlier message of the group that has not started yet */
    old = NULL;

    for (q = ngx_queue_head(&ngx_http_im_gpush_queue);
         q != ngx_queue_sentinel(&ngx_http_im_gpush_queue);
         q = ngx_queue_next(q))
    {
        gp = ngx_queue_data(q, ngx_http_im_gpush_t, link);

        if (!gp->started && gp->gid.len == gid->len
            && ngx_strncmp(gp->gid.data, gid->data, gid->len) == 0)
        {
            old = gp;
            break;
        }
    }

    if (old == NULL && ngx_http_im_gpush_queued >= NGX_HTTP_IM_GPUSH_QUEUE)
    {
        ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                      "im: group offline pushes are %d messages behind: "
                      "the jobs of seq %L of group \"%V\" are dropped",
                      NGX_HTTP_IM_GPUSH_QUEUE, job->seq, gid);
        ngx_http_im_metric_inc(NGX_HTTP_IM_M_PUSH_DROPPED);
        return;
    }

    size = gid->len + job->send_id.len + job->conv.len
           + job->server_msg_id.len + job->push_class.len + job->title.len
           + job->desc.len + job->ex.len;

    gp = ngx_alloc(sizeof(ngx_http_im_gpush_t) + size, ngx_cycle->log);
    if (gp == NULL) {
        return;
    }

    gp->job = *job;
    gp->next = 0;
    gp->started = 0;
    p = (u_char *) (gp + 1);

#define ngx_http_im_gpush_copy(dst, src)                                    \
    (dst).data = p; (dst).len = (src)->len;                                 \
    p = ngx_cpymem(p, (src)->data, (src)->len)

    ngx_http_im_gpush_copy(gp->gid, gid);
    ngx_http_im_gpush_copy(gp->job.send_id, &job->send_id);
    ngx_http_im_gpush_copy(gp->job.conv, &job->conv);
    ngx_http_im_gpush_copy(gp->job.server_msg_id, &job->server_msg_id);
    ngx_http_im_gpush_copy(gp->job.push_class, &job->push_class);
    ngx_http_im_gpush_copy(gp->job.title, &job->title);
    ngx_http_im_gpush_copy(gp->job.desc, &job->desc);
    ngx_http_im_gpush_copy(gp->job.ex, &job->ex);

#undef ngx_http_im_gpush_copy

    if (old) {
        /* the newest message takes the older one's place */
        ngx_queue_insert_after(&old->link, &gp->link);
        ngx_queue_remove(&old->link);
        ngx_free(old);

    } else {
        ngx_queue_insert_tail(&ngx_http_im_gpush_queue, &gp->link);
        ngx_http_im_gpush_queued++;
    }

    if (!ngx_http_im_gpush_busy && !ngx_http_im_gpush_timer.timer_set) {
        ngx_add_timer(&ngx_http_im_gpush_timer, 1);
    }
}


/* the next page of the oldest message */
static void
ngx_http_im_gpush_tick(ngx_event_t *ev)
{
    ngx_http_im_gpush_t  *gp;

    if (ngx_http_im_gpush_busy || ngx_queue_empty(&ngx_http_im_gpush_queue))
    {
        return;
    }

    gp = ngx_queue_data(ngx_queue_head(&ngx_http_im_gpush_queue),
                        ngx_http_im_gpush_t, link);

    gp->started = 1;

    if (ngx_http_im_store_group_page(&gp->gid, gp->next,
                                     NGX_HTTP_IM_GPUSH_PAGE,
                                     ngx_http_im_gpush_paged, gp)
        != NGX_OK)
    {
        /* Redis is busy or down: try again later */
        if (!ngx_exiting) {
            ngx_add_timer(&ngx_http_im_gpush_timer, 100);
        }
        return;
    }

    ngx_http_im_gpush_busy = 1;
}


static void
ngx_http_im_gpush_paged(void *data, ngx_int_t err, ngx_str_t *ids,
    ngx_uint_t n)
{
    ngx_http_im_gpush_t  *gp = data;

    u_char      *p;
    size_t       size;
    ngx_uint_t   i;

    if (err || n == 0) {
        ngx_http_im_gpush_step(gp, 0);
        return;
    }

    /* the IDs outlive this reply: the presence call holds them */
    size = n * sizeof(ngx_str_t);
    for (i = 0; i < n; i++) {
        size += ids[i].len;
    }

    ngx_http_im_gpush_ids = ngx_alloc(size, ngx_cycle->log);
    if (ngx_http_im_gpush_ids == NULL) {
        ngx_http_im_gpush_step(gp, 0);
        return;
    }

    p = (u_char *) (ngx_http_im_gpush_ids + n);

    for (i = 0; i < n; i++) {
        ngx_http_im_gpush_ids[i].data = p;
        ngx_http_im_gpush_ids[i].len = ids[i].len;
        p = ngx_cpymem(p, ids[i].data, ids[i].len);
    }

    gp->next += n;
    ngx_http_im_gpush_checked = n;

    if (ngx_http_im_store_users_online(ngx_http_im_gpush_ids, n,
                                       ngx_http_im_gpush_online, gp)
        != NGX_OK)
    {
        ngx_free(ngx_http_im_gpush_ids);
        ngx_http_im_gpush_ids = NULL;
        ngx_http_im_gpush_step(gp, 0);
        return;
    }

    if (n < NGX_HTTP_IM_GPUSH_PAGE) {
        /* the last page: nothing comes after it */
        gp->next = (ngx_uint_t) -1;
    }
}


/* a job for each member with no session, but the sender */
static void
ngx_http_im_gpush_online(void *data, ngx_int_t err,
    ngx_http_im_store_online_t *users, ngx_uint_t n)
{
    ngx_http_im_gpush_t  *gp = data;

    ngx_uint_t  i;

    for (i = 0; err == 0 && i < n; i++) {
        if (users[i].nplatforms
            || (users[i].user_id.len == gp->job.send_id.len
                && ngx_strncmp(users[i].user_id.data, gp->job.send_id.data,
                               gp->job.send_id.len) == 0))
        {
            continue;
        }

        gp->job.recv_id = users[i].user_id;

        if (ngx_http_im_store_push_job(&gp->job) == NGX_OK) {
            ngx_http_im_metric_inc(NGX_HTTP_IM_M_PUSH_JOBS);
            ngx_http_im_gpush_jobs++;
        }
    }

    ngx_free(ngx_http_im_gpush_ids);
    ngx_http_im_gpush_ids = NULL;

    ngx_http_im_gpush_step(gp, gp->next != (ngx_uint_t) -1);
}


/* after a page: the message's next page (more), or the next message */
static void
ngx_http_im_gpush_step(ngx_http_im_gpush_t *gp, ngx_uint_t more)
{
    ngx_msec_t  pause;

    ngx_http_im_gpush_busy = 0;

    if (!more) {
        ngx_http_im_gpush_free(gp);
    }

    /* the pace: the page's presence checks and jobs, at their rates */
    pause = ngx_max(NGX_HTTP_IM_GPUSH_TICK,
                    ngx_http_im_gpush_checked * 1000
                    / NGX_HTTP_IM_GPUSH_MEMBERS
                    + ngx_http_im_gpush_jobs * 1000 / NGX_HTTP_IM_GPUSH_JOBS);
    ngx_http_im_gpush_checked = 0;
    ngx_http_im_gpush_jobs = 0;

    if (!ngx_queue_empty(&ngx_http_im_gpush_queue) && !ngx_exiting
        && !ngx_http_im_gpush_timer.timer_set)
    {
        ngx_add_timer(&ngx_http_im_gpush_timer, pause);
    }
}


static void
ngx_http_im_gpush_free(ngx_http_im_gpush_t *gp)
{
    ngx_queue_remove(&gp->link);
    ngx_http_im_gpush_queued--;
    ngx_free(gp);
}
