/*
 * Host port: the SMP server on a pseudo-terminal (or any tty path), with both slots in a file mapped into
 * memory. Reset re-executes the program image (execv of /proc/self/exe), so everything in RAM is gone and the
 * boot decision runs again from the file, exactly as an MCU comes back from a reset with only its flash.
 * The tty stays open across the exec (its fd is inherited), so the other end of the pty never sees a hangup.
 */
#define _GNU_SOURCE
#include "../../core/port.h"
#include "../../core/smp_server.h"
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

static int tty = -1;
static struct persist *persist;
static char **saved_argv;
static const char *port_path;
static unsigned erase_ms;

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void make_raw(int fd)
{
    struct termios t;
    if (tcgetattr(fd, &t) == 0) {
        cfmakeraw(&t);
        tcsetattr(fd, TCSANOW, &t);
    }
}

/* Opens the port path, retrying while it is absent: the cable is out or the pty is being recreated. */
static void open_port(void)
{
    for (;;) {
        tty = open(port_path, O_RDWR | O_NOCTTY);
        if (tty >= 0) break;
        sleep_ms(50);
    }
    make_raw(tty);
}

void port_write(const uint8_t *data, size_t len)
{
    while (len) {
        ssize_t n = write(tty, data, len);
        if (n < 0) {
            if (errno == EINTR || errno == EAGAIN) continue;
            return; /* the line is gone; the client will retry after it comes back */
        }
        data += n;
        len -= (size_t)n;
    }
}

void port_flush(void) { tcdrain(tty); }

struct persist *port_persist(void) { return persist; }

void port_persist_sync(void) { msync(persist, sizeof *persist, MS_SYNC); }

void port_erase_delay(void)
{
    if (erase_ms) sleep_ms(erase_ms);
}

void port_reset(void)
{
    char fdarg[16];
    snprintf(fdarg, sizeof fdarg, "%d", tty);
    setenv("SMP_SAMPLE_TTY_FD", fdarg, 1);
    execv("/proc/self/exe", saved_argv);
    perror("execv");
    _exit(1);
}

static void usage(const char *self)
{
    fprintf(stderr, "usage: %s --port PATH --storage FILE [--factory-version X.Y.Z] [--erase-ms N] [--buf-size N] [--buf-count N]\n", self);
    exit(2);
}

int main(int argc, char **argv)
{
    saved_argv = argv;
    const char *storage = NULL;
    struct smp_server_config config = {1, 0, 0, 0, 0};
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--port") && i + 1 < argc) port_path = argv[++i];
        else if (!strcmp(argv[i], "--storage") && i + 1 < argc) storage = argv[++i];
        else if (!strcmp(argv[i], "--erase-ms") && i + 1 < argc) erase_ms = (unsigned)atoi(argv[++i]);
        else if (!strcmp(argv[i], "--buf-size") && i + 1 < argc) config.buf_size = (uint16_t)atoi(argv[++i]);
        else if (!strcmp(argv[i], "--buf-count") && i + 1 < argc) config.buf_count = (uint8_t)atoi(argv[++i]);
        else if (!strcmp(argv[i], "--factory-version") && i + 1 < argc) {
            unsigned a = 1, b = 0, c = 0;
            if (sscanf(argv[++i], "%u.%u.%u", &a, &b, &c) < 1) usage(argv[0]);
            config.factory_major = (uint8_t)a;
            config.factory_minor = (uint8_t)b;
            config.factory_revision = (uint16_t)c;
        } else usage(argv[0]);
    }
    if (!port_path || !storage) usage(argv[0]);

    int fd = open(storage, O_RDWR | O_CREAT, 0600);
    if (fd < 0 || ftruncate(fd, (off_t)sizeof(struct persist)) != 0) {
        perror(storage);
        return 1;
    }
    persist = mmap(NULL, sizeof(struct persist), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (persist == MAP_FAILED) {
        perror("mmap");
        return 1;
    }
    close(fd);

    const char *inherited = getenv("SMP_SAMPLE_TTY_FD");
    if (inherited) {
        tty = atoi(inherited);
        unsetenv("SMP_SAMPLE_TTY_FD");
    } else {
        open_port();
    }

    smp_server_boot(&config);
    uint8_t buf[512];
    for (;;) {
        ssize_t n = read(tty, buf, sizeof buf);
        if (n > 0) {
            for (ssize_t i = 0; i < n; i++) smp_server_rx(buf[i]);
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else {
            /* EOF or EIO: the other end went away (cable pulled). Wait for the path to come back. */
            close(tty);
            sleep_ms(50);
            open_port();
        }
    }
}
