/*
 * Preloaded into nginx by `./build.sh asan`, after libasan and before
 * libubsan (so that libubsan finds our __ubsan_default_options(), not its
 * own weak one): makes UBSAN_OPTIONS work in nginx's processes.  Two
 * things stand in the way without it:
 *
 * - UBSan parses UBSAN_OPTIONS lazily, at its first report, and takes the
 *   environment from /proc/self/environ.  In an nginx worker that area has
 *   been overwritten by the process title (ngx_setproctitle), so a report
 *   there would lose every option: no stack trace, and exit code 1 (only
 *   a [notice] in the master's log) instead of abort().  We copy
 *   UBSAN_OPTIONS at start, while the environment is intact, and hand it
 *   to UBSan through its documented hook, __ubsan_default_options().
 *
 * - UBSan applies log_path by calling __sanitizer_set_report_path(), and
 *   with libasan loaded first that call binds to ASan's copy of the
 *   function: UBSan's own reports stay on stderr.  We call libubsan's own
 *   copy (looked up in libubsan itself) with the log_path of
 *   UBSAN_OPTIONS, so reports go to <log_path>.<pid> like ASan's.
 */

#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>

static char options[2048];

const char *
__ubsan_default_options(void)
{
    return options;
}

__attribute__((constructor)) static void
im_ubsan_setup(void)
{
    const char *s, *p;
    char path[1024];
    size_t n;
    void *ubsan;
    void (*set_report_path)(const char *);

    s = getenv("UBSAN_OPTIONS");
    if (s == NULL) {
        return;
    }
    strncpy(options, s, sizeof(options) - 1);

    for (p = options; (p = strstr(p, "log_path=")) != NULL; p++) {
        if (p == options || p[-1] == ':') {
            break;
        }
    }
    if (p == NULL) {
        return;
    }
    p += sizeof("log_path=") - 1;
    n = strcspn(p, ":");
    if (n == 0 || n >= sizeof(path)) {
        return;
    }
    memcpy(path, p, n);
    path[n] = '\0';

    ubsan = dlopen("libubsan.so.1", RTLD_NOW | RTLD_NOLOAD);
    if (ubsan == NULL) {
        return;
    }
    set_report_path = (void (*)(const char *))
                      dlsym(ubsan, "__sanitizer_set_report_path");
    if (set_report_path != NULL) {
        set_report_path(path);
    }
}
