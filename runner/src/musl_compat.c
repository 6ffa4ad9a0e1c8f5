/* Linked into the static (musl) build only (runner/build.rs).
 *
 * Debian's libseccomp.a was compiled against glibc with _FORTIFY_SOURCE, so its text exporter calls
 * glibc's checked fprintf, __fprintf_chk, which musl does not have. hybox never calls that exporter
 * (seccomp_export_pfc), but the object that holds it is linked. This is the checked call without the
 * check, as glibc itself behaves at flag 0: the format string is libseccomp's own, never input. */
#include <stdarg.h>
#include <stdio.h>

int __fprintf_chk(FILE *stream, int flag, const char *format, ...) {
    (void)flag;
    va_list ap;
    va_start(ap, format);
    int n = vfprintf(stream, format, ap);
    va_end(ap);
    return n;
}
