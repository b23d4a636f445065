#ifndef SMP_SERVER_H
#define SMP_SERVER_H
#include <stdint.h>

struct smp_server_config {
    uint8_t factory_major, factory_minor; /* version of the image installed on a blank device */
    uint16_t factory_revision;
    uint16_t buf_size;  /* largest SMP packet accepted (header + CBOR), at most SMP_BUF_SIZE; 0 = SMP_BUF_SIZE */
    uint8_t buf_count;  /* requests the transport can hold while one is processed; 0 = 2 */
};

/* MCUboot's part: runs once per (emulated) power-on or reset, before the app. */
void smp_server_boot(const struct smp_server_config *config);
/* The app's SMP transport: feed every received UART byte. */
void smp_server_rx(uint8_t byte);
/* A line of plain log output on the same UART, as a real app prints (clients must skip it). */
void smp_log(const char *a, const char *b);

#endif
