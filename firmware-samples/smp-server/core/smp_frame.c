#include "smp_frame.h"
#include "port.h"
#include <string.h>

static const char B64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

uint16_t crc16_xmodem(const uint8_t *data, size_t len, uint16_t crc)
{
    for (size_t i = 0; i < len; i++) {
        crc ^= (uint16_t)(data[i] << 8);
        for (int b = 0; b < 8; b++) crc = (crc & 0x8000) ? (uint16_t)((crc << 1) ^ 0x1021) : (uint16_t)(crc << 1);
    }
    return crc;
}

static int b64_value(uint8_t c)
{
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

/* Decodes one line's base64 (a multiple of 4 characters) into out; returns bytes or -1. */
static long b64_decode(const uint8_t *in, size_t len, uint8_t *out, size_t cap)
{
    if (len % 4) return -1;
    size_t n = 0;
    for (size_t i = 0; i < len; i += 4) {
        int v[4];
        int pad = 0;
        for (int j = 0; j < 4; j++) {
            if (in[i + j] == '=' && i + 4 == len && j >= 2) { v[j] = 0; pad++; continue; }
            if (pad) return -1;
            v[j] = b64_value(in[i + j]);
            if (v[j] < 0) return -1;
        }
        uint32_t triple = (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 | (uint32_t)v[2] << 6 | (uint32_t)v[3];
        for (int j = 0; j < 3 - pad; j++) {
            if (n >= cap) return -1;
            out[n++] = (uint8_t)(triple >> (16 - 8 * j));
        }
    }
    return (long)n;
}

void smp_rx_init(smp_rx *rx, uint8_t *frame_buf, size_t cap)
{
    memset(rx, 0, sizeof *rx);
    rx->frame = frame_buf;
    rx->frame_cap = cap;
}

static size_t on_line(smp_rx *rx, const uint8_t **packet)
{
    size_t len = rx->line_len;
    const uint8_t *l = rx->line;
    if (len && l[len - 1] == '\r') len--;
    if (len < 2) return 0;
    bool start = l[0] == 0x06 && l[1] == 0x09;
    bool cont = l[0] == 0x04 && l[1] == 0x14;
    if (!start && !cont) return 0;
    if (cont && !rx->active) return 0;
    if (start) {
        rx->active = true;
        rx->frame_len = 0;
        rx->expected = 0;
    }
    long n = b64_decode(l + 2, len - 2, rx->frame + rx->frame_len, rx->frame_cap - rx->frame_len);
    if (n < 0) {
        rx->active = false;
        return 0;
    }
    rx->frame_len += (size_t)n;
    if (start) {
        if (rx->frame_len < 2) { rx->active = false; return 0; }
        rx->expected = (size_t)rx->frame[0] << 8 | rx->frame[1];
        if (rx->expected < 2 || rx->expected + 2 > rx->frame_cap) { rx->active = false; return 0; }
    }
    if (rx->frame_len < rx->expected + 2) return 0;
    rx->active = false;
    if (rx->frame_len != rx->expected + 2) return 0;
    size_t plen = rx->expected - 2;
    uint16_t crc = (uint16_t)(rx->frame[2 + plen] << 8 | rx->frame[3 + plen]);
    if (crc16_xmodem(rx->frame + 2, plen, 0) != crc) return 0;
    *packet = rx->frame + 2;
    return plen;
}

size_t smp_rx_byte(smp_rx *rx, uint8_t byte, const uint8_t **packet)
{
    if (byte != '\n') {
        if (rx->line_len < SMP_RX_LINE_CAP) rx->line[rx->line_len++] = byte;
        else rx->line_overflow = true;
        return 0;
    }
    size_t n = rx->line_overflow ? 0 : on_line(rx, packet);
    if (rx->line_overflow) rx->active = false;
    rx->line_len = 0;
    rx->line_overflow = false;
    return n;
}

void smp_tx_packet(const uint8_t *packet, size_t len)
{
    /* Raw bytes are streamed through a 93-byte window: 124 base64 characters, a marker and a newline. */
    uint8_t head[2] = {(uint8_t)((len + 2) >> 8), (uint8_t)(len + 2)};
    uint16_t crc = crc16_xmodem(packet, len, 0);
    uint8_t tail[2] = {(uint8_t)(crc >> 8), (uint8_t)crc};
    size_t total = len + 4;
    uint8_t raw[93];
    uint8_t out[SMP_LINE_MAX];
    for (size_t off = 0; off < total;) {
        size_t n = 0;
        while (n < sizeof raw && off < total) {
            raw[n++] = off < 2 ? head[off] : off < 2 + len ? packet[off - 2] : tail[off - 2 - len];
            off++;
        }
        size_t o = 0;
        int first = off <= sizeof raw;
        out[o++] = first ? 0x06 : 0x04;
        out[o++] = first ? 0x09 : 0x14;
        for (size_t i = 0; i < n; i += 3) {
            uint32_t t = (uint32_t)raw[i] << 16 | (i + 1 < n ? (uint32_t)raw[i + 1] << 8 : 0) | (i + 2 < n ? raw[i + 2] : 0);
            out[o++] = (uint8_t)B64[(t >> 18) & 63];
            out[o++] = (uint8_t)B64[(t >> 12) & 63];
            out[o++] = i + 1 < n ? (uint8_t)B64[(t >> 6) & 63] : '=';
            out[o++] = i + 2 < n ? (uint8_t)B64[t & 63] : '=';
        }
        out[o++] = '\n';
        port_write(out, o);
    }
}
