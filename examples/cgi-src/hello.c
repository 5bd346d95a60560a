/* A compiled CGI program; build.rs compiles it into examples/cgi-bin/hello-c.cgi. */
#include <stdio.h>
#include <stdlib.h>

static const char *env(const char *name) {
    const char *v = getenv(name);
    return v ? v : "";
}

int main(void) {
    printf("Content-Type: text/plain; charset=utf-8\r\n\r\n");
    printf("Hello from C, run by portico.\n");
    printf("REQUEST_METHOD=%s\n", env("REQUEST_METHOD"));
    printf("SCRIPT_NAME=%s\n", env("SCRIPT_NAME"));
    printf("PATH_INFO=%s\n", env("PATH_INFO"));
    printf("QUERY_STRING=%s\n", env("QUERY_STRING"));
    return 0;
}
