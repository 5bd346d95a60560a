/* The FastCGI floor of benches/fastcgi.sh: a libfcgi responder answering every request
 * with the same head and "hello\n" as benches/src/tiny.c, in-process.
 * Run it under spawn-fcgi (it accepts on fd 0). libfcgi honours FCGI_KEEP_CONN:
 * with nginx `fastcgi_keep_conn on` a process serves one kept connection at a time. */
#include <fcgiapp.h>

int main(void) {
    static const char out[] = "Content-Type: text/plain\r\n\r\nhello\n";
    FCGX_Request req;
    FCGX_Init();
    FCGX_InitRequest(&req, 0, 0);
    while (FCGX_Accept_r(&req) >= 0) {
        FCGX_PutStr(out, sizeof out - 1, req.out);
        FCGX_Finish_r(&req);
    }
    return 0;
}
