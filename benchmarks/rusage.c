/*
 * rusage.c: run a command and report what it cost, like a minimal GNU time.
 *
 *   rusage OUT CMD [ARG...]
 *
 * Forks, execs CMD, waits for it with wait4() and writes one JSON line to
 * the file OUT: {"status": S, "wall_ns": N, "utime_us": U, "stime_us": T,
 * "maxrss_kib": M, "self_utime_us": SU, "self_stime_us": ST}. S is the exit
 * status, or 128 + the signal number.
 *
 * Why a launcher: Linux records, at exec, the peak resident set of the
 * address space being replaced into the new process's maxrss. A command
 * forked straight from the (large) Python suite would therefore report the
 * suite's own peak; forked from this small program it reports its own.
 * wait4() covers the command and every descendant it waited for, so CPU
 * time and maxrss include pt-engine's forked capture processes.
 *
 * self_utime_us / self_stime_us are CMD's own process alone (all its threads,
 * none of its children: pt-engine's aggregator without its capture
 * processes). They are read from /proc/PID/stat (fields utime and stime, in
 * clock ticks: 10 ms steps at the usual USER_HZ of 100) while CMD is a
 * zombie: waitid(WNOWAIT) reports the exit without reaping, the figures are
 * read, then wait4() reaps. -1 when they cannot be read (no /proc). What its
 * descendants used is the difference to utime_us / stime_us.
 *
 * SIGINT and SIGTERM are passed on to CMD, so signalling this process
 * stops the command gracefully and still reports its cost.
 *
 * Exit status: that of CMD; 127 when CMD cannot be started, 2 on bad usage.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
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

/* utime and stime (fields 14 and 15 of /proc/PID/stat) of one process, in
 * microseconds; -1 each when unreadable. The command name (field 2) is in
 * parentheses and may hold spaces or ')', so fields are counted from the
 * last ')'. */
static void self_times(pid_t pid, long long *utime_us, long long *stime_us)
{
    char path[64], buf[4096], *p;
    unsigned long long ut, st;
    long ticks = sysconf(_SC_CLK_TCK);
    size_t n;
    FILE *f;

    *utime_us = *stime_us = -1;
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    f = fopen(path, "r");
    if (f == NULL)
        return;
    n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    p = strrchr(buf, ')');
    if (p == NULL || ticks <= 0)
        return;
    /* after ")": state ppid pgrp session tty_nr tpgid flags minflt cminflt majflt
     * cmajflt utime stime */
    if (sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
        return;
    *utime_us = (long long)(ut * 1000000ULL / (unsigned long long)ticks);
    *stime_us = (long long)(st * 1000000ULL / (unsigned long long)ticks);
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
    siginfo_t info;
    long long started, wall, self_ut = -1, self_st = -1;
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
    /* Exited, not yet reaped: its own times are still in /proc. */
    for (;;) {
        memset(&info, 0, sizeof info);
        if (waitid(P_PID, pid, &info, WEXITED | WNOWAIT) == 0) {
            self_times(pid, &self_ut, &self_st);
            break;
        }
        if (errno != EINTR)
            break;
    }
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
            "\"maxrss_kib\": %ld, \"self_utime_us\": %lld, \"self_stime_us\": %lld}\n",
            code, wall,
            (long long)ru.ru_utime.tv_sec * 1000000 + ru.ru_utime.tv_usec,
            (long long)ru.ru_stime.tv_sec * 1000000 + ru.ru_stime.tv_usec, ru.ru_maxrss,
            self_ut, self_st);
    fclose(out);
    return code;
}
