/* The tiny CGI program of benches/cgi.sh and benches/fastcgi.sh: a fixed head and
 * "hello\n", nothing read, nothing else done. */
#include <unistd.h>

int main(void) {
    static const char out[] = "Content-Type: text/plain\r\n\r\nhello\n";
    return write(1, out, sizeof out - 1) == (ssize_t)(sizeof out - 1) ? 0 : 1;
}
