/*
 * rusage.c: run a command and report what it cost, like a minimal GNU time.
 *
 *   rusage OUT CMD [ARG...]
 *
 * Forks, execs CMD, waits for it with wait4() and writes one JSON line to
 * the file OUT: {"status": S, "wall_ns": N, "utime_us": U, "stime_us": T,
 * "maxrss_kib": M}. S is the exit status, or 128 + the signal number.
 *
 * Why a launcher: Linux records, at exec, the peak resident set of the
 * address space being replaced into the new process's maxrss. A command
 * forked straight from the (large) Python suite would therefore report the
 * suite's own peak; forked from this small program it reports its own.
 * wait4() covers the command and every descendant it waited for, so CPU
 * time and maxrss include pt-engine's forked capture processes.
 *
 * SIGINT and SIGTERM are passed on to CMD, so signalling this process
 * stops the command gracefully and still reports its cost.
 *
 * Exit status: that of CMD; 127 when CMD cannot be started, 2 on bad usage.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static volatile pid_t child;

static void forward(int sig)
{
    if (child > 0)
        kill(child, sig);
}

static long long now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int main(int argc, char **argv)
{
    struct rusage ru;
    struct sigaction sa;
    long long started, wall;
    int status, code;
    pid_t pid;
    FILE *out;

    if (argc < 3) {
        fprintf(stderr, "usage: %s OUT CMD [ARG...]\n", argv[0]);
        return 2;
    }
    started = now_ns();
    pid = fork();
    if (pid < 0) {
        perror("rusage: fork");
        return 127;
    }
    if (pid == 0) {
        execvp(argv[2], argv + 2);
        fprintf(stderr, "rusage: %s: %s\n", argv[2], strerror(errno));
        _exit(127);
    }
    child = pid;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = forward;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    while (wait4(pid, &status, 0, &ru) < 0) {
        if (errno != EINTR) {
            perror("rusage: wait4");
            return 127;
        }
    }
    wall = now_ns() - started;
    code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    out = fopen(argv[1], "w");
    if (out == NULL) {
        perror(argv[1]);
        return 127;
    }
    fprintf(out, "{\"status\": %d, \"wall_ns\": %lld, \"utime_us\": %lld, \"stime_us\": %lld, "
            "\"maxrss_kib\": %ld}\n", code, wall,
            (long long)ru.ru_utime.tv_sec * 1000000 + ru.ru_utime.tv_usec,
            (long long)ru.ru_stime.tv_sec * 1000000 + ru.ru_stime.tv_usec, ru.ru_maxrss);
    fclose(out);
    return code;
}
