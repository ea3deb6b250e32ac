/* Test-only tool of scripts/test-vm-arm64 (never on a real Pi), built
 * static for arm64 and run as root in the guest through the agent:
 *
 *   wardgate-vm-tool ntp-state            prints "synced" or "unsynced" as
 *                                         adjtimex(2) says (what wardgate reads)
 *   wardgate-vm-tool clock-step MS        steps the wall clock by MS ms (a
 *                                         wrong clock, as fake-hwclock leaves a
 *                                         Pi after a long time off); the
 *                                         kernel marks it unsynchronised
 *   wardgate-vm-tool ntp-sync [MS]        steps the wall clock by MS ms (0 if
 *                                         not given) and marks it synchronised,
 *                                         as an NTP daemon does once it has
 *                                         locked on: STA_UNSYNC cleared, the
 *                                         maximum error small (else the
 *                                         kernel sets STA_UNSYNC again within
 *                                         a second)
 *   wardgate-vm-tool led DIR MS           samples DIR/brightness every 2 ms
 *                                         for MS ms; prints "T V" at the start
 *                                         and at every change (T: ms since
 *                                         the start, V: the value read)
 *
 * The guest has no Python; a shell loop is too slow under emulation to see
 * a 50 ms blink. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/timex.h>
#include <time.h>
#include <unistd.h>

static long long now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int ntp_state(void) {
    struct timex tx;
    memset(&tx, 0, sizeof tx);
    int rc = adjtimex(&tx);
    if (rc == -1) {
        perror("adjtimex");
        return 1;
    }
    printf("%s\n", (rc == TIME_ERROR || (tx.status & STA_UNSYNC)) ? "unsynced" : "synced");
    return 0;
}

static int clock_step(long long ms) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    long long ns = (long long)ts.tv_nsec + (ms % 1000) * 1000000LL;
    ts.tv_sec += ms / 1000 + ns / 1000000000LL;
    ns %= 1000000000LL;
    if (ns < 0) {
        ns += 1000000000LL;
        ts.tv_sec -= 1;
    }
    ts.tv_nsec = ns;
    if (clock_settime(CLOCK_REALTIME, &ts) == -1) {
        perror("clock_settime");
        return 1;
    }
    return 0;
}

static int ntp_sync(long long step_ms) {
    if (step_ms != 0 && clock_step(step_ms) != 0)
        return 1;
    struct timex tx;
    memset(&tx, 0, sizeof tx);
    tx.modes = ADJ_STATUS | ADJ_MAXERROR | ADJ_ESTERROR;
    tx.status = 0; /* STA_UNSYNC cleared */
    tx.maxerror = 1000; /* us; grows 500 us/s: hours before 16 s */
    tx.esterror = 1000;
    if (adjtimex(&tx) == -1) {
        perror("adjtimex");
        return 1;
    }
    return ntp_state();
}

static int led(const char *dir, long ms) {
    char path[512];
    snprintf(path, sizeof path, "%s/brightness", dir);
    long long t0 = now_ms();
    char last[32] = "";
    struct timespec tick = {0, 2 * 1000 * 1000};
    while (now_ms() - t0 < ms) {
        int fd = open(path, O_RDONLY);
        if (fd < 0) {
            printf("%lld error %s\n", now_ms() - t0, strerror(errno));
            return 1;
        }
        char buf[32];
        ssize_t n = read(fd, buf, sizeof buf - 1);
        close(fd);
        if (n < 0)
            n = 0;
        buf[n] = 0;
        buf[strcspn(buf, "\n")] = 0;
        if (strcmp(buf, last) != 0) {
            printf("%lld %s\n", now_ms() - t0, buf);
            strcpy(last, buf);
        }
        nanosleep(&tick, NULL);
    }
    printf("%lld end\n", now_ms() - t0);
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 2 && strcmp(argv[1], "ntp-state") == 0)
        return ntp_state();
    if ((argc == 2 || argc == 3) && strcmp(argv[1], "ntp-sync") == 0)
        return ntp_sync(argc == 3 ? atoll(argv[2]) : 0);
    if (argc == 3 && strcmp(argv[1], "clock-step") == 0)
        return clock_step(atoll(argv[2])) == 0 ? ntp_state() : 1;
    if (argc == 4 && strcmp(argv[1], "led") == 0)
        return led(argv[2], atol(argv[3]));
    fprintf(stderr, "usage: %s ntp-state | clock-step MS | ntp-sync [MS] | led DIR MS\n", argv[0]);
    return 2;
}
