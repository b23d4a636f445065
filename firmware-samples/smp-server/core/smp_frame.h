#ifndef SMP_FRAME_H
#define SMP_FRAME_H
/* SMP console transport: 06 09 / 04 14 lines of base64(len | packet | crc16-xmodem), at most 127 bytes. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SMP_LINE_MAX 127u
#define SMP_RX_LINE_CAP 256u

typedef struct {
    uint8_t line[SMP_RX_LINE_CAP];
    size_t line_len;
    bool line_overflow;
    uint8_t *frame; /* len(2) | packet | crc(2) */
    size_t frame_cap;
    size_t frame_len;
    size_t expected;
    bool active;
} smp_rx;

uint16_t crc16_xmodem(const uint8_t *data, size_t len, uint16_t crc);
void smp_rx_init(smp_rx *rx, uint8_t *frame_buf, size_t cap);
/* Feeds one byte; returns the length of a complete, CRC-checked packet (then *packet points at it), else 0. */
size_t smp_rx_byte(smp_rx *rx, uint8_t byte, const uint8_t **packet);
void smp_tx_packet(const uint8_t *packet, size_t len);

#endif
