/* slowfsync: an LD_PRELOAD shim that makes every fsync slow, as on a cheap
 * SD card. fsync, fdatasync, syncfs, sync_file_range and msync(MS_SYNC)
 * sleep WARDGATE_FSYNC_DELAY_MS milliseconds (default 250), then call the
 * real function (found with dlsym(RTLD_NEXT)).
 *
 * Built on demand by the fault suite (tests/faults/scenarios/slow_fsync.rs)
 * and benches/pipeline.rs:
 *   gcc -shared -fPIC -O2 -o target/slowfsync.so scripts/lib/slowfsync.c -ldl
 * Used as: LD_PRELOAD=target/slowfsync.so WARDGATE_FSYNC_DELAY_MS=250 wardgate run
 *
 * The bundled SQLite calls fsync/fdatasync through libc, so this catches
 * every commit it makes. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/types.h>
#include <time.h>

static long delay_ms(void) {
    static long cached = -1;
    if (cached < 0) {
        const char *v = getenv("WARDGATE_FSYNC_DELAY_MS");
        char *end = NULL;
        long d = v ? strtol(v, &end, 10) : 250;
        if (!v || end == v || d < 0)
            d = 250;
        cached = d;
    }
    return cached;
}

static void slow(void) {
    long ms = delay_ms();
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    int saved = errno;
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
    errno = saved;
}

#define REAL(name, ret, args) \
    static ret(*real)args = NULL; \
    if (!real) \
        real = (ret(*)args)dlsym(RTLD_NEXT, name)

int fsync(int fd) {
    REAL("fsync", int, (int));
    slow();
    return real ? real(fd) : 0;
}

int fdatasync(int fd) {
    REAL("fdatasync", int, (int));
    slow();
    return real ? real(fd) : 0;
}

int syncfs(int fd) {
    REAL("syncfs", int, (int));
    slow();
    return real ? real(fd) : 0;
}

int sync_file_range(int fd, off64_t off, off64_t n, unsigned int flags) {
    REAL("sync_file_range", int, (int, off64_t, off64_t, unsigned int));
    slow();
    return real ? real(fd, off, n, flags) : 0;
}

int msync(void *addr, size_t len, int flags) {
    REAL("msync", int, (void *, size_t, int));
    if (flags & MS_SYNC)
        slow();
    return real ? real(addr, len, flags) : 0;
}
