
/*
 * Unit tests of ngx_http_im_content.c: content rules per contentType,
 * the known set, and offline-push titles.
 */


#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <yajl/yajl_tree.h>

#include "ngx_http_im_json.h"
#include "ngx_http_im_content.h"

#include "check.h"


/* JSON is written with ' for " to stay readable; see content_is() */
#define OK(type, json)        CHECK(content_is(type, json, NULL))
#define BAD(type, json, exp)  CHECK(content_is(type, json, exp))


/*
 * The seed OA notification's "content", verbatim from the admin send_msg
 * example (reference/send_msg_example.json).
 */
static const char  seed_content[] =
    "{\n"
    "    \"notificationName\": \"\xe5\x85\xac\xe6\x96\x87\xe7\xae\xa1"
    "\xe7\x90\x86\",\n"
    "    \"notificationFaceURL\": \"http://www.head1.com\",\n"
    "    \"notificationType\": 1,\n"
    "    \"text\": \"\xe5\xa4\xa7\xe5\xae\xb6\xe5\xa5\xbd,\xe4\xbb\x8a"
    "\xe5\xa4\xa9\xe6\x98\xaf...\",\n"
    "    \"externalUrl\": \"\",\n"
    "    \"mixType\": 0,\n"
    "    \"pictureElem\": {\n"
    "      \"sourcePath\": \"\",\n"
    "      \"sourcePicture\": {\n"
    "        \"uuid\": \"\",\n"
    "        \"type\": \"\",\n"
    "        \"size\": 0,\n"
    "        \"width\": 0,\n"
    "        \"height\": 0,\n"
    "        \"url\": \"\"\n"
    "      },\n"
    "      \"bigPicture\": {\n"
    "        \"uuid\": \"\",\n"
    "        \"type\": \"\",\n"
    "        \"size\": 0,\n"
    "        \"width\": 0,\n"
    "        \"height\": 0,\n"
    "        \"url\": \"\"\n"
    "      },\n"
    "      \"snapshotPicture\": {\n"
    "        \"uuid\": \"\",\n"
    "        \"type\": \"\",\n"
    "        \"size\": 0,\n"
    "        \"width\": 0,\n"
    "        \"height\": 0,\n"
    "        \"url\": \"\"\n"
    "      }\n"
    "    },\n"
    "    \"soundElem\": {\n"
    "      \"uuid\": \"\",\n"
    "      \"soundPath\": \"\",\n"
    "      \"sourceUrl\": \"\",\n"
    "      \"dataSize\": 0,\n"
    "      \"duration\": 0\n"
    "    },\n"
    "    \"videoElem\": {\n"
    "      \"videoPath\": \"\",\n"
    "      \"videoUUID\": \"\",\n"
    "      \"videoUrl\": \"\",\n"
    "      \"videoType\": \"\",\n"
    "      \"videoSize\": 0,\n"
    "      \"duration\": 0,\n"
    "      \"snapshotPath\": \"\",\n"
    "      \"snapshotUUID\": \"\",\n"
    "      \"snapshotSize\": 0,\n"
    "      \"snapshotUrl\": \"\",\n"
    "      \"snapshotWidth\": 0,\n"
    "      \"snapshotHeight\": 0\n"
    "    },\n"
    "    \"fileElem\": {\n"
    "      \"filePath\": \"\",\n"
    "      \"uuid\": \"\",\n"
    "      \"sourceUrl\": \"\",\n"
    "      \"fileName\": \"\",\n"
    "      \"fileSize\": 0\n"
    "    },\n"
    "    \"ex\": \"\"\n"
    "  }";


/*
 * Checks "json" (with ' standing for ") as content of "type".  "exp" NULL:
 * the check must pass; otherwise it must fail with an error text holding
 * "exp" (also with ' for ").
 */

static int
check_is(long long type, yajl_val v, const char *exp, const char *json)
{
    int   rc, ok;
    char  err[NGX_HTTP_IM_CONTENT_ERRLEN];

    memset(err, 'x', sizeof(err));

    rc = ngx_http_im_content_check(type, v, err, sizeof(err));

    if (exp == NULL) {
        ok = (rc == 0 && err[0] == '\0');

    } else {
        ok = (rc == -1 && memchr(err, '\0', sizeof(err)) != NULL
              && strstr(err, exp) != NULL);
    }

    if (!ok) {
        printf("  type %lld, content %s\n  rc %d, err: %s\n  exp: %s\n",
               type, json, rc, rc ? err : "", exp ? exp : "success");
    }

    return ok;
}


static char *
quotes(const char *s)
{
    char  *p, *q;

    p = check_strdup(s);

    for (q = p; *q; q++) {
        if (*q == '\'') {
            *q = '"';
        }
    }

    return p;
}


/* checks "json" (with " as is) as content of "type"; "name" shows it */

static int
text_is(long long type, const char *json, const char *exp, const char *name)
{
    int       ok;
    char     *e;
    yajl_val  v;

    e = exp ? quotes(exp) : NULL;
    v = check_parse(json);

    ok = (v != NULL) && check_is(type, v, e, name);

    yajl_tree_free(v);
    free(e);

    return ok;
}


static int
content_is(long long type, const char *json, const char *exp)
{
    int    ok;
    char  *j;

    j = quotes(json);
    ok = text_is(type, j, exp, j);
    free(j);

    return ok;
}


static void
test_known_and_titles(void)
{
    size_t           i;
    static const struct {
        long long    type;
        const char  *title;
    } known[] = {
        { 101, "[Text]" },
        { 102, "[Picture]" },
        { 103, "[Voice]" },
        { 104, "[Video]" },
        { 105, "[File]" },
        { 106, "[@]" },
        { 107, "[Chat history]" },
        { 108, "[Card]" },
        { 109, "[Location]" },
        { 110, "[Custom]" },
        { 111, "[Revoked]" },
        { 112, "[Read]" },
        { 114, "[Quote]" },
        { 1400, "[Notification]" },
        { 1201, "[Notification]" },
        { 1210, "[Notification]" },
        { 1303, "[Notification]" }
    };
    static const long long  unknown[] = {
        0, -1, 100, 115, 116, 117, 118, 200, 1200, 1211, 1302, 1304, 1399,
        1401, 2200, 1LL << 40
    };

    for (i = 0; i < sizeof(known) / sizeof(known[0]); i++) {
        CHECK(ngx_http_im_content_known(known[i].type) == 1);
        CHECK(strcmp(ngx_http_im_content_title(known[i].type),
                     known[i].title) == 0);
    }

    for (i = 0; i < sizeof(unknown) / sizeof(unknown[0]); i++) {
        CHECK(ngx_http_im_content_known(unknown[i]) == 0);
        CHECK(ngx_http_im_content_title(unknown[i]) != NULL);
    }

    /* other notifications, and everything else */
    CHECK(strcmp(ngx_http_im_content_title(1000), "[Notification]") == 0);
    CHECK(strcmp(ngx_http_im_content_title(1201), "[Notification]") == 0);
    CHECK(strcmp(ngx_http_im_content_title(4999), "[Notification]") == 0);
    CHECK(strcmp(ngx_http_im_content_title(5000), "[New message]") == 0);
    CHECK(strcmp(ngx_http_im_content_title(113), "[Typing]") == 0);
    CHECK(strcmp(ngx_http_im_content_title(116), "[New message]") == 0);
    CHECK(strcmp(ngx_http_im_content_title(-5), "[New message]") == 0);
}


static void
test_generic(void)
{
    char      err[NGX_HTTP_IM_CONTENT_ERRLEN];
    yajl_val  v;

    BAD(116, "{}", "contentType 116 is not supported");
    OK(113, "{}");
    OK(113, "{'msgTips':'typing...'}");
    BAD(113, "{'msgTips':1}", "field \"msgTips\" must be a string");
    BAD(999, "{'text':'x'}", "contentType 999 is not supported");
    BAD(0, "{}", "contentType 0 is not supported");
    BAD(-7, "{}", "contentType -7 is not supported");

    /* the type is checked before the content */
    BAD(999, "[]", "contentType 999 is not supported");

    BAD(101, "[]", "content must be a JSON object for contentType 101");
    BAD(101, "'hello'", "content must be a JSON object");
    BAD(1400, "12", "content must be a JSON object");
    BAD(111, "null", "content must be a JSON object");
    BAD(112, "true", "content must be a JSON object");

    CHECK(ngx_http_im_content_check(101, NULL, err, sizeof(err)) == -1
          && strcmp(err,
                    "content must be a JSON object for contentType 101")
             == 0);

    /* exact texts */

    v = check_parse("{\"atUserList\":[]}");
    CHECK(v && ngx_http_im_content_check(106, v, err, sizeof(err)) == -1
          && strcmp(err,
                    "content field \"text\" is required for contentType 106")
             == 0);

    /* NULL err, and a short err buffer stays NUL-terminated */
    CHECK(v && ngx_http_im_content_check(106, v, NULL, 0) == -1);
    CHECK(v && ngx_http_im_content_check(106, v, err, 8) == -1
          && strcmp(err, "content") == 0);
    CHECK(ngx_http_im_content_check(999, v, NULL, 0) == -1);
    CHECK(ngx_http_im_content_check(999, v, err, 1) == -1 && err[0] == 0);
    yajl_tree_free(v);

    /* unknown members are ignored */
    OK(101, "{'text':'hi','foo':[1,{}],'bar':null}");
}


static void
test_text(void)
{
    OK(101, "{'content':'hello'}");
    OK(101, "{'text':'hello'}");
    OK(101, "{'content':'a','text':'b'}");
    OK(101, "{'content':'','text':'b'}");
    OK(101, "{'content':'a','text':''}");
    OK(101, "{'content':null,'text':'b'}");
    OK(101, "{'text':'\\u4f60\\u597d'}");

    BAD(101, "{}",
        "content field 'content' or 'text' is required for contentType 101");
    BAD(101, "{'content':null,'text':null}",
        "content field 'content' or 'text' is required");
    BAD(101, "{'content':''}",
        "content field 'content' or 'text' must not be empty");
    BAD(101, "{'content':'','text':''}", "must not be empty");
    BAD(101, "{'text':''}", "must not be empty");
    BAD(101, "{'content':1}",
        "content field 'content' must be a string for contentType 101");
    BAD(101, "{'text':true}", "content field 'text' must be a string");
    BAD(101, "{'text':['a']}", "content field 'text' must be a string");
    BAD(101, "{'content':'ok','text':5}",
        "content field 'text' must be a string");
}


static void
test_picture(void)
{
    OK(102, "{'sourcePicture':{'url':'http://x/a.jpg'}}");
    OK(102, "{'sourcePath':'/tmp/a.jpg',"
            "'sourcePicture':{'uuid':'u1','type':'jpg','size':1024,"
            "'width':640,'height':480,'url':'http://x/a.jpg'},"
            "'bigPicture':{'uuid':'u2','type':'jpg','size':2048,"
            "'width':1280,'height':960,'url':'http://x/b.jpg'},"
            "'snapshotPicture':{'size':10,'width':64,'height':48,"
            "'url':'http://x/s.jpg'}}");

    /* optional pictures may be empty */
    OK(102, "{'sourcePicture':{'url':'u'},'bigPicture':{'url':''},"
            "'snapshotPicture':{}}");
    OK(102, "{'sourcePicture':{'url':'u'},'bigPicture':null}");

    BAD(102, "{}",
        "content field 'sourcePicture' is required for contentType 102");
    BAD(102, "{'sourcePicture':null}", "'sourcePicture' is required");
    BAD(102, "{'sourcePicture':'http://x'}",
        "content field 'sourcePicture' must be an object");
    BAD(102, "{'sourcePicture':{}}",
        "content field 'sourcePicture.url' is required for contentType 102");
    BAD(102, "{'sourcePicture':{'url':''}}",
        "content field 'sourcePicture.url' must not be empty");
    BAD(102, "{'sourcePicture':{'url':7}}",
        "content field 'sourcePicture.url' must be a string");
    BAD(102, "{'sourcePicture':{'url':'u','size':'10'}}",
        "content field 'sourcePicture.size' must be an integer");
    BAD(102, "{'sourcePicture':{'url':'u','size':1.5}}",
        "'sourcePicture.size' must be an integer");
    BAD(102, "{'sourcePicture':{'url':'u','width':-1}}",
        "content field 'sourcePicture.width' must not be negative");
    BAD(102, "{'sourcePicture':{'url':'u','uuid':1}}",
        "'sourcePicture.uuid' must be a string");
    BAD(102, "{'sourcePicture':{'url':'u'},'bigPicture':'x'}",
        "content field 'bigPicture' must be an object");
    BAD(102, "{'sourcePicture':{'url':'u'},'bigPicture':{'height':'x'}}",
        "content field 'bigPicture.height' must be an integer");
    BAD(102, "{'sourcePicture':{'url':'u'},'snapshotPicture':{'url':1}}",
        "'snapshotPicture.url' must be a string");
    BAD(102, "{'sourcePath':3,'sourcePicture':{'url':'u'}}",
        "'sourcePath' must be a string");
}


static void
test_voice(void)
{
    OK(103, "{'sourceUrl':'http://x/a.amr','duration':5}");
    OK(103, "{'uuid':'u','soundPath':'/p','sourceUrl':'http://x/a.amr',"
            "'dataSize':2048,'duration':0,'soundType':'amr'}");

    BAD(103, "{'duration':5}",
        "content field 'sourceUrl' is required for contentType 103");
    BAD(103, "{'sourceUrl':'','duration':5}",
        "'sourceUrl' must not be empty");
    BAD(103, "{'sourceUrl':1,'duration':5}", "'sourceUrl' must be a string");
    BAD(103, "{'sourceUrl':'u'}",
        "content field 'duration' is required for contentType 103");
    BAD(103, "{'sourceUrl':'u','duration':'5'}",
        "content field 'duration' must be an integer");
    BAD(103, "{'sourceUrl':'u','duration':-1}",
        "'duration' must not be negative");
    BAD(103, "{'sourceUrl':'u','duration':1,'dataSize':'9'}",
        "'dataSize' must be an integer");
    BAD(103, "{'sourceUrl':'u','duration':1,'dataSize':-9}",
        "'dataSize' must not be negative");
}


static void
test_video(void)
{
    OK(104, "{'videoUrl':'http://x/v.mp4','duration':10}");
    OK(104, "{'videoPath':'/p','videoUUID':'v','videoUrl':'http://x/v.mp4',"
            "'videoType':'mp4','videoSize':100,'duration':10,"
            "'snapshotPath':'/s','snapshotUUID':'s','snapshotSize':5,"
            "'snapshotUrl':'http://x/s.jpg','snapshotWidth':64,"
            "'snapshotHeight':48,'snapshotType':'jpg'}");

    BAD(104, "{'duration':10}",
        "content field 'videoUrl' is required for contentType 104");
    BAD(104, "{'videoUrl':'','duration':10}",
        "'videoUrl' must not be empty");
    BAD(104, "{'videoUrl':'u'}",
        "content field 'duration' is required for contentType 104");
    BAD(104, "{'videoUrl':'u','duration':'10'}",
        "'duration' must be an integer");
    BAD(104, "{'videoUrl':'u','duration':10,'snapshotUrl':3}",
        "content field 'snapshotUrl' must be a string");
    BAD(104, "{'videoUrl':'u','duration':10,'snapshotWidth':'64'}",
        "'snapshotWidth' must be an integer");
    BAD(104, "{'videoUrl':'u','duration':10,'videoSize':-1}",
        "'videoSize' must not be negative");
}


static void
test_file(void)
{
    OK(105, "{'sourceUrl':'http://x/f.pdf','fileName':'f.pdf'}");
    OK(105, "{'filePath':'/p','uuid':'u','sourceUrl':'http://x/f.pdf',"
            "'fileName':'f.pdf','fileSize':12345,'fileType':'pdf'}");

    BAD(105, "{'fileName':'f'}",
        "content field 'sourceUrl' is required for contentType 105");
    BAD(105, "{'sourceUrl':'','fileName':'f'}",
        "'sourceUrl' must not be empty");
    BAD(105, "{'sourceUrl':'u'}",
        "content field 'fileName' is required for contentType 105");
    BAD(105, "{'sourceUrl':'u','fileName':''}",
        "'fileName' must not be empty");
    BAD(105, "{'sourceUrl':'u','fileName':5}",
        "'fileName' must be a string");
    BAD(105, "{'sourceUrl':'u','fileName':'f','fileSize':'1'}",
        "content field 'fileSize' must be an integer");
}


static void
test_at_text(void)
{
    size_t   i;
    char    *json, *p;

    OK(106, "{'text':'@bob hi','atUserList':['bob']}");
    OK(106, "{'text':'@all','atUserList':['AtAllTag'],"
            "'atUsersInfo':[{'atUserID':'AtAllTag','groupNickname':'all'}],"
            "'isAtSelf':false,'quoteMessage':{'clientMsgID':'c'}}");
    OK(106, "{'text':'hi','atUserList':[]}");

    BAD(106, "{'atUserList':['bob']}",
        "content field 'text' is required for contentType 106");
    BAD(106, "{'text':'','atUserList':['bob']}",
        "'text' must not be empty");
    BAD(106, "{'text':'hi'}",
        "content field 'atUserList' is required for contentType 106");
    BAD(106, "{'text':'hi','atUserList':'bob'}",
        "content field 'atUserList' must be an array");
    BAD(106, "{'text':'hi','atUserList':[1]}",
        "content field 'atUserList[0]' must be a string");
    BAD(106, "{'text':'hi','atUserList':['a','']}",
        "content field 'atUserList[1]' must not be empty");
    BAD(106, "{'text':'hi','atUserList':['a',null]}",
        "content field 'atUserList[1]' must not be null");
    BAD(106, "{'text':'hi','atUserList':['a'],'isAtSelf':'yes'}",
        "content field 'isAtSelf' must be a boolean");
    BAD(106, "{'text':'hi','atUserList':['a'],'atUsersInfo':['x']}",
        "content field 'atUsersInfo[0]' must be an object");
    BAD(106, "{'text':'hi','atUserList':['a'],'quoteMessage':[]}",
        "'quoteMessage' must be an object");

    /* at most NGX_HTTP_IM_CONTENT_MAX_AT entries */

    json = check_alloc(64 + 6 * (NGX_HTTP_IM_CONTENT_MAX_AT + 1));

    p = json + sprintf(json, "{'text':'hi','atUserList':[");

    for (i = 0; i < NGX_HTTP_IM_CONTENT_MAX_AT; i++) {
        p += sprintf(p, "%s'u%zu'", i ? "," : "", i % 100);
    }

    strcpy(p, "]}");
    OK(106, json);

    strcpy(p, ",'x']}");
    BAD(106, json, "content field 'atUserList' has too many entries");

    free(json);
}


static void
test_merger(void)
{
    OK(107, "{'title':'Chat history','multiMessage':[{'clientMsgID':'a'},"
            "{'clientMsgID':'b'}]}");
    OK(107, "{'title':'','abstractList':['a: hi','b: yo'],"
            "'multiMessage':[{}],'messageEntityList':[{}]}");

    BAD(107, "{'multiMessage':[{}]}",
        "content field 'title' is required for contentType 107");
    BAD(107, "{'title':1,'multiMessage':[{}]}",
        "content field 'title' must be a string");
    BAD(107, "{'title':'t'}",
        "content field 'multiMessage' is required for contentType 107");
    BAD(107, "{'title':'t','multiMessage':[]}",
        "content field 'multiMessage' must not be empty");
    BAD(107, "{'title':'t','multiMessage':{}}",
        "content field 'multiMessage' must be an array");
    BAD(107, "{'title':'t','multiMessage':[{},'x']}",
        "content field 'multiMessage[1]' must be an object");
    BAD(107, "{'title':'t','multiMessage':[null]}",
        "content field 'multiMessage[0]' must not be null");
    BAD(107, "{'title':'t','multiMessage':[{}],'abstractList':[1]}",
        "content field 'abstractList[0]' must be a string");
}


static void
test_card(void)
{
    OK(108, "{'userID':'u1'}");
    OK(108, "{'userID':'u1','nickname':'Bob','faceURL':'http://f','ex':''}");

    BAD(108, "{}", "content field 'userID' is required for contentType 108");
    BAD(108, "{'userID':''}", "'userID' must not be empty");
    BAD(108, "{'userID':42}", "'userID' must be a string");
    BAD(108, "{'userID':'u','nickname':1}", "'nickname' must be a string");
}


static void
test_location(void)
{
    OK(109, "{'longitude':116.397128,'latitude':39.916527}");
    OK(109, "{'longitude':116,'latitude':-39,'description':'Beijing'}");
    OK(109, "{'longitude':-180,'latitude':90}");
    OK(109, "{'longitude':180.0,'latitude':-90.0,'description':''}");
    OK(109, "{'longitude':0,'latitude':0}");
    OK(109, "{'longitude':1.5e1,'latitude':-2E-3}");

    BAD(109, "{'latitude':39.9}",
        "content field 'longitude' is required for contentType 109");
    BAD(109, "{'longitude':116.3}",
        "content field 'latitude' is required for contentType 109");
    BAD(109, "{'longitude':'116.3','latitude':39.9}",
        "content field 'longitude' must be a number");
    BAD(109, "{'longitude':116.3,'latitude':'39.9'}",
        "content field 'latitude' must be a number");
    BAD(109, "{'longitude':116.3,'latitude':true}",
        "'latitude' must be a number");
    BAD(109, "{'longitude':1e999,'latitude':0}",
        "'longitude' must be a number");
    BAD(109, "{'longitude':180.5,'latitude':0}",
        "content field 'longitude' must be in -180..180");
    BAD(109, "{'longitude':-181,'latitude':0}", "'longitude' must be in");
    BAD(109, "{'longitude':0,'latitude':90.01}",
        "content field 'latitude' must be in -90..90");
    BAD(109, "{'longitude':0,'latitude':-91}", "'latitude' must be in");
    BAD(109, "{'longitude':0,'latitude':0,'description':5}",
        "'description' must be a string");
}


static void
test_custom(void)
{
    OK(110, "{'data':'{\\'k\\':1}'}");
    OK(110, "{'data':'x','description':'d','extension':'e'}");

    BAD(110, "{}", "content field 'data' is required for contentType 110");
    BAD(110, "{'description':'d'}", "'data' is required");
    BAD(110, "{'data':''}", "content field 'data' must not be empty");
    BAD(110, "{'data':{'k':1}}", "content field 'data' must be a string");
    BAD(110, "{'data':1}", "'data' must be a string");
    BAD(110, "{'data':'x','description':1}",
        "'description' must be a string");
    BAD(110, "{'data':'x','extension':[]}", "'extension' must be a string");
}


static void
test_revoke_receipt(void)
{
    OK(111, "{}");
    OK(111, "{'revokeMsgClientID':'c1','anything':[1,2]}");
    OK(112, "{}");
    OK(112, "{'msgIDList':['a','b'],'x':1}");

    BAD(111, "[]", "content must be a JSON object for contentType 111");
    BAD(112, "'x'", "content must be a JSON object for contentType 112");
}


static void
test_quote(void)
{
    OK(114, "{'text':'agreed','quoteMessage':{'clientMsgID':'c',"
            "'contentType':101,'textElem':{'content':'hi'}}}");
    OK(114, "{'text':'ok','quoteMessage':{},'messageEntityList':[]}");

    BAD(114, "{'quoteMessage':{}}",
        "content field 'text' is required for contentType 114");
    BAD(114, "{'text':'','quoteMessage':{}}", "'text' must not be empty");
    BAD(114, "{'text':'ok'}",
        "content field 'quoteMessage' is required for contentType 114");
    BAD(114, "{'text':'ok','quoteMessage':'c1'}",
        "content field 'quoteMessage' must be an object");
    BAD(114, "{'text':'ok','quoteMessage':{},'messageEntityList':{}}",
        "'messageEntityList' must be an array");
}


/* the seed with another mixType must fail with "exp" (' for ") */

static int
seed_with_mix(int mix, const char *exp)
{
    int    ok;
    char  *s, *p;

    s = check_strdup(seed_content);

    p = strstr(s, "\"mixType\": 0");
    if (p == NULL) {
        free(s);
        return 0;
    }

    p[sizeof("\"mixType\": ") - 1] = (char) ('0' + mix);

    ok = text_is(1400, s, exp, "seed with another mixType");
    free(s);

    return ok;
}


static void
test_oa(void)
{
    char      err[NGX_HTTP_IM_CONTENT_ERRLEN];
    yajl_val  v;

    /* the seed, verbatim */

    v = check_parse(seed_content);
    CHECK(v != NULL);
    CHECK(v && ngx_http_im_content_check(1400, v, err, sizeof(err)) == 0);
    CHECK(v && check_is(1400, v, NULL, "seed"));
    yajl_tree_free(v);

    OK(1400, "{'notificationName':'HR','text':'Welcome aboard'}");
    OK(1400, "{'notificationName':'HR','text':'hi','mixType':0,"
            "'notificationType':7,'notificationFaceURL':'',"
            "'externalUrl':'http://oa/x','url':'','ex':'{}'}");

    /* attachments */

    OK(1400, "{'notificationName':'HR','text':'see picture','mixType':1,"
            "'pictureElem':{'sourcePicture':{'url':'http://x/p.png'}}}");
    OK(1400, "{'notificationName':'HR','text':'','mixType':1,"
            "'pictureElem':{'sourcePicture':{'url':'http://x/p.png'}}}");
    OK(1400, "{'notificationName':'HR','text':'video','mixType':2,"
            "'videoElem':{'videoUrl':'http://x/v.mp4'}}");
    OK(1400, "{'notificationName':'HR','text':'file','mixType':3,"
            "'fileElem':{'sourceUrl':'http://x/f.pdf'}}");

    BAD(1400, "{'notificationName':'HR','text':'x','mixType':1}",
        "content field 'pictureElem' is required for contentType 1400 "
        "mixType 1");
    BAD(1400, "{'notificationName':'HR','text':'x','mixType':1,"
              "'pictureElem':{}}",
        "content field 'pictureElem.sourcePicture' is required for "
        "contentType 1400 mixType 1");
    BAD(1400, "{'notificationName':'HR','text':'x','mixType':1,"
              "'pictureElem':{'sourcePicture':{'url':''}}}",
        "content field 'pictureElem.sourcePicture.url' must not be empty "
        "for contentType 1400 mixType 1");
    BAD(1400, "{'notificationName':'HR','text':'x','mixType':1,"
              "'videoElem':{'videoUrl':'http://x/v.mp4'}}",
        "'pictureElem' is required");
    BAD(1400, "{'notificationName':'HR','text':'x','mixType':2}",
        "content field 'videoElem' is required for contentType 1400 "
        "mixType 2");
    BAD(1400, "{'notificationName':'HR','text':'x','mixType':2,"
              "'videoElem':{'videoUrl':''}}",
        "content field 'videoElem.videoUrl' must not be empty");
    BAD(1400, "{'notificationName':'HR','text':'x','mixType':3}",
        "content field 'fileElem' is required for contentType 1400 "
        "mixType 3");
    BAD(1400, "{'notificationName':'HR','text':'x','mixType':3,"
              "'fileElem':{'fileName':'f'}}",
        "content field 'fileElem.sourceUrl' is required");

    /* the seed's empty elems with mixType 1..3 */
    CHECK(seed_with_mix(1, "'pictureElem.sourcePicture.url' must not be"));
    CHECK(seed_with_mix(2, "'videoElem.videoUrl' must not be empty"));
    CHECK(seed_with_mix(3, "'fileElem.sourceUrl' must not be empty"));

    /* mixType */

    BAD(1400, "{'notificationName':'HR','text':'x','mixType':4}",
        "content field 'mixType' must be 0..3 for contentType 1400");
    BAD(1400, "{'notificationName':'HR','text':'x','mixType':-1}",
        "'mixType' must be 0..3");
    BAD(1400, "{'notificationName':'HR','text':'x','mixType':'1'}",
        "content field 'mixType' must be an integer");
    BAD(1400, "{'notificationName':'HR','text':'x','mixType':1.0}",
        "'mixType' must be an integer");

    /* the notification itself */

    BAD(1400, "{'text':'x'}",
        "content field 'notificationName' is required for contentType 1400");
    BAD(1400, "{'notificationName':'','text':'x'}",
        "'notificationName' must not be empty");
    BAD(1400, "{'notificationName':1,'text':'x'}",
        "'notificationName' must be a string");
    BAD(1400, "{'notificationName':'HR'}",
        "content field 'text' is required for contentType 1400");
    BAD(1400, "{'notificationName':'HR','text':''}",
        "content field 'text' must not be empty for contentType 1400 "
        "mixType 0");
    BAD(1400, "{'notificationName':'HR','text':1}",
        "'text' must be a string");
    BAD(1400, "{'notificationName':'HR','text':'x','notificationType':'1'}",
        "content field 'notificationType' must be an integer");
    BAD(1400, "{'notificationName':'HR','text':'x','notificationFaceURL':1}",
        "'notificationFaceURL' must be a string");
    BAD(1400, "{'notificationName':'HR','text':'x','externalUrl':false}",
        "'externalUrl' must be a string");
    BAD(1400, "{'notificationName':'HR','text':'x','ex':{}}",
        "'ex' must be a string");
    BAD(1400, "{'notificationName':'HR','text':'x','url':2}",
        "'url' must be a string");

    /* elems not selected by mixType are still type-checked */

    BAD(1400, "{'notificationName':'HR','text':'x','pictureElem':'p'}",
        "content field 'pictureElem' must be an object");
    BAD(1400, "{'notificationName':'HR','text':'x',"
              "'pictureElem':{'sourcePicture':{'size':'0'}}}",
        "content field 'pictureElem.sourcePicture.size' must be an integer "
        "for contentType 1400");
    BAD(1400, "{'notificationName':'HR','text':'x',"
              "'soundElem':{'duration':'3'}}",
        "'soundElem.duration' must be an integer");
    BAD(1400, "{'notificationName':'HR','text':'x',"
              "'videoElem':{'videoUrl':5}}",
        "'videoElem.videoUrl' must be a string");
    BAD(1400, "{'notificationName':'HR','text':'x',"
              "'fileElem':{'fileSize':-1}}",
        "'fileElem.fileSize' must not be negative");
    OK(1400, "{'notificationName':'HR','text':'x','pictureElem':null,"
             "'soundElem':{},'videoElem':{},'fileElem':{}}");
}


int
main(void)
{
    test_known_and_titles();
    test_generic();
    test_text();
    test_picture();
    test_voice();
    test_video();
    test_file();
    test_at_text();
    test_merger();
    test_card();
    test_location();
    test_custom();
    test_revoke_receipt();
    test_quote();
    test_oa();

    return check_done();
}
