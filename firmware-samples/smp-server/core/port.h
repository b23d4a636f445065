#ifndef PORT_H
#define PORT_H
/* What a port (host pty, QEMU board) provides to the portable SMP server. */
#include <stddef.h>
#include <stdint.h>

#ifndef SLOT_SIZE
#define SLOT_SIZE (512u * 1024u)
#endif
#ifndef SMP_BUF_SIZE
#define SMP_BUF_SIZE 2048u
#endif

#define PERSIST_MAGIC 0x534d5031u /* "SMP1" */

/* What a real MCU keeps in flash: both slots and MCUboot's trailer flags. */
struct persist {
    uint32_t magic;
    uint32_t boot_count;
    uint8_t pending;   /* secondary marked for a swap at the next boot */
    uint8_t permanent; /* ... and for keeping it without a trial */
    uint8_t trial;     /* primary was swapped in on trial: revert at the next boot unless confirmed */
    uint8_t reserved;
    uint8_t slot[2][SLOT_SIZE];
};

void port_write(const uint8_t *data, size_t len);
/* Blocks until everything written has left the UART, so a reply is out before a reset. */
void port_flush(void);
struct persist *port_persist(void);
void port_persist_sync(void);
/* A slot erase on flash takes time; ports may simulate it to exercise the client's first-chunk timeout. */
void port_erase_delay(void);
__attribute__((noreturn)) void port_reset(void);

#endif
