/* The spawn floor of benches/cgi.sh: how many spawn + read-stdout + wait cycles of one
 * program this machine does per second, with W parallel workers and no server at all.
 *
 *   spawnfloor PROGRAM [SECONDS=5] [WORKERS=2] [posix_spawn|vfork]
 *
 * Each worker (a thread) loops: pipe, posix_spawn PROGRAM with stdin </dev/null and
 * stdout into the pipe, read the pipe to EOF, waitpid. That is the least any CGI server
 * must do per request. Prints "spawns/s N" on stdout.
 *
 * With `vfork`, the child is made by vfork(2) and does its own open, dup2 and execve:
 * posix_spawn less its per-child stack mapping, signal handling and file-action checks,
 * about the least a start can cost, so its rate estimates the most a server that execs
 * per request can do here. A program that cannot be run is an error (exit 1). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;
static const char *prog;
static double seconds = 5;
static int use_vfork = 0;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void *worker(void *arg) {
    long *count = arg;
    char *argv[] = {(char *)prog, NULL};
    char buf[4096];
    double end = now() + seconds;
    while (now() < end) {
        int p[2];
        if (pipe2(p, O_CLOEXEC) != 0) { perror("pipe2"); exit(1); }
        pid_t pid = -1;
        int rc;
        if (use_vfork) {
            volatile int child_errno = 0;
            pid = vfork();
            if (pid == 0) {
                /* O_CLOEXEC: the program gets it as fd 0 only, as with posix_spawn. */
                int null = open("/dev/null", O_RDONLY | O_CLOEXEC);
                if (null < 0 || dup2(null, 0) < 0 || dup2(p[1], 1) < 0) {
                    child_errno = errno;
                    _exit(127);
                }
                execve(prog, argv, environ);
                child_errno = errno; /* shared memory: the parent reads it below */
                _exit(127);
            }
            rc = pid < 0 ? errno : child_errno;
        } else {
            posix_spawn_file_actions_t fa;
            posix_spawn_file_actions_init(&fa);
            posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
            posix_spawn_file_actions_adddup2(&fa, p[1], 1);
            rc = posix_spawn(&pid, prog, &fa, NULL, argv, environ);
            posix_spawn_file_actions_destroy(&fa);
        }
        close(p[1]);
        if (rc != 0) {
            errno = rc;
            perror("spawn");
            if (pid > 0) waitpid(pid, NULL, 0);
            exit(1);
        }
        while (read(p[0], buf, sizeof buf) > 0) {}
        close(p[0]);
        int st;
        while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {}
        (*count)++;
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 2) { fprintf(stderr, "usage: spawnfloor PROGRAM [SECONDS] [WORKERS] [posix_spawn|vfork]\n"); return 2; }
    prog = argv[1];
    if (argc > 2) seconds = atof(argv[2]);
    int workers = argc > 3 ? atoi(argv[3]) : 2;
    if (workers < 1 || workers > 64) workers = 2;
    if (argc > 4) {
        if (strcmp(argv[4], "vfork") == 0) use_vfork = 1;
        else if (strcmp(argv[4], "posix_spawn") != 0) {
            fprintf(stderr, "spawnfloor: unknown spawn method %s\n", argv[4]);
            return 2;
        }
    }
    pthread_t t[64];
    long counts[64] = {0};
    double start = now();
    for (int i = 0; i < workers; i++) pthread_create(&t[i], NULL, worker, &counts[i]);
    long total = 0;
    for (int i = 0; i < workers; i++) { pthread_join(t[i], NULL); total += counts[i]; }
    printf("spawns/s %.0f\n", total / (now() - start));
    return 0;
}
